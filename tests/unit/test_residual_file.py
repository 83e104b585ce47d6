"""The residual file format: round trips, validation messages, safe .pt loading, atomic saves."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cones2.training import atomic_files
from cones2.training import residual_file as rf
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]


def residual(n=1, seed=0, **meta):
    t = torch.randn(n, 1024, generator=torch.Generator().manual_seed(seed)) * 0.01
    return rf.make_residual(t, **meta)


def test_round_trip_keeps_tensor_and_metadata(tmp_path):
    r = residual(2, subject="robot toy", token_ids=[8797, 5988], training={"steps": 3000, "lr": 1e-6})
    path = rf.save_residual(r, tmp_path / "toy.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert list(f.keys()) == ["residual"]
        assert f.get_tensor("residual").dtype == torch.float32
    assert meta["format"] == "cones2-residual"
    assert meta["format_version"] == "1"
    assert meta["subject"] == "robot toy"
    assert json.loads(meta["token_ids"]) == [8797, 5988]
    assert meta["base_model"] == "sd2"
    assert json.loads(meta["training"]) == {"steps": 3000, "lr": 1e-6}
    back = rf.load_residual(path)
    assert torch.equal(back.tensor, r.tensor)
    assert (back.subject, back.token_ids, back.training) == ("robot toy", (8797, 5988), r.training)
    assert back.source == "toy.safetensors"


def test_single_token_file_is_at_most_5kb(tmp_path):
    r = residual(1, subject="dog", token_ids=[1929],
                 training={"steps": 3000, "lr": 1e-6, "regularizer": "paper", "lambda": 1.0, "seed": 0})
    path = rf.save_residual(r, tmp_path / "dog.safetensors")
    assert path.stat().st_size <= 5 * 1024


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), scale=st.floats(1e-6, 1e3), subject=st.text(min_size=1, max_size=20))
def test_round_trip_is_exact_for_any_shape_and_subject(tmp_path_factory, n, scale, subject):
    t = torch.randn(n, 1024) * scale
    path = tmp_path_factory.mktemp("rt") / "r.safetensors"
    rf.save_residual(rf.make_residual(t, subject=subject), path)
    back = rf.load_residual(path)
    assert torch.equal(back.tensor, t) and back.subject == subject


@pytest.mark.parametrize("shape", [(1024,), (1, 1024), (3, 1024)])
def test_official_pt_tensors_load(tmp_path, shape):
    t = torch.randn(shape)
    torch.save(t, tmp_path / "dog.pt")
    r = rf.load_residual(tmp_path / "dog.pt")
    assert r.tensor.shape == (1 if len(shape) == 1 else shape[0], 1024)
    assert torch.equal(r.tensor.flatten(), t.flatten())
    assert r.subject is None


def test_pt_half_precision_is_widened_to_float32(tmp_path):
    torch.save(torch.randn(1024).half(), tmp_path / "h.pt")
    assert rf.load_residual(tmp_path / "h.pt").tensor.dtype == torch.float32


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pt_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"residual": payload}, tmp_path / "evil.pt")
    with pytest.raises(rf.ResidualFileError, match="evil.pt: refused to load.*weights_only"):
        rf.load_residual(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("what", ["code", "a tensor"])
def test_a_legacy_pickle_of_protocol_4_or_more_is_refused_as_such_without_running(tmp_path, protocol, what):
    """torch's safe loader stops at such a file's first frame: the message says it was refused and nothing ran,
    not that the file is damaged."""
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"residual": payload} if what == "code" else torch.zeros(1, 1024), tmp_path / "old.pt",
               _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(tmp_path / "old.pt")
    assert str(e.value).startswith(f"old.pt: refused to load. It is a legacy pickle (pickle protocol {protocol}")
    assert "nothing in this file ran" in str(e.value) and "damaged" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_768_wide_residual_is_refused_with_the_reason(tmp_path, suffix):
    t = torch.randn(1, 768)
    path = tmp_path / f"sd15{suffix}"
    save_file({"residual": t}, str(path)) if suffix == ".safetensors" else torch.save(t, path)
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(path)
    msg = str(e.value)
    assert f"sd15{suffix}" in msg and "768 wide" in msg and "SD1" in msg and "1024" in msg and "SD2" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(tmp_path, bad):
    t = torch.zeros(2, 1024)
    t[1, 5] = bad
    save_file({"residual": t}, str(tmp_path / "bad.safetensors"), metadata={"format": "cones2-residual"})
    with pytest.raises(rf.ResidualFileError, match=r"bad.safetensors: .*1 NaN or infinite value.*train again"):
        rf.load_residual(tmp_path / "bad.safetensors")


def test_a_file_that_is_not_a_residual_is_named(tmp_path):
    save_file({"lora_unet_down.weight": torch.zeros(4, 4)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(rf.ResidualFileError, match="lora.safetensors: not a Cones 2 residual.*lora_unet_down"):
        rf.load_residual(tmp_path / "lora.safetensors")
    save_file({"residual": torch.zeros(1, 1024)}, str(tmp_path / "other.safetensors"), metadata={"format": "x"})
    with pytest.raises(rf.ResidualFileError, match="other.safetensors: not a Cones 2 residual.*format 'x'"):
        rf.load_residual(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(rf.ResidualFileError, match="junk.safetensors: not a readable safetensors file"):
        rf.load_residual(tmp_path / "junk.safetensors")
    torch.save({"a": torch.zeros(1024), "b": torch.zeros(1024)}, tmp_path / "two.pt")
    with pytest.raises(rf.ResidualFileError, match="two.pt: holds 2 entries"):
        rf.load_residual(tmp_path / "two.pt")


def test_newer_format_version_and_other_base_model_are_refused(tmp_path):
    t = torch.zeros(1, 1024)
    save_file({"residual": t}, str(tmp_path / "v9.safetensors"),
              metadata={"format": "cones2-residual", "format_version": "9"})
    with pytest.raises(rf.ResidualFileError, match="format version 9.*Update the pack"):
        rf.load_residual(tmp_path / "v9.safetensors")
    save_file({"residual": t}, str(tmp_path / "sd3.safetensors"),
              metadata={"format": "cones2-residual", "base_model": "sd3"})
    with pytest.raises(rf.ResidualFileError, match=r"sd3.safetensors: made for base model 'sd3'.*sd1 \(SD1.x\)"):
        rf.load_residual(tmp_path / "sd3.safetensors")


@pytest.mark.parametrize("key,width", [("sd1", 768), ("sd2", 1024), ("sdxl", 2048)])
def test_each_family_round_trips_with_its_width_and_encoder_fingerprint(tmp_path, key, width):
    r = rf.make_residual(torch.randn(2, width), subject="dog", base_model=key, text_encoders="w1:0123456789abcdef")
    path = rf.save_residual(r, tmp_path / f"{key}.safetensors")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["base_model"] == key and f.metadata()["text_encoders"] == "w1:0123456789abcdef"
    back = rf.load_residual(path)
    assert back.family.key == key and back.family.width == width and back.tensor.shape == (2, width)
    assert back.text_encoders == "w1:0123456789abcdef" and torch.equal(back.tensor, r.tensor)


def test_a_file_without_a_family_is_sd2_and_records_no_fingerprint(tmp_path):
    save_file({"residual": torch.zeros(1, 1024)}, str(tmp_path / "old.safetensors"), metadata={"format": "cones2-residual"})
    back = rf.load_residual(tmp_path / "old.safetensors")
    assert back.base_model == "sd2" and back.family.width == 1024 and back.text_encoders is None
    assert "text_encoders" not in rf.residual_metadata(back)


@pytest.mark.parametrize("key,width", [("sd1", 1024), ("sd1", 2048), ("sdxl", 768), ("sdxl", 1024), ("sd2", 2048)])
def test_the_width_must_be_the_recorded_familys(tmp_path, key, width):
    save_file({"residual": torch.zeros(1, width)}, str(tmp_path / "r.safetensors"),
              metadata={"format": "cones2-residual", "base_model": key})
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(tmp_path / "r.safetensors")
    family = rf.family_named(key)
    msg = str(e.value)
    assert f"{width} wide" in msg and f"family is {family.label}" in msg and f"{family.width} wide" in msg
    assert rf.family_of_width(width).label in msg and "train this subject again" in msg


def test_bad_shapes_and_inconsistent_token_ids():
    with pytest.raises(rf.ResidualFileError, match=r"shape \[2, 3, 1024\]"):
        rf.make_residual(torch.zeros(2, 3, 1024))
    with pytest.raises(rf.ResidualFileError, match="0 rows"):
        rf.make_residual(torch.zeros(0, 1024))
    with pytest.raises(rf.ResidualFileError, match="2 rows but its phrase has 1 tokens"):
        rf.make_residual(torch.zeros(2, 1024), token_ids=[1929])
    with pytest.raises(rf.ResidualFileError, match="holds a str"):
        rf.make_residual("not a tensor")


def test_save_refuses_to_overwrite_and_keeps_the_old_file(tmp_path):
    path = rf.save_residual(residual(seed=1), tmp_path / "dog.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        rf.save_residual(residual(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dog.safetensors"]


def test_a_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        rf.save_residual(residual(), tmp_path / "dog.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = rf.save_residual(residual(), tmp_path / "dog.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # ComfyUI or another user must be able to read it


def test_saving_never_changes_the_process_umask(tmp_path, monkeypatch):
    # The umask is process-wide: ComfyUI's server thread could create files while it is changed.
    old = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError("write_atomic changed the process umask")

        monkeypatch.setattr(atomic_files.os, "umask", no_umask)
        path = rf.save_residual(residual(), tmp_path / "dog.safetensors")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP])
def test_without_hard_links_saves_still_never_overwrite(tmp_path, monkeypatch, code):
    def no_links(src, dst):  # exFAT, FAT and some network shares refuse hard links
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic_files.os, "link", no_links)
    first = residual(seed=1)
    path = rf.save_residual(first, tmp_path / "dog.safetensors")
    assert torch.equal(rf.load_residual(path).tensor, first.tensor)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        rf.save_residual(residual(seed=2), path)
    assert path.read_bytes() == before
    assert rf.save_residual_unique(residual(seed=3), tmp_path, "dog").name == "dog_2.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dog.safetensors", "dog_2.safetensors"]  # no temp files


def test_without_hard_links_a_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic_files.os, "link", refuse)
    monkeypatch.setattr(atomic_files.os, "replace", refuse)
    with pytest.raises(OSError, match="not permitted"):
        rf.save_residual(residual(), tmp_path / "dog.safetensors")
    assert list(tmp_path.iterdir()) == []  # neither the reservation nor the temporary file


def test_unique_names_never_overwrite(tmp_path):
    names = [rf.save_residual_unique(residual(seed=i), tmp_path, "dog").name for i in range(3)]
    assert names == ["dog.safetensors", "dog_2.safetensors", "dog_3.safetensors"]
    assert not torch.equal(rf.load_residual(tmp_path / "dog.safetensors").tensor,
                           rf.load_residual(tmp_path / "dog_3.safetensors").tensor)


def test_saving_into_a_folder_that_is_a_file_fails_instead_of_looping(tmp_path):
    (tmp_path / "residuals").write_text("a file, not a folder")
    with pytest.raises(OSError):
        rf.save_residual_unique(residual(), tmp_path / "residuals", "dog")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["residuals"]


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".ckpt"])
def test_only_the_listed_residual_suffixes_load(tmp_path, suffix):
    # models/cones2_residuals lists SUFFIXES: load_residual reads exactly those
    assert rf.SUFFIXES == (".safetensors", ".pt")
    torch.save(torch.randn(1024), tmp_path / f"dog{suffix}")
    with pytest.raises(rf.ResidualFileError, match=rf"dog\{suffix}: not a residual file type \(.safetensors, .pt\)"):
        rf.load_residual(tmp_path / f"dog{suffix}")


def test_save_wants_safetensors_suffix(tmp_path):
    with pytest.raises(rf.ResidualFileError, match="saved as .safetensors, not .pt"):
        rf.save_residual(residual(), tmp_path / "dog.pt")


@pytest.mark.parametrize("stem", ["residual", "robot_toy"])
def test_conversion_without_a_subject_records_none_not_the_file_name(tmp_path, stem):
    # the authors' train_cones2.py always writes residual.pt: its stem is no subject
    torch.save(torch.randn(1024), tmp_path / f"{stem}.pt")
    out = rf.convert_to_safetensors(tmp_path / f"{stem}.pt")
    assert rf.load_residual(out).subject is None
    assert rf.load_residual(rf.convert_to_safetensors(tmp_path / f"{stem}.pt", tmp_path / "dog.safetensors",
                                                      subject="dog")).subject == "dog"
    cmd = [sys.executable, str(ROOT / "scripts" / "convert_residual.py"), str(tmp_path / f"{stem}.pt"),
           "-o", str(tmp_path / "cmd.safetensors")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cmd.safetensors records no subject: type its phrase in Load Residual" in done.stderr
    assert rf.load_residual(tmp_path / "cmd.safetensors").subject is None


def test_convert_command_turns_official_pt_into_safetensors(tmp_path):
    t = torch.randn(1024)
    torch.save(t, tmp_path / "dog.pt")
    cmd = [sys.executable, str(ROOT / "scripts" / "convert_residual.py"), str(tmp_path / "dog.pt"), "--subject", "dog"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = rf.load_residual(tmp_path / "dog.safetensors")
    assert torch.equal(r.tensor[0], t) and r.subject == "dog"
    assert r.training == {"converted_from": "dog.pt"}
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "dog.safetensors exists; pass --force" in again.stderr
    torch.save(torch.randn(768), tmp_path / "sd15.pt")
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_residual.py"), str(tmp_path / "sd15.pt")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "768 wide" in bad.stderr
    assert not (tmp_path / "sd15.safetensors").exists()


# --- hostile and careless files: each refused with a message naming the file ----------------------


def _valid_bytes(kind: str) -> bytes:
    import io

    if kind == ".safetensors":
        return rf.residual_to_bytes(residual(2))
    buf = io.BytesIO()
    torch.save(torch.randn(2, 1024), buf)
    return buf.getvalue()


@pytest.mark.parametrize("suffix", rf.SUFFIXES)
def test_an_empty_file_is_named_and_called_empty(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(rf.ResidualFileError, match=rf"^empty{suffix}: the file is empty \(0 bytes\).*Get it again"):
        rf.load_residual(tmp_path / f"empty{suffix}")


@pytest.mark.parametrize("suffix", rf.SUFFIXES)
@given(cut=st.floats(0.0, 0.999))
@settings(max_examples=15, deadline=None)
def test_a_truncated_file_is_named_and_called_damaged(tmp_path_factory, suffix, cut):
    data = _valid_bytes(suffix)
    path = tmp_path_factory.mktemp("cut") / f"cut{suffix}"
    path.write_bytes(data[: max(1, int(len(data) * cut))])
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(path)
    msg = str(e.value)
    assert msg.startswith(f"cut{suffix}: not a readable ")
    assert "truncated or damaged" in msg and "IndexError" not in msg


@pytest.mark.parametrize("suffix, other, said", [
    (".pt", ".safetensors", "not a readable torch file"),
    (".safetensors", ".pt", r"a torch \(.pt\) file, not safetensors; it was not read .* with the .pt suffix"),
])
def test_a_file_of_the_other_type_is_named(tmp_path, suffix, other, said):
    (tmp_path / f"renamed{suffix}").write_bytes(_valid_bytes(other))
    with pytest.raises(rf.ResidualFileError, match=rf"^renamed{suffix}: {said}"):
        rf.load_residual(tmp_path / f"renamed{suffix}")


@pytest.mark.parametrize("obj, what", [([torch.zeros(1024)], "holds a list, not a tensor"),
                                       (3, "holds a int, not a tensor"), ("text", "holds a str, not a tensor"),
                                       ({"a": 1}, "holds 1 entries"), (torch.zeros(1, 1024, dtype=torch.int32),
                                                                       "dtype torch.int32")])
def test_a_pt_of_the_wrong_type_is_named(tmp_path, obj, what):
    torch.save(obj, tmp_path / "wrong.pt")
    with pytest.raises(rf.ResidualFileError, match=f"^wrong.pt: .*{re.escape(what)}"):
        rf.load_residual(tmp_path / "wrong.pt")


@pytest.mark.parametrize("tensors, listed, hint", [
    ({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 320),
      "lora_unet_down_blocks_0.lora_up.weight": torch.zeros(320, 4), "lora_unet_down_blocks_0.alpha": torch.ones(()),
      "lora_te_x.lora_down.weight": torch.zeros(4, 1024), "lora_te_x.lora_up.weight": torch.zeros(1024, 4)},
     "5 tensor(s): 'lora_te_x.lora_down.weight' [4, 1024], 'lora_te_x.lora_up.weight' [1024, 4], "
     "'lora_unet_down_blocks_0.alpha' [], 'lora_unet_down_blocks_0.lora_down.weight' [4, 320] and 1 more",
     "It looks like a LoRA"),
    ({"emb_params": torch.zeros(2, 1024)}, "1 tensor(s): 'emb_params' [2, 1024]",
     "It looks like a textual-inversion embedding"),
    ({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, "2 tensor(s): 'clip_g' [1, 1280], 'clip_l' [1, 768]",
     "It looks like a textual-inversion embedding"),
    ({"delta": torch.zeros(1, 1024)}, "1 tensor(s): 'delta' [1, 1024]", ""),
    ({}, "no tensors", ""),
])
def test_a_safetensors_without_a_residual_lists_what_it_holds(tmp_path, tensors, listed, hint):
    save_file(tensors, str(tmp_path / "other.safetensors"))
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(tmp_path / "other.safetensors")
    msg = str(e.value)
    assert msg.startswith(f"other.safetensors: not a Cones 2 residual: it holds {listed}. A residual holds one "
                          "tensor named 'residual' [n_tokens, width] (width 768 on SD1.x, 1024 on SD2.x, 2048 on SDXL"), msg
    assert hint in msg and msg.endswith("Put only residual files in models/cones2_residuals.")


@pytest.mark.parametrize("scale", [1e30, 1e7, 3.4e38])
@pytest.mark.parametrize("suffix", rf.SUFFIXES)
def test_a_row_norm_no_training_can_make_is_refused(tmp_path, scale, suffix):
    t = torch.zeros(2, 1024)
    t[1, :4] = scale
    path = tmp_path / f"huge{suffix}"
    save_file({"residual": t}, str(path)) if suffix == ".safetensors" else torch.save(t, path)
    with pytest.raises(rf.ResidualFileError) as e:
        rf.load_residual(path)
    msg = str(e.value)
    assert msg.startswith(f"huge{suffix}: a residual row has norm ")
    assert "training cannot make rows above 1e+06" in msg and "train the subject again or get the file again" in msg
    norm = msg.split("norm ")[1].split(";")[0]
    assert norm == "inf" or float(norm) == pytest.approx(2 * scale, rel=1e-2)


@given(scale=st.floats(0.0, rf.MAX_ROW_NORM / 40), n=st.integers(1, 4))
@settings(max_examples=20, deadline=None)
def test_rows_up_to_the_bound_load(scale, n):
    t = torch.randn(n, 1024, generator=torch.Generator().manual_seed(n)) * scale
    assert torch.equal(rf.make_residual(t).tensor, t)
