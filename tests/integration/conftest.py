"""Integration tests run against a real ComfyUI checkout named by COMFYUI_PATH, else skip."""

import pytest
from cones2.devtools.comfy_host import load_host, skip_reason
from cones2.devtools.tiny_sd2 import tiny_sd2_checkpoint

_REASON = skip_reason()


def pytest_collection_modifyitems(config, items):
    here = str(__file__).rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="session")
def host():
    """The real ComfyUI, in process, with the pack loaded."""
    return load_host()


@pytest.fixture(scope="session")
def checkpoint_name(host):
    """A tiny random-weight SD2 checkpoint, placed in the host's models/checkpoints."""
    folder = host.models_dir("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "tiny-sd2.safetensors"
    if not link.exists():
        link.symlink_to(tiny_sd2_checkpoint())
    return link.name


@pytest.fixture(scope="session")
def sd2(host, checkpoint_name):
    """(MODEL, CLIP, VAE) of the tiny SD2 checkpoint, loaded by core CheckpointLoaderSimple."""
    return host.run("CheckpointLoaderSimple", ckpt_name=checkpoint_name)


def placed_checkpoint(host, name: str, build) -> str:
    """``build()``'s cached checkpoint linked into the host's models/checkpoints as ``name``."""
    folder = host.models_dir("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    if not link.exists():
        link.symlink_to(build())
    return name


@pytest.fixture(scope="session")
def sd1(host):
    """(MODEL, CLIP, VAE) of the tiny SD1.5 checkpoint (devtools.tiny_sd15), loaded by CheckpointLoaderSimple."""
    from cones2.devtools.tiny_sd15 import tiny_sd15_checkpoint

    return host.run("CheckpointLoaderSimple", ckpt_name=placed_checkpoint(host, "tiny-sd15.safetensors",
                                                                          tiny_sd15_checkpoint))


@pytest.fixture(scope="module")
def sdxl(host):
    """(MODEL, CLIP, VAE) of the tiny Segmind Vega (SDXL family) checkpoint, loaded by CheckpointLoaderSimple.

    Per module, and unloaded after it: in float32 on the CPU it takes about 9 GB (the real bigG), and held for
    the whole session beside the servers that load their own copy it ran a 24 GB machine out of memory."""
    import gc

    import comfy.model_management
    from cones2.devtools.tiny_sdxl import tiny_sdxl_checkpoint

    loaded = host.run("CheckpointLoaderSimple", ckpt_name=placed_checkpoint(host, "tiny-sdxl.safetensors",
                                                                            tiny_sdxl_checkpoint))
    yield loaded
    del loaded
    comfy.model_management.unload_all_models()
    gc.collect()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """ComfyUI's main.py --cpu with the pack installed and the tiny checkpoint; one per test session.

    Its extra_model_paths.yaml adds a second residual folder (``server.extra_residuals``).
    """
    from cones2_test_support.server import ComfyServer

    extra = tmp_path_factory.mktemp("extra_residuals")
    yaml = extra / "extra_model_paths.yaml"
    yaml.write_text(f"cones2_test:\n    base_path: {extra}\n    cones2_residuals: .\n")
    server = ComfyServer(models={"checkpoints": {"tiny-sd2.safetensors": tiny_sd2_checkpoint()}},
                         extra_args=["--extra-model-paths-config", str(yaml)])
    server.extra_residuals = extra
    server.start()
    yield server
    server.stop()
