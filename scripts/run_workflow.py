#!/usr/bin/env python3
"""Run an API-format ComfyUI workflow headless: submit it to a running ComfyUI, show progress, save the outputs.

    python scripts/run_workflow.py workflows/api/two_subjects_boxes.json \\
        --checkpoint v2-1_512-ema-pruned.safetensors \\
        --residual dog=my_dog.safetensors --residual cat=my_cat.safetensors \\
        --prompt "a dog and a cat on the grass" --seed 0-3 -o out/

The workflow is in API format: a file of workflows/api/, or what ComfyUI's Workflow > Export
(API) writes. Needs ``requests``; with ``websocket-client`` installed too (``pip install requests
websocket-client``, the pack's ``headless`` extra) it shows each node and sampler step as the
server reports them, else it follows the run through /history. Exit status: 0 done; 1 the
server refused the graph or a node failed; 2 bad command line, unreadable workflow, or no
server. Ctrl-C cancels the run on the server.

The flags that set inputs (--seed, --prompt, --residual, --box, --set, ...) and how each picks its
node: docs/headless.md, or --help. A LoadImage/LoadImageMask image that the server does
not have is uploaded if a file of that name is beside the workflow, or in an ``images/`` folder
beside it or beside its parent folder. A trained residual in the history (Cones2 Save Residual) is
saved as ``node<ID>_residual.safetensors``; ``--residual dog=@my_dog.safetensors`` inlines a local one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import json
import os
import re
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import requests
except ImportError:
    sys.exit("error: the runner needs requests: pip install requests websocket-client (the pack's 'headless' extra)")
try:
    import websocket  # websocket-client: live progress (optional; ComfyUI's script_examples use it too)
except ImportError:
    websocket = None

DEFAULT_SERVER = "http://127.0.0.1:8188"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SEED_INPUTS = ("seed", "noise_seed", "sampler_seed")  # sampler_seed: Cones2PickBest reports it
IMAGE_LOADERS = ("LoadImage", "LoadImageMask")
RESIDUAL_OUTPUT = "cones2_residual"  # Cones2SaveResidual's history output: the saved residual, base64
RESIDUAL_NODES = {"Cones2LoadResidual": "residual_name", "Cones2InlineResidual": "residual_base64"}  # class: input
# Inputs the --prompt search walks through, upstream of 'positive'/'negative'.
CONDITIONING_INPUT = re.compile(r"^(conditioning.*|cond.*|positive|negative)$")
NO_WEBSOCKET = ("(websocket-client is not installed: no live progress; following the run through /history. "
                "pip install websocket-client for it)")


class UsageError(Exception):
    """A bad command line or workflow: printed as one line, exit status 2."""


class ServerUnreachable(Exception):
    """No ComfyUI answers at the URL."""


class RunFailed(Exception):
    """The server refused the graph or a node failed; the message is ready to print."""


# --- HTTP ---------------------------------------------------------------------------------

class Client:
    """The ComfyUI HTTP API at ``url`` (what the frontend uses), through ``requests``."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method: str, route: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.url + route, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise ServerUnreachable(f"no ComfyUI server answers at {self.url} ({type(e).__name__}); start ComfyUI "
                                    "(python main.py) or pass --server URL") from None

    def get(self, route: str) -> bytes:
        r = self.request("GET", route)
        r.raise_for_status()
        return r.content

    def get_json(self, route: str) -> Any:
        return json.loads(self.get(route))

    def post_json(self, route: str, payload: Any) -> tuple[int, Any]:
        r = self.request("POST", route, json=payload)
        try:
            return r.status_code, r.json() if r.content else {}
        except ValueError:
            return r.status_code, {"error": {"message": r.text[:2000]}}

    def check(self) -> None:
        """Raise ServerUnreachable unless a ComfyUI answers."""
        try:
            self.get_json("/system_stats")
        except (requests.HTTPError, ValueError):
            raise ServerUnreachable(f"{self.url} answers, but not as ComfyUI (no /system_stats)") from None

    def upload_image(self, path: Path) -> str:
        """Upload a local image to the server's input folder; return the name LoadImage takes."""
        with path.open("rb") as f:
            r = self.request("POST", "/upload/image", files={"image": (path.name, f)}, data={"type": "input"})
        if not r.ok:
            raise RunFailed(f"the server refused the upload of {path} (HTTP {r.status_code})")
        info = r.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def websocket(self):
        """The server's /ws for this client (websocket-client), or None without the package or a connection."""
        if websocket is None:
            return None
        u = urllib.parse.urlsplit(self.url)
        url = (f"{'wss' if u.scheme == 'https' else 'ws'}://{u.netloc}{u.path.rstrip('/')}/ws?"
               + urllib.parse.urlencode({"clientId": self.client_id}))
        try:
            return websocket.create_connection(url, timeout=self.timeout)
        except (OSError, websocket.WebSocketException):
            return None


