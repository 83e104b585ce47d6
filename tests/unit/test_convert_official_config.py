"""The converter from the authors' inference config: how each field maps, and the command's files."""

import json

import pytest
import torch
from cones2.devtools import convert_official_config as conv
from cones2.devtools import make_workflows
from cones2.devtools import node_schemas as wf
from cones2.guidance.step_range import check_percents
from cones2.training.residual_file import load_residual
from cones2_test_support.scripts import WORKFLOWS, official_example_dir

OFFICIAL = official_example_dir()
SCHEMAS = make_workflows.load_schemas()


def config(**changes):
    """An authors'-format config with the structure of their example."""
    entry = {"prompt": "a mug and a dog on the beach",
             "residual_dict": {"dog": "residuals/dog.pt", "mug": "residuals/mug.pt", "barn": "residuals/barn.pt"},
             "color_context": {"255,192,0": ["mug", 2.5], "255,0,0": ["dog", 2.0]},
             "guidance_steps": 50, "guidance_weight": 0.08, "weight_negative": -1e8,
             "layout": "layouts/layout.png", "subject_list": [["mug", 2], ["dog", 5]]}
    entry.update(changes)
    return [entry]


def api_of(cfg, **kw):
    c = conv.resolve_bindings(conv.parse_official_config(cfg), conv.word_tokenizer)
    return c, conv.build_api(c, **kw)


def by_class(api, cls):
    return [n["inputs"] for n in api.values() if n["class_type"] == cls]


@pytest.fixture(autouse=True)
def no_comfyui(monkeypatch):
    """The converter defaults --comfyui to $COMFYUI_PATH (its tokenizer, its residual folder):
    these tests are about the converter alone and must never write into a real checkout."""
    monkeypatch.delenv("COMFYUI_PATH", raising=False)


@pytest.fixture
def official():
    if OFFICIAL is None:
        pytest.skip("the authors' example is not on this machine (it is never copied into the repository)")
    return OFFICIAL


def test_the_authors_example_maps_to_the_shipped_workflow(official):
    data = json.loads((official / "guidance_config_example.json").read_text())
    c = conv.resolve_bindings(conv.parse_official_config(data), conv.word_tokenizer)
    assert c.bindings == (("mug", "mug", 1), ("dog", "dog", 1))
    assert conv.colors_text(c) == "255,192,0: mug 2.5\n255,0,0: dog 2.5"
    c = conv.replace(c, residual_files={"mug": "mug.safetensors", "dog": "dog.safetensors"},
                     layout_image="official_layout_768.png")
    api = conv.build_api(c, name="official_example", checkpoint="v2-1_768-ema-pruned.safetensors")
    shipped = json.loads((WORKFLOWS / "api" / "official_example.json").read_text())
    assert api == shipped


def test_each_field_lands_where_the_authors_code_uses_it():
    c, api = api_of(config())
    (sampler,) = by_class(api, "Cones2LayoutGuidedSampler")
    assert {k: sampler[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "weight",
                                    "suppression", "start_percent", "end_percent", "self_recurrence")} == {
        "seed": 0, "steps": 50, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "weight": 0.08, "suppression": -1e8, "start_percent": 0.0, "end_percent": 1.0, "self_recurrence": True}
    assert by_class(api, "EmptyLatentImage") == [{"width": 768, "height": 768, "batch_size": 1}]
    assert by_class(api, "Cones2ApplyResidual")[0]["text"] == "a mug and a dog on the beach"
    assert by_class(api, "CLIPTextEncode")[0]["text"] == ""
    (colors,) = by_class(api, "Cones2LayoutFromColorMap")
    assert colors["colors"] == "255,192,0: mug 2.5\n255,0,0: dog 2" and colors["tolerance"] == 0.0
    loaders = by_class(api, "Cones2LoadResidual")
    assert [(r["residual_name"], r["phrase"], r["occurrence"]) for r in loaders] == [
        ("residuals/mug.pt", "mug", 1), ("residuals/dog.pt", "dog", 1)]  # barn is not in subject_list
    assert "bindings" not in loaders[0] and loaders[1]["bindings"] == ["4", 0]
    assert by_class(api, "Cones2ApplyResidual")[0]["bindings"] == ["5", 0]
    assert wf.validate_api(api, SCHEMAS, skip_combo_check={"ckpt_name", "residual_name", "image"}) == []


