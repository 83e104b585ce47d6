"""ComfyUI-Distributed (a master plus one worker, both on the CPU) running a guided two-subject workflow whose
subjects are inline: neither server has a residual file, and both produce an image (issue 21).

Needs a ComfyUI-Distributed checkout, found like the ComfyUI one: $COMFYUI_DISTRIBUTED_PATH, else
~/ComfyUI-Distributed; skipped without one. Each server gets its own copy of the extension (its
settings file, gpu_config.json, lives in the extension's folder), so the checkout is never written.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint
from cones2_test_support.scripts import WORKFLOWS

CHECKPOINT = "tiny-sd2.safetensors"
EXTENSION = "ComfyUI-Distributed"


def distributed_checkout() -> Path | None:
    for candidate in (os.environ.get("COMFYUI_DISTRIBUTED_PATH", ""), Path.home() / EXTENSION):
        if candidate and (Path(candidate) / "nodes" / "collector.py").is_file():
            return Path(candidate)
    return None


pytestmark = pytest.mark.skipif(distributed_checkout() is None, reason=(
    "no ComfyUI-Distributed checkout ($COMFYUI_DISTRIBUTED_PATH or ~/ComfyUI-Distributed)"))


def with_extension(server, config: dict | None = None):
    target = server.base / "custom_nodes" / EXTENSION
    shutil.copytree(distributed_checkout(), target, ignore=shutil.ignore_patterns(".git", "node_modules", "tests"))
    if config is not None:
        (target / "gpu_config.json").write_text(json.dumps(config))
    return server


@pytest.fixture(scope="module")
def master_and_worker():
    from cones2_test_support.server import ComfyServer

    models = {"checkpoints": {CHECKPOINT: tiny_sd2_checkpoint()}}
    worker = with_extension(ComfyServer(models=models))
    master = with_extension(ComfyServer(models=models), {
        "master": {"host": "127.0.0.1"},
        "workers": [{"id": "cpu1", "name": "CPU worker", "host": "127.0.0.1", "port": worker.port, "enabled": True,
                     "type": "remote"}],
        "settings": {"websocket_orchestration": False, "auto_launch_workers": False}})
    servers = []
    try:
        for server in (worker, master):
            servers.append(server.start())
        yield master, worker
    finally:
        for server in servers:
            server.stop(keep=False)


def residual_text(subject: str, seed: int) -> str:
    from cones2.training import inline_residual, residual_file

    tensor = torch.randn(1, 1024, generator=torch.Generator().manual_seed(seed)) * 0.5
    return inline_residual.residual_to_base64(residual_file.make_residual(tensor, subject=subject))


def distributed_graph() -> dict:
    """The shipped guided two-subject workflow, its subjects inline, made distributed with ComfyUI-Distributed's
    two nodes: Distributed Seed into the sampler, Distributed Collector after the decode."""
    from cones2.scripts import run_workflow

    api = json.loads((WORKFLOWS / "api" / "two_subjects_boxes.json").read_text())
    for node in api.values():
        if node["class_type"] == "Cones2LoadResidual":
            phrase = node["inputs"]["phrase"]
            node["class_type"] = "Cones2InlineResidual"
            node["inputs"]["residual_base64"] = residual_text(phrase, len(phrase))
            del node["inputs"]["residual_name"]
    run_workflow.set_checkpoint(api, CHECKPOINT)
    (sampler,) = [k for k, n in api.items() if n["class_type"] == "KSampler"]
    (latent,) = [k for k, n in api.items() if n["class_type"] == "EmptyLatentImage"]
    (save,) = [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    api[latent]["inputs"].update(width=64, height=64)
    api[sampler]["inputs"].update(steps=2, seed=["seed", 0])
    api["seed"] = {"class_type": "DistributedSeed", "inputs": {"seed": 5}}
    api["collect"] = {"class_type": "DistributedCollector", "inputs": {"images": api[save]["inputs"]["images"],
                                                                      "load_balance": False}}
    api[save]["inputs"]["images"] = ["collect", 0]
    return {k: n for k, n in api.items() if n["class_type"] not in ("Cones2LayoutPreview", "PreviewImage")}


def test_a_master_and_a_cpu_worker_both_render_a_guided_two_subject_workflow_with_inline_subjects(master_and_worker):
    master, worker = master_and_worker
    for server in (master, worker):  # the checkpoint only: no residual file anywhere
        assert [p.parent.name for p in (server.base / "models").rglob("*.safetensors")] == ["checkpoints"]
    status, body = master.post("/distributed/queue", {"prompt": distributed_graph(), "client_id": "cones2-tests",
                                                      "enabled_worker_ids": ["cpu1"]})
    assert status == 200, body
    assert body["worker_count"] == 1, body  # the worker passed the health check and got the prompt
    entry = master.wait(body["prompt_id"], timeout=900)
    assert master.execution_error(entry) is None, (master.execution_error(entry), master.log()[-3000:],
                                                   worker.log()[-3000:])
    images = [i for out in entry["outputs"].values() for i in out.get("images", []) if i["type"] == "output"]
    assert len(images) == 2, (entry["outputs"], worker.log()[-3000:])  # the master's image and the worker's
    first, second = (master.image_bytes(i) for i in images)
    assert first != second  # each participant rendered its own seed
    deadline = time.time() + 30
    while time.time() < deadline and not worker.get("/history"):
        time.sleep(0.5)
    (ran,) = worker.get("/history").values()  # the worker ran the prompt itself, inline subjects included
    classes = {n["class_type"] for n in ran["prompt"][2].values()}
    assert {"Cones2InlineResidual", "Cones2LayoutGuidance", "DistributedCollector"} <= classes
    assert ran["status"]["status_str"] == "success"