# --- reading the workflow -----------------------------------------------------------------

def load_workflow(path: Path) -> dict:
    """The API prompt in ``path``; a UI-format file is refused with how to export it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no workflow file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise UsageError(f"{path} is a UI-format workflow (as the frontend saves it); the runner takes the API "
                         "format: open it in ComfyUI and use Workflow > Export (API), or take the file of the "
                         "same name in workflows/api/")
    if not (isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values())):
        raise UsageError(f"{path} is not an API-format workflow ({{node_id: {{class_type, inputs}}}}; "
                         "ComfyUI writes one with Workflow > Export (API))")
    return data


# --- selecting nodes and overriding inputs ------------------------------------------------

def describe(api: dict, node_id: str) -> str:
    node = api[node_id]
    title = (node.get("_meta") or {}).get("title")
    cls = node.get("class_type", "?")
    return f"node {node_id} ({cls}{', ' + repr(title) if title and title != cls else ''})"


def select_nodes(api: dict, selector: str) -> list[str]:
    """Node ids that ``selector`` names: ``id:X``, ``title:T``, ``class:C``, or bare (id, title, class)."""
    kind, _, value = selector.partition(":") if re.match(r"^(id|title|class):", selector) else ("", "", selector)
    value = value.strip()

    def by_id():
        return [value] if value in api else []

    def by_title():
        return [k for k, n in api.items() if ((n.get("_meta") or {}).get("title") or "").strip().lower() == value.lower()]

    def by_class():
        return [k for k, n in api.items() if n.get("class_type") == value]

    finders = {"id": [by_id], "title": [by_title], "class": [by_class], "": [by_id, by_title, by_class]}[kind]
    for find in finders:
        found = find()
        if found:
            return found
    raise UsageError(f"no node matches {selector!r}; the workflow has: " + "; ".join(describe(api, k) for k in api))


BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def coerce(raw: str, current: Any, where: str) -> Any:
    """The command-line text ``raw`` as a value of the type of the input's current value."""
    if isinstance(current, bool):
        if raw.strip().lower() not in BOOLEANS:
            raise UsageError(f"{where} is true/false; got {raw!r}")
        return BOOLEANS[raw.strip().lower()]
    for kind, name in ((int, "a whole number"), (float, "a number")):
        if isinstance(current, kind):
            try:
                return kind(raw)
            except ValueError:
                raise UsageError(f"{where} is {name}; got {raw!r}") from None
    if isinstance(current, str):
        return raw
    if isinstance(current, list):
        raise UsageError(f"{where} is linked to another node ({current}); give a value with --set-json "
                         "to replace the link")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


@dataclass(frozen=True)
class SetOverride:
    selector: str
    input: str
    value: str
    is_json: bool = False


def parse_set(text: str, is_json: bool = False) -> SetOverride:
    """``SELECTOR.INPUT=VALUE`` (the selector may hold dots; the input name may not)."""
    lhs, eq, value = text.partition("=")
    if not eq:
        raise UsageError(f"--set {text!r}: write SELECTOR.INPUT=VALUE, e.g. --set KSampler.steps=30")
    selector, dot, name = lhs.strip().rpartition(".")
    if not dot or not selector.strip() or not name.strip():
        raise UsageError(f"--set {text!r}: write SELECTOR.INPUT=VALUE, e.g. --set 3.seed=7 or "
                         "--set 'title:Positive prompt.text=a dog'")
    if is_json:
        try:
            json.loads(value)
        except json.JSONDecodeError as e:
            raise UsageError(f"--set-json {text!r}: the value is not JSON ({e.msg})") from None
    return SetOverride(selector.strip(), name.strip(), value, is_json)


