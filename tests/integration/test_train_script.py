"""scripts/train_residual.py: the headless training command, run as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cones2.devtools.comfy_host import comfyui_path
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_residual.py"
FAST = ["--steps", "2", "--resolution", "64", "--train-layers", "1", "--corpus-size", "1",
        "--sentences-per-step", "1", "--learning-rate", "1e-4", "--no-gradient-checkpointing"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, size in enumerate([(96, 72), (72, 72), (64, 100)]):  # different sizes and aspect ratios
        Image.new("RGB", size, (40 * i + 60, 120, 200 - 50 * i)).save(folder / f"p{i}.jpg")
    return folder


def run_script(*args, cwd):
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path())}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_the_script_trains_and_writes_a_residual_with_its_settings(photos, tmp_path):
    from cones2.training import residual_file as rf

    out_dir = tmp_path / "residuals"
    proc = run_script("--checkpoint", tiny_sd2_checkpoint(), "--images", photos, "--phrase", "robot toy", *FAST,
                      "--output-dir", out_dir, "--loss-plot", tmp_path / "loss.png",
                      "--loss-json", tmp_path / "loss.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = Path(proc.stdout.strip().splitlines()[-1])
    assert written == out_dir / "robot_toy.safetensors" and written.is_file()
    residual = rf.load_residual(written)
    assert residual.tensor.shape == (2, 1024) and residual.subject == "robot toy"
    assert residual.token_ids == (8797, 5988)
    t = residual.training
    assert t["steps"] == 2 and t["images"] == 3 and t["train_layers"] == 1 and t["prediction"] == "eps"
    assert t["model_checkpoint"] == tiny_sd2_checkpoint().name
    assert "checkpoint" not in t and "training_checkpoint" not in t  # no --checkpoint-every: no state file
    assert len(json.loads((tmp_path / "loss.json").read_text())["loss"]) == 2
    assert Image.open(tmp_path / "loss.png").size == (640, 360)
    assert "step 2/2" in proc.stderr
    # the long phases around the steps report progress too, in order
    setup = proc.stderr.index("setup: encoding the corpus: 0/")
    assert setup < proc.stderr.index("step 2/2") < proc.stderr.index("Eq. 5: extracting the residual: 0/")


def test_the_script_reports_bad_input_and_exits_nonzero(photos, tmp_path):
    proc = run_script("--checkpoint", tiny_sd2_checkpoint(), "--images", photos, "--phrase", " ", *FAST,
                      "--output-dir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1
    assert "error: the phrase ' ' has no tokens" in proc.stderr
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_missing_checkpoint_is_bad_input_with_status_1(photos, tmp_path):
    proc = run_script("--checkpoint", "no_such_model.safetensors", "--images", photos, "--phrase", "dog", *FAST,
                      "--output-dir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: no checkpoint 'no_such_model.safetensors'" in proc.stderr


def test_the_script_trains_on_sd15_and_the_residual_records_its_family(photos, tmp_path):
    from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint
    from cones2.training import residual_file as rf

    proc = run_script("--checkpoint", tiny_sd15_checkpoint(), "--images", photos, "--phrase", "dog", *FAST,
                      "--output-dir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    residual = rf.load_residual(Path(proc.stdout.strip().splitlines()[-1]))
    assert residual.tensor.shape == (1, 768) and residual.base_model == "sd1" and residual.token_ids == (1929,)
    assert residual.training["model_checkpoint"] == tiny_sd15_checkpoint().name
