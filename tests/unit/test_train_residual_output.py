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
