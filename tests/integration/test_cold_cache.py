"""A fresh machine has no cached test checkpoint: building one must not rely on ComfyUI being imported already."""

import os
import subprocess
import sys

from cones2_test_support.pack import ROOT
from safetensors import safe_open

# Run from the checkout's root, as the benchmarks are: `-c` puts the current folder first on sys.path,
# so `scripts.pack_alias` imports, and the alias takes the root off again before ComfyUI loads.
BUILD = ("from scripts.pack_alias import import_pack_core; import_pack_core();"
         "from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint; print(tiny_sd15_checkpoint())")


def test_a_checkpoint_builds_in_a_fresh_process_with_an_empty_cache(tmp_path):
    env = {**os.environ, "CONES2_TEST_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", BUILD], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = proc.stdout.strip().splitlines()[-1]
    assert os.path.dirname(path) == str(tmp_path)
    with safe_open(path, "pt") as f:
        assert any(k.startswith("model.diffusion_model.") for k in f.keys())
