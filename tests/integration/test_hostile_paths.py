"""Workflow values that name files: each stays inside its folder, and missing and refused names read alike.

A workflow is shared data: no value in it may make the server open or write a file outside the
pack's folders, and no answer may tell whether a file exists elsewhere (an existence oracle).
"""

import re
import sys
from pathlib import Path

import pytest
import torch
from cones2_test_support.server import validation_refusals

SMALL = dict(steps=1, learning_rate=1e-4, batch_size=1, resolution=64, preservation_weight=1e-3, seed=3,
             corpus_size=1, sentences_per_step=1, train_layers=1, gradient_checkpointing=False)


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def generic(message: str, name) -> str:
    """The message with the name taken out: what must be the same for every refused or missing name."""
    return message.replace(repr(name), "<name>")


@pytest.fixture(scope="module")
def outside(host):
    """A folder outside every pack folder, with a residual and a 'checkpoint' that must stay untouched."""
    d = Path(host.base_dir) / "outside"
    d.mkdir(exist_ok=True)
    rf = pack_module(host, "training.residual_file")
    rf.save_residual(rf.make_residual(torch.full((1, 1024), 0.01), subject="dog"), d / "victim.safetensors",
                     overwrite=True)
    (d / "victim.cones2-train.safetensors").write_bytes(b"not yours")
    return d


@pytest.fixture
def hostile_names():
    """``hostile_names(folder, outside, victim)``: names that leave ``folder`` (with links inside it that lead
    out, removed after the test) and one that is missing."""
    links = []

    def make(folder: Path, outside: Path, victim: str) -> list:
        up = "../" * len(folder.relative_to(outside.parent).parts)
        for link, target in ((folder / f"link_{victim}", outside / victim), (folder / "linkdir", outside)):
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=target.is_dir())
            links.append(link)
        assert (folder / f"{up}outside/{victim}").is_file()  # the naive join reaches the victim
        return [f"{up}outside/{victim}", str(outside / victim), f"link_{victim}", f"linkdir/{victim}",
                "../../../../../../../../etc/passwd", "/etc/passwd", f"{victim}\x00", f"missing_{victim}"]

    yield make
    for link in links:
        link.unlink(missing_ok=True)


def test_resume_from_never_leaves_output_cones2_training(host, sd2, outside, hostile_names):
    model, clip, vae = sd2
    folders = pack_module(host, "comfy_adapters.folders")
    folder = folders.checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    node = host.node("Cones2TrainResidual")
    before = (outside / "victim.cones2-train.safetensors").read_bytes()
    messages = set()
    for name in hostile_names(folder, outside, "victim.cones2-train.safetensors"):
        # validation: ComfyUI's own list check refuses a name that is not in the list, at resume_from
        assert name not in node.INPUT_TYPES()["optional"]["resume_from"][0], name
        with pytest.raises(ValueError) as e:  # the node itself refuses too (e.g. a caller skipping validation)
            host.run("Cones2TrainResidual", model=model, clip=clip, vae=vae, images=torch.rand(3, 64, 64, 3),
                     phrase="dog", resume_from=name, **SMALL)
        messages.add(generic(str(e.value), name))
    assert messages == {"Cones2TrainResidual: checkpoint <name> is not a file in output/cones2_training. Pick one from the list (names "
                        "are relative to that folder; paths and links leading out of it are refused)."}
    assert (outside / "victim.cones2-train.safetensors").read_bytes() == before


def test_residual_names_never_leave_the_residual_folders(host, outside, hostile_names):
    folder = host.models_dir("cones2_residuals")
    folder.mkdir(parents=True, exist_ok=True)
    node = host.node("Cones2LoadResidual")
    messages = set()
    for name in hostile_names(folder, outside, "victim.safetensors"):
        assert node.IS_CHANGED(residual_name=name) == ""
        with pytest.raises(ValueError) as e:
            host.run("Cones2LoadResidual", residual_name=name, phrase="dog", occurrence=1, strength=1.0)
        messages.add(generic(str(e.value), name))
    assert messages == {"Cones2LoadResidual: residual <name> is not a file in models/cones2_residuals. Pick one "
                        "from the list (names are relative to that folder; paths and links leading out of it "
                        "are refused)."}


def test_comfyuis_own_lookup_follows_links_out_so_the_pack_does_not_use_it(host, outside, hostile_names):
    """folder_paths.get_full_path strips a leading '..' but follows a link out: why residual_file exists."""
    folder = host.models_dir("cones2_residuals")
    hostile_names(folder, outside, "victim.safetensors")
    assert host.folder_paths.get_full_path("cones2_residuals", "link_victim.safetensors") is not None
    assert host.folder_paths.get_full_path("cones2_residuals", "../../outside/victim.safetensors") is None


@pytest.mark.parametrize("filename", ["../escape", "../../outside/victim", "/tmp/abs", "sub/x", "..\\win", "..",
                                      ".hidden", "a\x00b"])
def test_save_names_stay_plain_names_in_the_residual_folder(host, outside, filename):
    rf = pack_module(host, "training.residual_file")
    residual = rf.make_residual(torch.full((1, 1024), 0.02), subject="dog")
    before = sorted(p.name for p in outside.iterdir())
    with pytest.raises(ValueError, match="Cones2SaveResidual: .* is not a plain file name; write e.g. 'my_dog'"):
        host.run("Cones2SaveResidual", residual=residual, filename=filename)
    assert sorted(p.name for p in outside.iterdir()) == before


