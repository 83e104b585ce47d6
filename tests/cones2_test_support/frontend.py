"""ComfyUI's real frontend in headless Chromium, driven over the DevTools protocol (no npm packages).

``Frontend(server_url).start()`` opens the ComfyUI page the server serves (the pinned
comfyui-frontend-package) and waits for ``window.app``; ``evaluate(js)`` runs an async
expression in the page and returns its JSON value; ``screenshot(path)`` saves a PNG. The DevTools
websocket is websocket-client's (ComfyUI's venv has it). Chromium: $CHROMIUM, else
``chromium``/``chromium-browser``/``google-chrome`` on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket


def chromium_path() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Frontend:
    def __init__(self, server_url: str, width: int = 1600, height: int = 1000):
        self.server_url = server_url.rstrip("/")
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.ws: websocket.WebSocket | None = None
        self._id = 0
        self.profile = tempfile.mkdtemp(prefix="cones2-chromium-")
        self.console: list[str] = []

    def start(self, timeout: float = 90) -> Frontend:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no Chromium (set CHROMIUM or install Debian's chromium)")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 30
        while time.time() < deadline and port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line or "")
            if m:
                port = int(m.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if port is None:
            self.stop()
            raise RuntimeError("Chromium did not start its DevTools endpoint")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                              suppress_origin=True)
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=self.server_url + "/")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.evaluate("!!(window.app && window.app.graph && window.app.canvas)"):
                    break
            except RuntimeError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"the ComfyUI page did not load within {timeout}s; console: {self.console[-10:]}")
        return self

    def call(self, method: str, **params):
        assert self.ws is not None
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        """Await ``expression`` in the page; return its value (JSON); raise on a JS exception."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def stop(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except (OSError, websocket.WebSocketException):
                pass
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
