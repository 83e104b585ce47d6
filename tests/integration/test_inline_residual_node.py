"""Cones2InlineResidual in the real ComfyUI: a residual carried in the workflow binds like a file, and bad
values are refused at validation, naming the node and the input, without touching the disk."""

import base64
import io
import re
import sys

import pytest
import torch
from cones2_test_support.disk_access import disk_access
from safetensors.torch import save as st_save

NODE = "Cones2InlineResidual"


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


def inline(host, tensor, **meta) -> str:
    rf = pack_module(host, "training.residual_file")
    return base64.b64encode(rf.residual_to_bytes(rf.make_residual(tensor, **meta))).decode()


def bind_inline(host, text, phrase="", occurrence=1, strength=1.0, bindings=None):
    (out,) = host.run(NODE, residual_base64=text, phrase=phrase, occurrence=occurrence, strength=strength,
                      bindings=bindings)
    return out


def test_the_node_is_registered_beside_load_residual(host):
    info = host.node(NODE).INPUT_TYPES()
    load = host.node("Cones2LoadResidual").INPUT_TYPES()
    assert list(info["required"]) == ["residual_base64", "phrase", "occurrence", "strength"]
    assert {k: v for k, v in info["required"].items() if k != "residual_base64"} == {
        k: v for k, v in load["required"].items() if k != "residual_name"}
    assert info["optional"] == load["optional"] and host.node(NODE).RETURN_TYPES == ("CONES2_BINDINGS",)
    assert host.nodes.NODE_DISPLAY_NAME_MAPPINGS[NODE] == "Cones2 Inline Residual"


def test_inline_and_file_give_the_same_conditioning_and_chain(host, sd2):
    clip = sd2[1]
    rf = pack_module(host, "training.residual_file")
    folder = host.models_dir("cones2_residuals")
    folder.mkdir(parents=True, exist_ok=True)
    dog = rf.make_residual(torch.randn(1, 1024) * 0.5, subject="dog")
    rf.save_residual(dog, folder / "inline_twin_dog.safetensors", overwrite=True)
    cat = inline(host, torch.randn(1, 1024) * 0.5, subject="cat")
    text = "a dog and a cat on the grass"

    from_file = host.run("Cones2LoadResidual", residual_name="inline_twin_dog.safetensors", phrase="", occurrence=1,
                         strength=1.0)[0]
    from_text = bind_inline(host, base64.b64encode(rf.residual_to_bytes(dog)).decode())
    (cond_file,) = host.run("Cones2ApplyResidual", clip=clip, text=text, bindings=bind_inline(host, cat, bindings=from_file))
    (cond_text,) = host.run("Cones2ApplyResidual", clip=clip, text=text, bindings=bind_inline(host, cat, bindings=from_text))
    (plain,) = host.run("CLIPTextEncode", clip=clip, text=text)
    assert [b.phrase for b in bind_inline(host, cat, bindings=from_text)] == ["dog", "cat"]
    assert torch.equal(cond_file[0][0], cond_text[0][0])
    changed = (cond_text[0][0] != plain[0][0]).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [2, 5]  # 'dog' and 'cat' rows (BOS = row 0): only those
    assert torch.allclose(cond_text[0][0][0, 2] - plain[0][0][0, 2], dog.tensor[0], atol=1e-5)


def test_phrase_strength_and_occurrence_apply_as_in_load_residual(host):
    text = inline(host, torch.ones(1, 1024) * 0.1, subject="dog")
    (b,) = bind_inline(host, text, phrase="teddy bear", occurrence=2, strength=-0.5)
    assert (b.phrase, b.occurrence, b.strength) == ("teddy bear", 2, -0.5)
    with pytest.raises(ValueError, match=f"{NODE}: the inline residual records no subject.*'phrase' box"):
        bind_inline(host, inline(host, torch.ones(1, 1024) * 0.1))


def bad_values(host):
    """(value, what the message says): each kind of bad inline value."""
    big = base64.b64encode(st_save({"residual": torch.zeros(300, 1024)})).decode()
    pt = io.BytesIO()
    torch.save(torch.zeros(1, 1024), pt)
    good = inline(host, torch.ones(2, 1024) * 0.1, subject="robot toy")
    return [
        ("", "residual_base64: is empty"),
        ("%%% not base64 %%%", "residual_base64: not valid base64"),
        ("dog.safetensors", "residual_base64: not valid base64 .*It looks like a file name"),
        (base64.b64encode(b"hello, world, not a residual").decode(), "residual_base64: not a readable safetensors"),
        (good[: len(good) // 2 // 4 * 4], "residual_base64: not a readable safetensors file"),  # truncated
        (big, r"residual_base64: 1\.2 MiB is too large for a residual; the cap is 1 MiB"),
        (base64.b64encode(pt.getvalue()).decode(), r"residual_base64: a torch \(.pt\) file, not safetensors"),
        (base64.b64encode(st_save({"residual": torch.ones(1, 1000)})).decode(), "residual_base64: the residual is 1000 wide"),
        (base64.b64encode(st_save({"residual": torch.full((1, 1024), float("nan"))})).decode(),
         "residual_base64: the residual holds 1024 NaN or infinite values"),
        (base64.b64encode(st_save({"lora_up.weight": torch.zeros(4, 4)})).decode(),
         "residual_base64: not a Cones 2 residual"),
    ]


def test_bad_values_are_refused_at_validation_and_at_run_with_the_same_words(host):
    cls = host.node(NODE)
    for value, said in bad_values(host):
        answer = cls.VALIDATE_INPUTS(residual_base64=value)
        assert isinstance(answer, str) and answer.startswith(f"{NODE}: "), (said, answer)
        assert re.match(f"{NODE}: {said}", answer), answer
        with pytest.raises(ValueError) as e:
            bind_inline(host, value, phrase="dog")
        assert str(e.value) == answer
    assert cls.VALIDATE_INPUTS(residual_base64=None) is True  # linked
    assert cls.VALIDATE_INPUTS(residual_base64=inline(host, torch.ones(1, 1024))) is True


def test_inline_values_never_touch_the_disk(host):
    values = [v for v, _ in bad_values(host)] + [inline(host, torch.ones(1, 1024) * 0.1, subject="dog")]
    cls = host.node(NODE)
    bind_inline(host, values[-1])  # warm: anything loaded lazily on first use is loaded now
    with disk_access() as events:
        for value in values:
            cls.VALIDATE_INPUTS(residual_base64=value)
            try:
                bind_inline(host, value, phrase="dog")
            except ValueError:
                pass
    assert events == []
    with disk_access() as events:  # the hook sees what it must: a residual file's load is an open
        host.run("Cones2LoadResidual", residual_name="inline_twin_dog.safetensors", phrase="", occurrence=1,
                 strength=1.0)
    assert any(e == "open" for e, _ in events)
