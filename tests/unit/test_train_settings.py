"""The training options are declared once (training/train_settings.py); the script's flags are made from them."""

from dataclasses import asdict, fields

import pytest
from cones2.scripts import train_residual as script
from cones2.training import train_settings as ts
from cones2.training.trainer import check_settings
from hypothesis import given
from hypothesis import strategies as st

OFFERED = ts.options()


def test_the_offered_settings_are_the_fields_with_an_option_in_field_order():
    assert [s.name for s in OFFERED] == [f.name for f in fields(ts.TrainSettings) if "option" in f.metadata]
    assert {f.name for f in fields(ts.TrainSettings)} - {s.name for s in OFFERED} == {"weight_decay", "max_grad_norm"}
    basic = [s.name for s in OFFERED if not s.option.advanced]
    assert basic == ["steps", "learning_rate", "batch_size", "resolution", "preservation_weight", "seed"]


@pytest.mark.parametrize("s", OFFERED, ids=[s.name for s in OFFERED])
def test_each_default_lies_in_its_range_and_choices(s):
    assert s.default == getattr(ts.TrainSettings(), s.name)
    assert isinstance(s.default, s.kind)
    if s.option.min is not None:
        assert s.option.min <= s.default <= s.option.max
    if s.option.choices is not None:
        assert s.default in [c.value for c in s.option.choices]


def test_the_choices_are_the_trainers_lists():
    assert ts.PRESERVATION == ("paper", "official", "none")
    assert ts.RESIDUAL_FROM == ("corpus", "templates")
    assert ts.PRECISIONS == ("auto", "bf16", "fp16", "fp32")


def test_the_authors_preset_is_a_valid_set_of_settings_and_the_help_names_it():
    official = ts.TrainSettings.from_values(ts.AUTHORS_PRESET)
    check_settings(official)
    assert (official.learning_rate, official.steps, official.resolution) == (5e-6, 4000, 768)
    assert (official.preservation, official.residual_from, official.training_prompt) == ("official", "templates", "{}")
    steps = next(s for s in OFFERED if s.name == "steps")
    assert steps.help.endswith("The authors' code: 4000.")


def argv(*extra):
    return ["--checkpoint", "x", "--images", "y", "--phrase", "dog", "--comfyui", "/nowhere", *extra]


def flag_values(s):
    if s.option.choices is not None:
        return st.sampled_from([c.value for c in s.option.choices])
    if s.kind is bool:
        return st.just(not s.default)  # a flag can only set the other value
    if s.kind is str:
        return st.sampled_from(["{}", "a photo of {a} {}", "{} in the snow"])
    if s.kind is int:
        return st.integers(int(s.option.min), min(int(s.option.max), 10**6))
    return st.floats(s.option.min, s.option.max, allow_nan=False)


@st.composite
def given_settings(draw):
    chosen = draw(st.lists(st.sampled_from(OFFERED), unique_by=lambda s: s.name))
    return {s.name: draw(flag_values(s)) for s in chosen}


def to_flags(values):
    out = []
    for s in OFFERED:
        if s.name not in values:
            continue
        if s.kind is bool:
            out.append(s.option.off_flag or "--" + s.name.replace("_", "-"))
        else:
            out += ["--" + s.name.replace("_", "-"), repr(values[s.name]) if s.kind is float else str(values[s.name])]
    return out


@given(values=given_settings(), official=st.booleans())
def test_every_setting_has_a_flag_and_official_fills_only_what_is_not_given(values, official):
    args = script.parse_args(argv(*to_flags(values), *(["--official"] if official else [])))
    got = script.settings_from(args, ts.TrainSettings)
    expected = {**asdict(ts.TrainSettings()), **(ts.AUTHORS_PRESET if official else {}), **values}
    assert asdict(got) == expected


def test_the_lr_alias_and_a_bad_choice():
    assert script.settings_from(script.parse_args(argv("--lr", "2e-6")), ts.TrainSettings).learning_rate == 2e-6
    with pytest.raises(SystemExit):
        script.parse_args(argv("--preservation", "both"))


@pytest.mark.parametrize("family, prediction, size", [
    ("sd1", "eps", 512), ("sd2", "eps", 512), ("sd2", "v", 768), ("sdxl", "eps", 1024), ("sdxl", "v", 1024)])
def test_resolution_0_is_the_models_native_size_and_a_given_size_is_kept(family, prediction, size):
    from cones2.training.model_families import family_named

    f = family_named(family)
    assert ts.TrainSettings().resolution == ts.NATIVE_RESOLUTION == 0
    assert ts.resolved_resolution(ts.TrainSettings(), f, prediction).resolution == size
    assert ts.resolved_resolution(ts.TrainSettings(resolution=320), f, prediction).resolution == 320
    assert f"{size} for" in next(s for s in OFFERED if s.name == "resolution").help