def test_fewer_guidance_steps_end_guidance_early_and_none_turns_it_off():
    _, api = api_of(config(guidance_steps=20))
    (s,) = by_class(api, "Cones2LayoutGuidedSampler")
    assert s["end_percent"] == 0.4 and s["self_recurrence"] is True and s["weight"] == 0.08
    _, api = api_of(config(guidance_steps=0))
    (s,) = by_class(api, "Cones2LayoutGuidedSampler")
    assert s["weight"] == 0.0 and s["self_recurrence"] is False
    # the sampler accepts the range (an empty one, end_percent 0, is refused when it runs)
    assert (s["start_percent"], s["end_percent"]) == (0.0, 1.0)
    check_percents(s["start_percent"], s["end_percent"])


def test_any_number_of_subjects_gets_a_chain_of_loaders():
    three = config(prompt="a mug and a dog near a barn", subject_list=[["mug", 2], ["dog", 5], ["barn", 8]])
    _, api = api_of(three)
    loaders = {k: n for k, n in api.items() if n["class_type"] == "Cones2LoadResidual"}
    assert [(n["inputs"]["phrase"], n["inputs"].get("bindings"), n["_meta"]["title"]) for n in loaders.values()] == [
        ("mug", None, "Subject: mug"), ("dog", ["4", 0], "Subject: dog"), ("barn", ["5", 0], "Subject: barn")]
    new_id = list(loaders)[2]
    assert int(new_id) > max(int(k) for k in api if k not in loaders)  # a fresh id
    assert by_class(api, "Cones2ApplyResidual")[0]["bindings"] == [new_id, 0]
    assert wf.validate_api(api, SCHEMAS, skip_combo_check={"ckpt_name", "residual_name", "image"}) == []
    _, api = api_of(config(subject_list=[]))
    assert by_class(api, "Cones2LoadResidual") == [] and "bindings" not in by_class(api, "Cones2ApplyResidual")[0]


def test_the_same_class_twice_binds_by_occurrence():
    cfg = config(prompt="a dog and a dog on the beach", subject_list=[["dog", 2], ["barn", 5]],
                 color_context={"255,0,0": ["dog", 2.5]})
    c, api = api_of(cfg)
    # "barn" at token 5 is the second "dog": the residual binds to the word there
    assert c.bindings == (("dog", "dog", 1), ("barn", "dog", 2))
    assert conv.color_warnings(c, conv.word_tokenizer) == [
        "'dog' occurs 2 times in the prompt: the authors' code gives each occurrence the colour's region; this "
        "workflow gives it to the first (add a colour per occurrence, 'R,G,B: dog #2')"]


def test_token_indices_count_bpe_pieces_with_a_real_tokenizer():
    # "sunglasses" as two pieces shifts every later index by one
    def tokenize(text):
        out = []
        for w in conv.word_tokenizer(text):
            out += ["sun", "glasses</w>"] if w == "sunglasses</w>" else [w]
        return out

    prompt = "a dog with sunglasses and a mug"
    assert conv.subject_binding(prompt, "mug", 8, tokenize) == ("mug", 1)
    assert conv.subject_binding(prompt, "sunglasses", 5, tokenize) == ("sunglasses", 1)  # either piece
    assert conv.subject_binding(prompt, "sunglasses", 4, tokenize) == ("sunglasses", 1)
    # counting one token per word, index 8 is past the end
    with pytest.raises(conv.ConversionError, match="token index 8 is outside the prompt's tokens 1..7"):
        conv.subject_binding(prompt, "mug", 8, conv.word_tokenizer)


def test_a_multi_word_name_binds_to_its_words():
    assert conv.subject_binding("a robot toy and a robot toy", "robot toy", 6, conv.word_tokenizer) == ("robot toy", 2)


