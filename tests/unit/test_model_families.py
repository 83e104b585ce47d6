"""The model families' facts and the text-encoder fingerprint residual files record."""

import pytest
import torch
from cones2.training import model_families as mf


def weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"clip_l.a.weight": torch.randn(300, 7, generator=g), "clip_l.b.bias": torch.randn(5, generator=g),
            "clip_l.position_ids": torch.arange(77)}


def test_the_fingerprint_ignores_order_and_storage_precision_of_the_same_weights():
    w = {k: v.half().float() if v.is_floating_point() else v for k, v in weights().items()}
    reference = mf.weights_fingerprint(w.items())
    assert reference.startswith("w1:") and len(reference) == 19
    assert mf.weights_fingerprint(reversed(list(w.items()))) == reference
    assert mf.weights_fingerprint((k, v.half() if v.is_floating_point() else v) for k, v in w.items()) == reference


@pytest.mark.parametrize("change", ["values", "name", "shape"])
def test_the_fingerprint_changes_with_the_weights(change):
    w = weights()
    reference = mf.weights_fingerprint(w.items())
    if change == "values":
        w["clip_l.a.weight"] = w["clip_l.a.weight"] + 0.01  # every value, as fine-tuning changes them
    elif change == "name":
        w["clip_g.a.weight"] = w.pop("clip_l.a.weight")
    else:
        w["clip_l.b.bias"] = torch.cat([w["clip_l.b.bias"], torch.zeros(1)])
    assert mf.weights_fingerprint(w.items()) != reference


def test_families_have_their_widths_and_refuse_each_other_by_name():
    assert [(f.key, f.width) for f in mf.FAMILIES.values()] == [("sd1", 768), ("sd2", 1024), ("sdxl", 2048)]
    assert mf.family_of_width(2048) is mf.SDXL and mf.family_of_width(1280) is None
    with pytest.raises(mf.ModelFamilyError) as e:
        mf.check_same_family(mf.SD1, mf.SDXL, "residual 'cat.safetensors'")
    msg = str(e.value)
    assert "'cat.safetensors'" in msg and "SD1.x" in msg and "768" in msg and "SDXL" in msg and "2048" in msg