def apply_set(api: dict, override: SetOverride) -> list[str]:
    changes = []
    for node_id in select_nodes(api, override.selector):
        inputs = api[node_id].setdefault("inputs", {})
        where = f"{describe(api, node_id)} input {override.input!r}"
        value = json.loads(override.value) if override.is_json else coerce(override.value, inputs.get(override.input), where)
        inputs[override.input] = value
        changes.append(f"{where} = {value!r}")
    return changes


def parse_seeds(text: str) -> list[int]:
    """``7``, ``0-3`` (inclusive) or ``0,5,9`` -> the seeds to run, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        try:
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise UsageError(f"--seed {text!r}: the range {part} runs backwards")
                if b - a >= 10000:
                    raise UsageError(f"--seed {text!r}: more than 10000 seeds")
                seeds.extend(range(a, b + 1))
            else:
                seed = int(part)
                if seed < 0:
                    raise ValueError
                seeds.append(seed)
        except ValueError:
            raise UsageError(f"--seed {text!r}: give a seed (7), a range (0-3) or a list (0,5,9) of "
                             "whole numbers >= 0") from None
    return seeds


def set_seed(api: dict, seed: int) -> list[str]:
    changes = []
    for node_id, node in api.items():
        for name in SEED_INPUTS:
            value = node.get("inputs", {}).get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                node["inputs"][name] = seed
                changes.append(f"{describe(api, node_id)} input {name!r} = {seed}")
    if not changes:
        raise UsageError("--seed: no node has a seed or noise_seed value (a linked seed is left alone); "
                         "use --set")
    return changes


def prompt_nodes(api: dict, which: str) -> list[str]:
    """Nodes holding the text that feeds every ``which`` ('positive'/'negative') input."""
    found: list[str] = []
    seen: set[str] = set()
    queue = [v[0] for n in api.values() for k, v in n.get("inputs", {}).items() if k == which and _is_link(v)]
    while queue:
        node_id = str(queue.pop(0))
        if node_id in seen or node_id not in api:
            continue
        seen.add(node_id)
        inputs = api[node_id].get("inputs", {})
        if isinstance(inputs.get("text"), str):
            found.append(node_id)
            continue
        queue.extend(str(v[0]) for k, v in inputs.items() if _is_link(v) and CONDITIONING_INPUT.match(k))
    return found


def set_prompt(api: dict, text: str, which: str) -> list[str]:
    found = prompt_nodes(api, which)
    flag = "--prompt" if which == "positive" else "--negative"
    if not found:
        raise UsageError(f"{flag}: no node with a text input feeds a '{which}' input; use --set NODE.text=...")
    if len(found) > 1:
        raise UsageError(f"{flag}: several prompt nodes feed '{which}' (" + "; ".join(describe(api, k) for k in found)
                         + "); use --set on the one you mean")
    api[found[0]]["inputs"]["text"] = text
    return [f"{describe(api, found[0])} input 'text' = {text!r}"]


def set_checkpoint(api: dict, name: str) -> list[str]:
    changes = []
    for node_id, node in api.items():
        if "ckpt_name" in node.get("inputs", {}):
            node["inputs"]["ckpt_name"] = name
            changes.append(f"{describe(api, node_id)} input 'ckpt_name' = {name!r}")
    if not changes:
        raise UsageError("--checkpoint: no node has a ckpt_name input")
    return changes


def _stem(name: str) -> str:
    return re.sub(r"\.(safetensors|pt|pth|bin)$", "", name.strip(), flags=re.I).lower()


def set_residual(api: dict, spec: str) -> list[str]:
    """``[KEY=]FILE`` (on the server: Load Residual) or ``[KEY=]@LOCAL_FILE`` (its bytes inline: Inline Residual)."""
    key, eq, filename = spec.rpartition("=")
    if not eq:
        key, filename = "", spec
    loaders = [k for k, n in api.items() if n.get("class_type") in RESIDUAL_NODES]
    if not loaders:
        raise UsageError("--residual: the workflow has no residual node (Cones2LoadResidual or Cones2InlineResidual)")
    listing = "; ".join(f"{describe(api, k)}: phrase {api[k]['inputs'].get('phrase')!r} occurrence "
                        f"{api[k]['inputs'].get('occurrence')} file {api[k]['inputs'].get('residual_name', '(inline)')!r}"
                        for k in loaders)
    key = key.strip()
    if not key:
        if len(loaders) != 1:
            raise UsageError(f"--residual {spec!r}: the workflow has {len(loaders)} residual nodes; say which, "
                             f"e.g. --residual dog=my_dog.safetensors ({listing})")
        chosen = loaders
    else:
        phrase, _, occ = key.partition("#")
        inputs = {k: api[k].get("inputs", {}) for k in loaders}
        chosen = [k for k in loaders if str(inputs[k].get("phrase", "")).strip().lower() == phrase.strip().lower()
                  and (not occ or str(inputs[k].get("occurrence", 1)) == occ.strip())]
        chosen = chosen or [k for k in loaders if "residual_name" in inputs[k]
                            and _stem(str(inputs[k]["residual_name"])) == _stem(key)]
        try:
            chosen = chosen or [k for k in select_nodes(api, key) if k in loaders]
        except UsageError:
            pass
        if len(chosen) != 1:
            what = "no" if not chosen else "more than one"
            raise UsageError(f"--residual {spec!r}: {what} residual node matches {key!r} "
                             f"(by phrase[#occurrence], file name, id or title): {listing}")
    node, filename = api[chosen[0]], filename.strip()
    cls, name, value, shown = "Cones2LoadResidual", "residual_name", filename, repr(filename)
    if filename.startswith("@"):  # the server checks the contents
        path = Path(filename[1:]).expanduser()
        if path.suffix.lower() != ".safetensors":
            raise UsageError(f"--residual {spec!r}: an inline residual is a .safetensors file (a .pt is a pickle: "
                             "convert it first, python scripts/convert_residual.py FILE.pt --subject PHRASE)")
        try:
            value = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError as e:
            raise UsageError(f"--residual {spec!r}: cannot read {path} ({e.strerror or e})") from None
        cls, name, shown = "Cones2InlineResidual", "residual_base64", f"<{len(value):,} characters of base64: {path}>"
    was, node["class_type"] = node["class_type"], cls
    node["inputs"] = {name: value, **{k: v for k, v in node.get("inputs", {}).items() if k not in RESIDUAL_NODES.values()}}
    return [f"{describe(api, chosen[0])}" + (f" (was {was})" if was != cls else "") + f" input {name!r} = {shown}"]


def set_boxes(api: dict, lines: list[str]) -> list[str]:
    nodes = [k for k, n in api.items() if n.get("class_type") == "Cones2LayoutBoxes"]
    if len(nodes) != 1:
        raise UsageError(f"--box: the workflow has {len(nodes)} Cones2LayoutBoxes nodes; use "
                         "--set NODE.boxes=... to pick one" if nodes else "--box: the workflow has no Cones2LayoutBoxes node")
    text = "\n".join(line.strip() for line in lines)
    api[nodes[0]]["inputs"]["boxes"] = text
    return [f"{describe(api, nodes[0])} input 'boxes' = {text!r}"]


def image_nodes(api: dict) -> list[str]:
    return [k for k, n in api.items() if n.get("class_type") in IMAGE_LOADERS]


def set_image(api: dict, spec: str, client: Client | None) -> list[str]:
    selector, eq, path = spec.rpartition("=")
    if not eq:
        selector, path = "", spec
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--image {spec!r}: no file {path}")
    targets = select_nodes(api, selector) if selector else image_nodes(api)
    if len(targets) != 1:
        raise UsageError(f"--image {spec!r}: " + (f"{len(targets)} image loaders ("
                         + "; ".join(describe(api, k) for k in targets) + "); write --image SELECTOR=PATH"
                         if targets else "the workflow has no LoadImage node"))
    name = client.upload_image(path) if client else path.name
    api[targets[0]].setdefault("inputs", {})["image"] = name
    return [f"uploaded {path} as {name!r}; {describe(api, targets[0])} input 'image' = {name!r}"]


def upload_missing_images(api: dict, client: Client, workflow_path: Path) -> list[str]:
    """Upload LoadImage files the server lacks, found beside the workflow (see the module doc)."""
    changes = []
    folder = workflow_path.resolve().parent
    search = [folder, folder / "images", folder.parent / "images"]
    known: dict[str, list] = {}
    for node_id in image_nodes(api):
        node = api[node_id]
        name = node.get("inputs", {}).get("image")
        if not isinstance(name, str) or not name:
            continue
        cls = node["class_type"]
        if cls not in known:
            info = client.get_json(f"/object_info/{urllib.parse.quote(cls)}").get(cls, {})
            known[cls] = list(info.get("input", {}).get("required", {}).get("image", [[]])[0] or [])
        if name in known[cls]:
            continue
        local = next((d / name for d in search if (d / name).is_file()), None)
        if local is None:
            continue  # the server will say the file is missing, naming the node
        uploaded = client.upload_image(local)
        node["inputs"]["image"] = uploaded
        changes.append(f"uploaded {local} as {uploaded!r} for {describe(api, node_id)}")
    return changes


def check_links(api: dict) -> None:
    for node_id, node in api.items():
        for name, value in node.get("inputs", {}).items():
            if _is_link(value) and str(value[0]) not in api:
                raise UsageError(f"{describe(api, node_id)} input {name!r} links to node {value[0]}, "
                                 "which is not in the workflow")


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


# --- server messages, readably ------------------------------------------------------------

def format_node_errors(body: dict, api: dict) -> str:
    """The /prompt refusal (HTTP 400): one line per node error: node, class, input, message."""
    lines = []
    error = body.get("error")
    node_errors = body.get("node_errors") or {}
    if isinstance(error, dict):
        head = error.get("message") or error.get("type") or "the server refused the workflow"
        if error.get("details") and not node_errors:
            head += f": {error['details']}"
        lines.append(f"error: {head}")
    elif error:
        lines.append(f"error: {error}")
    else:
        lines.append("error: the server refused the workflow")
    for node_id, info in node_errors.items():
        where = describe(api, node_id) if node_id in api else f"node {node_id} ({info.get('class_type', '?')})"
        seen = set()
        for e in info.get("errors", []):
            extra = e.get("extra_info") or {}
            name = extra.get("input_name")
            msg = e.get("message", "")
            details = e.get("details", "")
            if e.get("type") == "custom_validation_failed" and name and details.startswith(f"{name} - "):
                # ComfyUI repeats a node's VALIDATE_INPUTS answer once per input it reads: say it once
                if details in seen or (details := details[len(name) + 3:]) in seen:
                    continue
                seen.add(details)
                lines.append(f"  {where}: {details}")
                continue
            if name and details.startswith(f"{name}: "):
                details = details[len(name) + 2:]
            elif name and details.startswith(f"{name}, "):  # "x, received_type(A) mismatch input_type(B)"
                details = details[len(name) + 2:]
            if details and details != name:
                msg = f"{msg}: {details}"
            if "received_value" in extra and str(extra["received_value"]) not in msg:
                msg += f" (got {extra['received_value']!r})"
            lines.append(f"  {where}" + (f" input {name!r}" if name else "") + f": {msg}")
    return "\n".join(lines)


def format_execution_error(msg: dict, api: dict, verbose: bool = False) -> str:
    node_id = str(msg.get("node_id", "?"))
    where = describe(api, node_id) if node_id in api else f"node {node_id} ({msg.get('node_type', '?')})"
    text = f"error: {where} failed: {msg.get('exception_type', 'Exception').rsplit('.', 1)[-1]}: " \
           f"{str(msg.get('exception_message', '')).strip()}"
    if verbose and msg.get("traceback"):
        text += "\n" + "".join(msg["traceback"]).rstrip()
    return text


# --- running ------------------------------------------------------------------------------

def submit(client: Client, api: dict) -> str:
    status, body = client.post_json("/prompt", {"prompt": api, "client_id": client.client_id})
    if status != 200:
        raise RunFailed(format_node_errors(body if isinstance(body, dict) else {}, api))
    return body["prompt_id"]


def follow(ws, api: dict, prompt_id: str, say, verbose: bool, deadline: float | None) -> None:
    """Print the server's messages for ``prompt_id`` (nodes, cached nodes, sampler steps every 10%) until
    it ends; raise RunFailed on an error."""
    done, last_pct = 0, {}
    ws.settimeout(2.0)
    while deadline is None or time.monotonic() < deadline:
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except (OSError, websocket.WebSocketException):
            return  # the connection went: /history still has the result
        if not isinstance(message, str):
            continue  # a preview image
        msg = json.loads(message)
        kind, body = msg.get("type"), msg.get("data") or {}
        if body.get("prompt_id") not in (None, prompt_id):
            continue
        if kind == "execution_cached" and body.get("nodes"):
            done += len(body["nodes"])
            say(f"cached: {', '.join(map(str, body['nodes']))}")
        elif kind == "executing" and body.get("node") is not None:
            node_id, done = str(body.get("display_node") or body["node"]), done + 1
            say(f"[{min(done, len(api))}/{len(api)}] " + (describe(api, node_id) if node_id in api else f"node {node_id}"))
        elif kind == "progress":
            node_id, value, maximum = str(body.get("node")), int(body.get("value", 0)), int(body.get("max", 0))
            pct = int(100 * value / maximum) if maximum else 100
            if value >= maximum or pct - last_pct.get(node_id, -100) >= 10:
                last_pct[node_id] = pct
                say(f"    step {value}/{maximum}")
        elif kind == "execution_error":
            raise RunFailed(format_execution_error(body, api, verbose))
        elif kind in ("execution_interrupted", "execution_success") or (kind == "executing" and body.get("node") is None
                                                                        and body.get("prompt_id") == prompt_id):
            return


def wait(client: Client, api: dict, prompt_id: str, ws, say, timeout: float | None, verbose: bool = False) -> dict:
    """Follow the run (websocket messages, when there is a connection) and return its /history entry."""
    deadline = time.monotonic() + timeout if timeout else None
    if ws is not None:
        follow(ws, api, prompt_id, say, verbose, deadline)
    while deadline is None or time.monotonic() < deadline:
        entry = client.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
        status = (entry or {}).get("status") or {}
        if entry is not None and (status.get("completed") or status.get("status_str") in ("success", "error")):
            for kind, body in status.get("messages", []):
                if kind == "execution_error":
                    raise RunFailed(format_execution_error(body, api, verbose))
                if kind == "execution_interrupted":
                    raise RunFailed("error: the run was interrupted")
            return entry
        time.sleep(0.5 if ws is None else 0.1)
    raise RunFailed(f"error: the run did not finish within {timeout:g}s (prompt {prompt_id} is still "
                    "queued or running on the server)")


def save_outputs(client: Client, entry: dict, out_dir: Path, api: dict) -> tuple[list[Path], list[str]]:
    """Download every file output (images via /view) into ``out_dir``; return (files, other outputs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files, others = [], []
    for node_id, outputs in (entry.get("outputs") or {}).items():
        for key, items in outputs.items():
            if key == RESIDUAL_OUTPUT and isinstance(items, list):  # a trained residual, its bytes in the history
                for item in items:
                    try:
                        data = base64.b64decode(item["base64"], validate=True)
                    except (TypeError, KeyError, binascii.Error):
                        others.append(f"node {node_id}: a residual output without readable base64 (skipped)")
                        continue
                    files.append(_free_name(out_dir / f"node{node_id}_residual.safetensors"))
                    files[-1].write_bytes(data)
            elif isinstance(items, list) and items and all(isinstance(i, dict) and "filename" in i for i in items):
                for item in items:
                    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                                    "type": item.get("type", "output")})
                    data = client.get(f"/view?{query}")
                    target = _free_name(out_dir / Path(item["filename"]).name)
                    target.write_bytes(data)
                    files.append(target)
            elif key == "text" and isinstance(items, list) and all(isinstance(i, str) for i in items):
                others.append(f"{describe(api, node_id) if node_id in api else 'node ' + node_id}:\n" + "\n".join(items))
            elif key.startswith("cones2_"):  # the pack's JSON reports (scores, picks): kept whole, as a file
                target = _free_name(out_dir / f"node{node_id}_{key.removeprefix('cones2_')}.json")
                target.write_text(json.dumps(items[0] if isinstance(items, list) and len(items) == 1 else items,
                                             indent=1))
                files.append(target)
            else:
                others.append(f"{describe(api, node_id) if node_id in api else 'node ' + node_id} {key}: "
                              f"{json.dumps(items)[:500]}")
    return files, others