def test_colour_phrases_missing_from_the_prompt_are_named():
    c = conv.parse_official_config(config(color_context={"0,0,255": ["cat", 2.5]}))
    assert conv.color_warnings(c, conv.word_tokenizer)[0].startswith("the colour map's phrase 'cat' is not in the prompt")


@pytest.mark.parametrize("change, message", [
    ({"subject_list": [["cat", 2]]}, "subject_list names 'cat', which residual_dict does not have"),
    ({"subject_list": [["dog"]]}, "subject_list entry \\['dog'\\]: expected \\[name, token index\\]"),
    ({"color_context": {"red": ["dog", 2.5]}}, "color_context key 'red' is not a colour"),
    ({"color_context": {"255,0,300": ["dog", 2.5]}}, "0..255 each"),
])
def test_bad_configs_are_refused_with_the_field_named(change, message):
    with pytest.raises(conv.ConversionError, match=message):
        conv.parse_official_config(config(**change))
    cfg = config()
    del cfg[0]["layout"]
    with pytest.raises(conv.ConversionError, match="the config lacks layout"):
        conv.parse_official_config(cfg)


def test_hex_colour_keys_are_read():
    c = conv.parse_official_config(config(color_context={"#ffc000": "mug"}))
    assert c.colors == (((255, 192, 0), "mug", 2.5),)


def _authors_files(tmp_path, residuals=("dog", "mug")):
    (tmp_path / "residuals").mkdir()
    (tmp_path / "layouts").mkdir()
    for name in residuals:
        torch.save(torch.randn(1024) * 0.05, tmp_path / "residuals" / f"{name}.pt")
    (tmp_path / "layouts" / "layout.png").write_bytes((WORKFLOWS / "images" / "official_layout_768.png").read_bytes())
    path = tmp_path / "my_config.json"
    path.write_text(json.dumps(config()))
    return path


def test_the_command_writes_the_workflows_residuals_and_layout(tmp_path, capsys):
    path = _authors_files(tmp_path)
    out = tmp_path / "out"
    assert conv.main([str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "subject 'dog' at token 5 -> phrase 'dog', occurrence 1" in printed
    api = json.loads((out / "api" / "my_config.json").read_text())
    assert not (out / "my_config.json").exists()  # the API form only: the frontend opens it too
    assert [r["residual_name"] for r in by_class(api, "Cones2LoadResidual")] == ["mug.safetensors", "dog.safetensors"]
    assert by_class(api, "LoadImage") == [{"image": "layout.png"}]
    assert (out / "images" / "layout.png").read_bytes() == (tmp_path / "layouts" / "layout.png").read_bytes()
    residual = load_residual(out / "cones2_residuals" / "dog.safetensors")
    assert residual.subject == "dog" and residual.tensor.shape == (1, 1024)
    assert torch.equal(residual.tensor[0], torch.load(tmp_path / "residuals" / "dog.pt"))
    # a second run keeps the converted residuals
    assert conv.main([str(path), "-o", str(out)]) == 0
    assert "kept the existing" in capsys.readouterr().out


def test_a_missing_residual_fails_but_still_writes_the_workflow(tmp_path, capsys):
    path = _authors_files(tmp_path, residuals=("mug",))
    out = tmp_path / "out"
    assert conv.main([str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "residual 'residuals/dog.pt' for 'dog' not found" in err and "dog.safetensors" in err
    assert (out / "api" / "my_config.json").is_file() and (out / "cones2_residuals" / "mug.safetensors").is_file()


def test_bind_overrides_a_token_index(tmp_path, capsys):
    path = _authors_files(tmp_path)
    out = tmp_path / "out"
    assert conv.main([str(path), "-o", str(out), "--bind", "dog=dog#1", "--tolerance", "24"]) == 0
    api = json.loads((out / "api" / "my_config.json").read_text())
    assert by_class(api, "Cones2LayoutFromColorMap")[0]["tolerance"] == 24.0