@pytest.mark.parametrize("phrase", ["../../outside/evil", "/etc/evil", "..", "a\x00b", "C:\\evil"])
def test_checkpoint_names_made_from_a_phrase_stay_in_the_checkpoint_folder(host, phrase):
    folders = pack_module(host, "comfy_adapters.folders")
    path = folders.new_checkpoint_path(phrase)
    assert path.parent == folders.checkpoint_dir()
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*_\d{5}\.cones2-train\.safetensors", path.name)


# --- through a real server, as a shared workflow would arrive --------------------------------------

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "train_residual.json"


def test_a_hostile_resume_from_posted_to_the_server_is_refused_generically(comfy_server):
    import json

    victim = comfy_server.base / "outside" / "victim.cones2-train.safetensors"
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(b"not yours")
    mtime = victim.stat().st_mtime_ns
    graph = json.loads(WORKFLOW.read_text())
    graph["1"]["inputs"]["ckpt_name"] = "tiny-sd2.safetensors"
    graph["3"]["inputs"].update({k: v for k, v in SMALL.items() if k in graph["3"]["inputs"]}, checkpoint_every=1)
    details = {}
    for name in ("../../outside/victim.cones2-train.safetensors", str(victim), "../../../../../../../etc/passwd",
                 "missing.cones2-train.safetensors"):
        graph["3"]["inputs"]["resume_from"] = name
        status, body = comfy_server.post("/prompt", {"prompt": graph, "client_id": "cones2-tests"})
        assert status == 400, body
        # refused once, at resume_from itself: never under another input (learning_rate, ...)
        ((where, text),) = validation_refusals(body["node_errors"]["3"])
        assert where == "resume_from", body
        details[name] = generic(text, name)
    assert len(set(details.values())) == 1, details  # a missing and a refused name read alike: no existence oracle
    assert next(iter(details.values())) == "resume_from: <name> not in ['none']"
    assert victim.read_bytes() == b"not yours" and victim.stat().st_mtime_ns == mtime
    assert not (comfy_server.base / "output" / "cones2_training").exists() or not [
        p for p in (comfy_server.base / "output" / "cones2_training").iterdir()]


def test_the_servers_view_route_refuses_a_background_subfolder_leaving_input(comfy_server):
    """The layout editor stores {filename, subfolder, type} of its background and shows it through core /view;
    a workflow that edits them gets nothing outside ComfyUI's folders."""
    import urllib.error

    (comfy_server.base / "outside").mkdir(exist_ok=True)
    (comfy_server.base / "outside" / "secret.png").write_bytes(b"\x89PNG secret")
    for subfolder in ("../outside", "../../../../../../etc", "/etc"):
        filename = "secret.png" if "outside" in subfolder else "passwd"
        with pytest.raises(urllib.error.HTTPError) as e:
            comfy_server.get_bytes(f"/view?filename={filename}&subfolder={subfolder}&type=input")
        assert e.value.code in (400, 403, 404)


def test_a_hostile_residual_name_posted_to_the_server_is_refused_like_a_missing_one(comfy_server):
    outside = comfy_server.base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "victim.safetensors").write_bytes(b"not yours")
    folder = comfy_server.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    details = {}
    for name in ("../../outside/victim.safetensors", str(outside / "victim.safetensors"),
                 "../../../../../../../etc/passwd", "missing.safetensors"):
        graph = {"res": {"class_type": "Cones2LoadResidual",
                         "inputs": {"residual_name": name, "phrase": "dog", "occurrence": 1, "strength": 1.0}},
                 "out": {"class_type": "Cones2ApplyResidual", "inputs": {"clip": ["ckpt", 1], "text": "a dog",
                                                                         "bindings": ["res", 0]}},
                 "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2.safetensors"}},
                 "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                 "sample": {"class_type": "KSampler", "inputs": {
                     "model": ["ckpt", 0], "positive": ["out", 0], "negative": ["out", 0],
                     "latent_image": ["latent", 0], "seed": 1, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
                     "scheduler": "normal", "denoise": 1.0}},
                 "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
                 "save": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}}}
        status, body = comfy_server.post("/prompt", {"prompt": graph, "client_id": "cones2-tests"})
        assert status == 400, body
        (error,) = body["node_errors"]["res"]["errors"]
        details[name] = (error["type"], error["message"])  # ComfyUI's own list check: "Value not in list"
    assert len(set(details.values())) == 1, details
    assert (outside / "victim.safetensors").read_bytes() == b"not yours"


def test_an_inline_residual_never_reads_or_writes_a_file_whatever_its_value(host, outside, hostile_names):
    """Cones2InlineResidual names no file: a path or name given as its value is refused as not base64, the same
    whether the file exists or not, and nothing on disk is opened, listed or written."""
    from cones2_test_support.disk_access import disk_access

    folder = host.models_dir("cones2_residuals")
    folder.mkdir(parents=True, exist_ok=True)
    node = host.node("Cones2InlineResidual")
    names = hostile_names(folder, outside, "victim.safetensors")
    before = (outside / "victim.safetensors").read_bytes()
    answers = {}
    with disk_access() as events:
        for name in names:
            answers[name] = node.VALIDATE_INPUTS(residual_base64=name)  # the one input it reads
            with pytest.raises(ValueError) as e:
                host.run("Cones2InlineResidual", residual_base64=name, phrase="dog", occurrence=1, strength=1.0)
            assert str(e.value) == answers[name]
    assert events == []
    assert all(a.startswith("Cones2InlineResidual: residual_base64: not valid base64") for a in answers.values()), answers
    # an existing victim and a missing name read alike: no existence oracle
    assert answers["link_victim.safetensors"] == answers["missing_victim.safetensors"].replace("missing_", "link_")
    assert (outside / "victim.safetensors").read_bytes() == before
