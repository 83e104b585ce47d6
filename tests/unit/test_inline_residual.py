"""A residual as bytes and as base64 text (issue 21): the file's checks, safetensors only, a size cap, no disk."""

import base64
import io
import json
import struct

import pytest
import torch
from cones2.training import inline_residual as ir
from cones2.training import residual_file as rf
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save


def residual(n=1, seed=0, **meta):
    t = torch.randn(n, 1024, generator=torch.Generator().manual_seed(seed)) * 0.01
    return rf.make_residual(t, **meta)


def payload(tensors, metadata=None) -> bytes:
    return st_save(tensors, metadata=metadata)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), subject=st.text(min_size=1, max_size=12), steps=st.integers(0, 10**6),
       wrap=st.sampled_from([0, 60, 76]))
def test_base64_round_trip_is_exact(n, subject, steps, wrap):
    r = rf.make_residual(torch.randn(n, 1024), subject=subject, token_ids=list(range(n)), training={"steps": steps})
    text = ir.residual_to_base64(r)
    if wrap:  # a pasted, line-wrapped value reads the same
        text = "\n".join(text[i:i + wrap] for i in range(0, len(text), wrap)) + "\n"
    back = ir.residual_from_base64(text, "inline")
    assert torch.equal(back.tensor, r.tensor)
    assert (back.subject, back.token_ids, back.training, back.source) == (subject, tuple(range(n)), r.training, "inline")


def test_bytes_and_file_read_alike(tmp_path):
    r = residual(2, subject="robot toy", token_ids=[8797, 5988], training={"steps": 3})
    path = rf.save_residual(r, tmp_path / "toy.safetensors")
    from_file, from_bytes = rf.load_residual(path), rf.load_residual_bytes(path.read_bytes(), "toy.safetensors")
    assert torch.equal(from_file.tensor, from_bytes.tensor)
    fields = ("subject", "token_ids", "base_model", "training", "source")
    assert [getattr(from_file, f) for f in fields] == [getattr(from_bytes, f) for f in fields]


def test_a_data_url_prefix_is_accepted():
    r = residual(1, subject="dog")
    back = ir.residual_from_base64("data:application/octet-stream;base64," + ir.residual_to_base64(r))
    assert torch.equal(back.tensor, r.tensor)


@pytest.mark.parametrize("text, said", [
    ("", "is empty. Paste the base64 of a residual .safetensors file"),
    ("   \n ", "is empty"),
    ("not base64 at all!", "not valid base64"),
    ("QUJ", "not valid base64"),  # a cut value: incomplete padding
    ("../../outside/victim.safetensors", "not valid base64 .*It looks like a file name: a file on the server is "
                                         "loaded by Cones2 Load Residual"),
    ("/etc/passwd", "not valid base64"),
    ("dog.safetensors", "not valid base64 .*It looks like a file name"),
    ("====", "not valid base64"),
])
def test_malformed_text_is_named(text, said):
    with pytest.raises(rf.ResidualFileError, match=f"^residual_base64: {said}"):
        ir.residual_from_base64(text, "residual_base64")


def test_not_text_is_named():
    with pytest.raises(rf.ResidualFileError, match="^in: got a int; give the base64 text"):
        ir.residual_from_base64(5, "in")