def _free_name(path: Path) -> Path:
    """``path``, else ``stem-1.ext``, ``stem-2.ext``, ...: never over an existing file."""
    candidates = (path.with_name(f"{path.stem}-{i}{path.suffix}") if i else path for i in range(100000))
    return next(c for c in candidates if not c.exists())


def cancel(client: Client, prompt_id: str) -> None:
    try:
        client.post_json("/queue", {"delete": [prompt_id]})
        client.post_json("/interrupt", {"prompt_id": prompt_id})
    except (ServerUnreachable, OSError):
        pass


# --- command line -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_workflow.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run an API-format ComfyUI workflow on a running ComfyUI and save its outputs.",
        epilog=__doc__.split("\n\n", 3)[3])
    p.add_argument("workflow", type=Path, help="the workflow JSON in API format (Workflow > Export (API))")
    p.add_argument("--server", default=os.environ.get("COMFYUI_URL", DEFAULT_SERVER),
                   help=f"ComfyUI's URL (default {DEFAULT_SERVER}, or $COMFYUI_URL)")
    p.add_argument("-o", "--output", type=Path, default=Path("output"), help="folder for the outputs (default ./output)")
    p.add_argument("--seed", help="seed(s): 7, 0-3 or 0,5,9 (one run per seed)")
    p.add_argument("--prompt", help="the positive prompt text")
    p.add_argument("--negative", help="the negative prompt text")
    p.add_argument("--checkpoint", help="the checkpoint file (every ckpt_name)")
    p.add_argument("--residual", action="append", default=[], metavar="[KEY=]FILE",
                   help="a residual file on the server, or @LOCAL_FILE to carry a local one in the workflow; repeatable")
    p.add_argument("--box", action="append", default=[], metavar="LINE",
                   help="a layout box line 'dog: x y width height [gamma]'; repeatable")
    p.add_argument("--image", action="append", default=[], metavar="[SEL=]PATH", help="upload an image for a LoadImage")
    p.add_argument("--set", action="append", default=[], metavar="SEL.INPUT=VALUE", help="set any input; repeatable")
    p.add_argument("--set-json", action="append", default=[], metavar="SEL.INPUT=JSON", help="set any input to JSON")
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait per run (default: no limit)")
    p.add_argument("--print-prompt", action="store_true",
                   help="print the API prompt after the overrides and exit (no run, no server)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the saved files and errors")
    p.add_argument("-v", "--verbose", action="store_true", help="print the server's traceback on a node failure")
    return p


