"""ComfyUI's own ``main.py --cpu`` in a subprocess, with the pack installed, and a tiny HTTP client.

The server gets its own base directory (custom_nodes with the pack linked in, models,
input, output, user), so runs never touch the checkout's folders, as in ComfyUI's own
end-to-end tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cones2.devtools.comfy_host import PACK_DIR_NAME, comfyui_path

from .pack import ROOT


def validation_refusals(node_error: dict) -> list[tuple[str | None, str]]:
    """``(input name or None, text)`` of each refusal in one ``node_errors`` entry of a 400 from /prompt.

    A VALIDATE_INPUTS answer comes as ``custom_validation_failed`` at an input (details ``"name - text"``),
    ComfyUI's own checks at their input; anything raised during validation has no input of its own."""
    out = []
    for e in node_error["errors"]:
        name = (e.get("extra_info") or {}).get("input_name")
        details = e.get("details", "")
        if e.get("type") == "custom_validation_failed" and name and details.startswith(f"{name} - "):
            details = details[len(name) + 3:]
        elif e.get("type") == "exception_during_validation":
            name = None
        out.append((name, details))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A running ComfyUI server (start with ``start()``, stop with ``stop()``)."""

    def __init__(self, models: dict[str, dict[str, Path]] | None = None, extra_args: list[str] | None = None):
        self.base = Path(tempfile.mkdtemp(prefix="cones2-server-"))
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base / sub).mkdir()
        (self.base / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)
        for folder, files in (models or {}).items():
            (self.base / "models" / folder).mkdir(parents=True, exist_ok=True)
            for name, target in files.items():
                (self.base / "models" / folder / name).symlink_to(Path(target).resolve())
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"

    def start(self, timeout: float = 180) -> ComfyServer:
        comfy = comfyui_path()
        assert comfy is not None
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch",
               "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}", *self.extra_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop(keep=True)
        raise TimeoutError(f"ComfyUI did not start within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, keep: bool = False) -> None:
        """Stop the server; remove its base directory unless ``keep`` (e.g. to read the log)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- HTTP ---------------------------------------------------------------------------
    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return json.loads(r.read())

    def get_bytes(self, route: str) -> bytes:
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return r.read()

    def post(self, route: str, payload) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "cones2-tests"})
        if status != 200:
            raise AssertionError(f"/prompt refused the graph ({status}): {json.dumps(body, indent=1)[:4000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Wait for a queued prompt; return its history entry (raises on an execution error)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the prompt:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def execution_error(self, entry: dict) -> dict | None:
        """The execution_error message of a history entry, or None if it succeeded."""
        for kind, data in entry.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue ``prompt``, wait, and return its outputs; fail with the server's message on error."""
        entry = self.wait(self.queue(prompt), timeout)
        err = self.execution_error(entry)
        if err:
            raise AssertionError(f"execution error in node {err.get('node_type')}: {err.get('exception_message')}")
        return entry["outputs"]

    def image_bytes(self, image: dict) -> bytes:
        q = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.get_bytes(f"/view?{q}")