def test_a_torch_payload_is_refused_unread(monkeypatch):
    buf = io.BytesIO()
    torch.save(torch.zeros(1, 1024), buf)
    legacy = io.BytesIO()
    torch.save(torch.zeros(1, 1024), legacy, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a payload reached torch.load"))
    for data in (buf.getvalue(), legacy.getvalue()):
        with pytest.raises(rf.ResidualFileError, match=r"^in: a torch \(.pt\) file, not safetensors; it was not read"):
            ir.residual_from_base64(base64.b64encode(data).decode(), "in")


def test_the_size_cap_is_given_with_its_reason():
    big = payload({"residual": torch.zeros(300, 1024)})  # 1.2 MB: over the cap, however made
    assert len(big) > rf.MAX_RESIDUAL_BYTES
    for call in (lambda: rf.load_residual_bytes(big, "in"),
                 lambda: ir.residual_from_base64(base64.b64encode(big).decode(), "in")):
        with pytest.raises(rf.ResidualFileError, match=r"^in: 1\.2 MiB is too large for a residual; the cap is 1 MiB "
                                                       r"\(a residual is ~5 KB"):
            call()
    with pytest.raises(rf.ResidualFileError, match=r"^in: .* characters is too long for a residual; the cap is 1 MiB"):
        ir.residual_from_base64("A" * (ir.MAX_TEXT_CHARS + 1), "in")


def test_the_largest_possible_residual_fits_the_cap():
    r = rf.make_residual(torch.randn(rf.MAX_TOKENS, 1024), subject="x" * 200, token_ids=list(range(rf.MAX_TOKENS)),
                         training={"k": "v" * 2000})
    assert torch.equal(ir.residual_from_base64(ir.residual_to_base64(r)).tensor, r.tensor)


def test_a_large_file_is_refused_after_reading_only_its_header(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload({f"model.layer{i}.weight": torch.zeros(4, 4) for i in range(120)}
                             | {"big": torch.zeros(300, 1024)}))
    with pytest.raises(rf.ResidualFileError, match="^model.safetensors: not a Cones 2 residual.*It looks like a whole "
                                                   "model"):
        rf.load_residual(path)
    path.write_bytes(payload({"residual": torch.zeros(300, 1024)}))
    with pytest.raises(rf.ResidualFileError, match=r"^model.safetensors: 1\.2 MiB is too large"):
        rf.load_residual(path)
    torch.save(torch.zeros(300, 1024), path)  # a large .pt under the wrong suffix
    with pytest.raises(rf.ResidualFileError, match=r"^model.safetensors: a torch \(.pt\) file, not safetensors"):
        rf.load_residual(path)
    path.write_bytes(b"\xff" * (rf.MAX_RESIDUAL_BYTES + 10))
    with pytest.raises(rf.ResidualFileError, match=r"^model.safetensors: not a readable safetensors file \(its header"):
        rf.load_residual(path)


@pytest.mark.parametrize("width, said", [(1000, "1000 wide"), (320, "320 wide")])  # no text encoder's width
def test_a_residual_of_another_width_is_named(width, said):
    data = payload({"residual": torch.zeros(1, width)}, {"format": "cones2-residual"})
    with pytest.raises(rf.ResidualFileError, match=f"^in: the residual is {said}"):
        rf.load_residual_bytes(data, "in")


@pytest.mark.parametrize("value, said", [(float("nan"), "the residual holds 1 NaN or infinite values"), (float("inf"), "the residual holds 1 NaN"),
                                         (1e9, "a residual row has norm 1e\\+09")])
def test_values_are_checked_as_in_a_file(value, said):
    t = torch.zeros(1, 1024)
    t[0, 3] = value
    with pytest.raises(rf.ResidualFileError, match=f"^in: {said}"):
        rf.load_residual_bytes(payload({"residual": t}), "in")


@pytest.mark.parametrize("meta, said", [
    ({"format": "lora"}, "not a Cones 2 residual: it holds format 'lora'"),
    ({"format_version": "9"}, "written in residual format version 9"),
    ({"base_model": "sd3"}, "made for base model 'sd3', which this pack cannot apply"),
    ({"base_model": "sdxl"}, "the residual is 1024 wide"),  # a 1024-wide row is not SDXL's 2048
    ({"token_ids": "[1, 2"}, "damaged metadata"),
    ({"token_ids": "5"}, "damaged metadata"),
    ({"token_ids": "[\"a\"]"}, "damaged metadata"),
    ({"training": "[1]"}, "damaged metadata"),
    ({"token_ids": "[1, 2]"}, "the residual has 1 rows but its phrase has 2 tokens"),
])
def test_metadata_is_checked_as_in_a_file(meta, said):
    with pytest.raises(rf.ResidualFileError, match=f"^in: {said}"):
        rf.load_residual_bytes(payload({"residual": torch.zeros(1, 1024)}, meta), "in")


def header_payload(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize("data, said", [
    (b"", "0 bytes, shorter than a safetensors header"),
    (b"\x05\x00", "2 bytes, shorter"),
    (struct.pack("<Q", 10**6) + b"{}", "its header claims 1000000 bytes but 2 follow"),
    (header_payload({"residual": 3}), "damaged header"),
    (header_payload({"residual": {"shape": ["x"]}}), "damaged header"),
    (header_payload({"__metadata__": {"format": 1}}), "damaged header: .*not a table of strings"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "damaged header"),
    (header_payload({"residual": {"dtype": "F32", "shape": [1, 1024], "data_offsets": [0, 4096]}}, b"\0" * 10),
     "SafetensorError"),
])
def test_broken_payloads_are_named(data, said):
    with pytest.raises(rf.ResidualFileError, match=f"^in: not a readable safetensors file \\({said}"):
        rf.load_residual_bytes(data, "in")


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 10**6), junk=st.binary(max_size=64))
def test_any_truncation_or_junk_is_a_named_error(cut, junk):
    data = rf.residual_to_bytes(residual(2, subject="dog", token_ids=[1, 2]))
    for bad in (data[: cut % len(data)], junk, data[:8] + junk):
        with pytest.raises(rf.ResidualFileError, match="^in: "):
            rf.load_residual_bytes(bad, "in")
        with pytest.raises(rf.ResidualFileError, match="^in: "):
            ir.residual_from_base64(base64.b64encode(bad).decode(), "in")