def apply_overrides(api: dict, args, seed: int | None, client: Client | None) -> list[str]:
    changes: list[str] = []
    if seed is not None:
        changes += set_seed(api, seed)
    if args.prompt is not None:
        changes += set_prompt(api, args.prompt, "positive")
    if args.negative is not None:
        changes += set_prompt(api, args.negative, "negative")
    if args.checkpoint:
        changes += set_checkpoint(api, args.checkpoint)
    for spec in args.residual:
        changes += set_residual(api, spec)
    if args.box:
        changes += set_boxes(api, args.box)
    for spec in args.image:
        changes += set_image(api, spec, client)
    for text in args.set:
        changes += apply_set(api, parse_set(text))
    for text in args.set_json:
        changes += apply_set(api, parse_set(text, is_json=True))
    check_links(api)
    return changes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.server)
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    prompt_id = None
    try:
        seeds = parse_seeds(args.seed) if args.seed else [None]
        api = load_workflow(args.workflow)
        if args.print_prompt:
            for seed in seeds:
                run_api = copy.deepcopy(api)
                apply_overrides(run_api, args, seed, None)
                print(json.dumps(run_api, indent=2))
            return EXIT_OK
        client.check()
        if websocket is None:
            say(NO_WEBSOCKET)
        all_files: list[Path] = []
        for seed in seeds:
            run_api = copy.deepcopy(api)
            for change in apply_overrides(run_api, args, seed, client):
                say(f"set {change}")
            for change in upload_missing_images(run_api, client, args.workflow):
                say(change)
            ws = client.websocket()  # before submitting, so no message is missed
            try:
                prompt_id = submit(client, run_api)
                say(f"queued {args.workflow.name}" + (f" (seed {seed})" if seed is not None else "")
                    + f" as prompt {prompt_id}")
                entry = wait(client, run_api, prompt_id, ws, say, args.timeout or None, args.verbose)
                prompt_id = None
            finally:
                if ws is not None:
                    ws.close()
            files, others = save_outputs(client, entry, args.output, run_api)
            for line in others:
                say(f"output: {line}")
            for f in files:
                print(f)
            all_files += files
        if not all_files:
            say("done; the workflow saved no files")
        return EXIT_OK
    except (UsageError, ServerUnreachable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        if prompt_id:
            cancel(client, prompt_id)
            print(f"\ncancelled prompt {prompt_id} on the server", file=sys.stderr)
        return 130
    except requests.RequestException as e:
        print(f"error: unexpected answer from {args.server}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
