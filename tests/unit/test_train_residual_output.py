"""scripts/train_residual.py's output handling: checked before training, and a trained residual is never lost.

The checks run before ComfyUI starts, so these tests need no ComfyUI (``--comfyui`` names a
folder that is not one: reaching it would fail with another message).
"""

import torch
from cones2.scripts import train_residual as script
from cones2.training import residual_file as rf


def args(tmp_path, *extra):
    return ["--checkpoint", "sd21.safetensors", "--images", str(tmp_path), "--phrase", "dog",
            "--comfyui", str(tmp_path / "not_comfyui"), *map(str, extra)]


def residual(seed=0):
    return rf.make_residual(torch.randn(1, 1024, generator=torch.Generator().manual_seed(seed)), subject="dog")


def test_an_output_that_is_not_safetensors_is_refused_before_training(tmp_path, capsys):
    assert script.main(args(tmp_path, "--output", tmp_path / "dog.pt")) == 1
    err = capsys.readouterr().err
    assert "error: --output" in err and "saved as .safetensors; name it e.g. dog.safetensors" in err
    assert "ComfyUI checkout" not in err  # refused before ComfyUI starts, so before training


def test_an_existing_output_is_refused_before_training(tmp_path, capsys):
    taken = tmp_path / "dog.safetensors"
    taken.write_bytes(b"keep me")
    assert script.main(args(tmp_path, "--output", taken)) == 1
    err = capsys.readouterr().err
    assert f"error: --output {taken} exists" in err and "ComfyUI checkout" not in err
    assert taken.read_bytes() == b"keep me"


def test_an_output_folder_under_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert script.main(args(tmp_path, "--output-dir", tmp_path / "afile" / "sub")) == 1
    assert "is a file" in capsys.readouterr().err


def test_an_output_taken_during_training_gets_a_free_name_beside_it(tmp_path):
    taken = tmp_path / "dog.safetensors"
    taken.write_bytes(b"someone else's")
    r = residual()
    path, warnings = script.write_residual(r, output=taken, folder=None, stem="dog")
    assert path == tmp_path / "dog_2.safetensors" and torch.equal(rf.load_residual(path).tensor, r.tensor)
    assert taken.read_bytes() == b"someone else's"
    assert warnings == [f"{taken} appeared while training (nothing is overwritten)",
                        f"the residual was written to {path} instead"]


def test_an_unwritable_folder_falls_back_to_the_next_one(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = residual()
    path, warnings = script.write_residual(r, output=None, folder=tmp_path / "afile", stem="dog",
                                           fallback_dirs=(tmp_path / "fallback",))
    assert path == tmp_path / "fallback" / "dog.safetensors" and torch.equal(rf.load_residual(path).tensor, r.tensor)
    assert warnings[0].startswith(f"could not write into {tmp_path / 'afile'}")
    assert warnings[-1] == f"the residual was written to {path} instead"


def test_a_free_output_is_written_as_named(tmp_path):
    path, warnings = script.write_residual(residual(), output=tmp_path / "rex.safetensors", folder=None, stem="dog")
    assert path == tmp_path / "rex.safetensors" and warnings == []


# --resume / --checkpoint-file: the local user's own paths, used as given, but only training checkpoints


def test_resume_must_name_an_existing_training_checkpoint(tmp_path, capsys):
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "fake.cones2-train.safetensors").write_text("root:x:0:0\n")
    (tmp_path / "empty.cones2-train.safetensors").write_bytes(b"")
    cases = {
        tmp_path / "passwd": "training checkpoints are named *.cones2-train.safetensors",
        tmp_path / "missing.cones2-train.safetensors": "no such checkpoint file",
        tmp_path / "fake.cones2-train.safetensors": "fake.cones2-train.safetensors: not a readable checkpoint",
        tmp_path / "empty.cones2-train.safetensors": "empty.cones2-train.safetensors is empty (0 bytes)",
    }
    for path, message in cases.items():
        assert script.main(args(tmp_path, "--resume", path)) == 1
        err = capsys.readouterr().err
        assert f"error: --resume {path}: " in err and message in err, err
        assert "ComfyUI checkout" not in err  # refused before ComfyUI starts
    assert (tmp_path / "passwd").read_text() == "root:x:0:0\n"


def test_checkpoint_file_must_be_a_checkpoint_name_and_never_clobbers_another_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    taken = tmp_path / "taken.cones2-train.safetensors"
    taken.write_text("mine")
    for path, message in ((notes, "training checkpoints are named"), (taken, "not a usable checkpoint: taken.cones2-train.safetensors: not a readable")):
        assert script.main(args(tmp_path, "--checkpoint-every", 1, "--checkpoint-file", path)) == 1
        err = capsys.readouterr().err
        assert f"error: --checkpoint-file {path}: {message}" in err, err
    assert notes.read_text() == "mine" and taken.read_text() == "mine"
