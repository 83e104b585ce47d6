"""The headless runner without a server: input overrides, node selection, error formatting, the formats it takes."""

import base64
import json
import socket

import pytest
from cones2.scripts import run_workflow as rw
from cones2_test_support.scripts import WORKFLOWS
from hypothesis import given
from hypothesis import strategies as st


def graph():
    return json.loads((WORKFLOWS / "api" / "three_subjects_same_class.json").read_text())


def two_prompt_graph():
    """Two prompts combined into 'positive' (a case where --prompt must refuse to guess)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}, "_meta": {"title": "Load"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a"}, "_meta": {"title": "A"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "b"}, "_meta": {"title": "B"}},
        "4": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["3", 0]},
              "_meta": {"title": "Combine"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "neg"}, "_meta": {"title": "N"}},
        "6": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["1", 0], "positive": ["4", 0],
                                                           "negative": ["5", 0], "noise_seed": 3},
              "_meta": {"title": "Sampler"}},
    }


# --- --set ----------------------------------------------------------------------------------

def test_set_parses_selector_input_and_value():
    assert rw.parse_set("KSampler.steps=30") == rw.SetOverride("KSampler", "steps", "30")
    assert rw.parse_set("title:Subject 1: first dog.phrase=cat") == rw.SetOverride(
        "title:Subject 1: first dog", "phrase", "cat")
    assert rw.parse_set("3.text=a = b") == rw.SetOverride("3", "text", "a = b")  # '=' in the value is kept
    assert rw.parse_set("title:v1.5 model.ckpt_name=x").selector == "title:v1.5 model"  # dots in the selector
    for bad in ("steps=3", "KSampler.steps", ".steps=3", "KSampler.=3"):
        with pytest.raises(rw.UsageError, match="SELECTOR.INPUT=VALUE"):
            rw.parse_set(bad)
    with pytest.raises(rw.UsageError, match="not JSON"):
        rw.parse_set("3.seed=[1,", is_json=True)


@given(st.text(min_size=1).filter(lambda s: "=" not in s and s.strip() == s and s.strip()),
       st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True), st.text())
def test_set_round_trips_any_selector_input_and_value(selector, name, value):
    o = rw.parse_set(f"{selector}.{name}={value}")
    assert (o.selector, o.input, o.value) == (selector, name, value)


def test_values_take_the_type_of_the_current_value():
    api = graph()
    rw.apply_set(api, rw.parse_set("12.steps=30"))
    rw.apply_set(api, rw.parse_set("12.cfg=6"))
    rw.apply_set(api, rw.parse_set("12.self_recurrence=yes"))
    rw.apply_set(api, rw.parse_set("8.text=123"))  # a prompt stays text
    inputs = api["12"]["inputs"]
    assert inputs["steps"] == 30 and inputs["cfg"] == 6.0 and isinstance(inputs["cfg"], float)
    assert inputs["self_recurrence"] is True and api["8"]["inputs"]["text"] == "123"
    with pytest.raises(rw.UsageError, match="is a whole number; got 'many'"):
        rw.apply_set(api, rw.parse_set("12.steps=many"))
    with pytest.raises(rw.UsageError, match="is linked to another node"):
        rw.apply_set(api, rw.parse_set("12.model=3"))
    rw.apply_set(api, rw.parse_set('12.model=["2", 0]', is_json=True))
    assert inputs["model"] == ["2", 0]


def test_selectors_match_id_then_title_then_class_and_set_every_match():
    api = graph()
    assert rw.select_nodes(api, "12") == ["12"]
    assert rw.select_nodes(api, "positive PROMPT") == ["8"]  # titles ignore case
    assert rw.select_nodes(api, "Cones2LoadResidual") == ["4", "5", "6"]
    assert rw.select_nodes(api, "class:Cones2LoadResidual") == ["4", "5", "6"]
    assert rw.select_nodes(api, "title:Subject 3: barn") == ["6"]
    changes = rw.apply_set(api, rw.parse_set("class:Cones2LoadResidual.strength=0.5"))
    assert len(changes) == 3 and all(api[k]["inputs"]["strength"] == 0.5 for k in ("4", "5", "6"))
    with pytest.raises(rw.UsageError, match="no node matches 'id:Positive prompt'; the workflow has: node 2"):
        rw.select_nodes(api, "id:Positive prompt")


# --- convenience flags ----------------------------------------------------------------------

def test_seed_sets_every_seed_and_noise_seed():
    api = two_prompt_graph()
    assert rw.set_seed(api, 9) == ["node 6 (KSamplerAdvanced, 'Sampler') input 'noise_seed' = 9"]
    with pytest.raises(rw.UsageError, match="no node has a seed"):
        rw.set_seed({"1": {"class_type": "X", "inputs": {"seed": ["2", 0]}}}, 1)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_seed_lists_and_ranges(seeds):
    assert rw.parse_seeds(",".join(map(str, seeds))) == seeds
    a, b = sorted(seeds[:2] * 2)[:2]
    if b - a < 10000:
        assert rw.parse_seeds(f"{a}-{b}") == list(range(a, b + 1))


def test_bad_seeds_are_refused():
    for bad in ("x", "-1", "3-1", "1,,2", "0-20000"):
        with pytest.raises(rw.UsageError, match="--seed"):
            rw.parse_seeds(bad)


def test_prompt_finds_the_text_that_feeds_positive_and_refuses_to_guess():
    api = graph()
    assert rw.set_prompt(api, "a dog and a dog near a barn", "positive") == [
        "node 8 (Cones2ApplyResidual, 'Positive prompt') input 'text' = 'a dog and a dog near a barn'"]
    rw.set_prompt(api, "blurry", "negative")
    assert api["9"]["inputs"]["text"] == "blurry"
    api = two_prompt_graph()
    with pytest.raises(rw.UsageError, match="several prompt nodes feed 'positive'.*node 2.*node 3"):
        rw.set_prompt(api, "x", "positive")
    rw.set_prompt(api, "ugly", "negative")
    assert api["5"]["inputs"]["text"] == "ugly"


def test_residual_picks_by_phrase_occurrence_file_or_title():
    api = graph()
    rw.set_residual(api, "dog#2=other_dog.safetensors")
    rw.set_residual(api, "barn=my_barn.safetensors")
    rw.set_residual(api, "dog1=first.safetensors")  # the current file name, without extension
    assert [api[k]["inputs"]["residual_name"] for k in ("4", "5", "6")] == [
        "first.safetensors", "other_dog.safetensors", "my_barn.safetensors"]
    with pytest.raises(rw.UsageError, match="more than one residual node matches 'dog'"):
        rw.set_residual(api, "dog=x.safetensors")
    with pytest.raises(rw.UsageError, match="has 3 residual nodes; say which"):
        rw.set_residual(api, "x.safetensors")
    with pytest.raises(rw.UsageError, match="no residual node matches 'cat'"):
        rw.set_residual(api, "cat=x.safetensors")
    one = json.loads((WORKFLOWS / "api" / "two_subjects_boxes.json").read_text())
    rw.set_residual(one, "Subject 2: flower=rose.safetensors")  # by title
    assert one["5"]["inputs"]["residual_name"] == "rose.safetensors"


def test_residual_at_file_carries_the_local_file_in_the_workflow(tmp_path):
    data = bytes(range(256)) * 20
    (tmp_path / "my_dog.safetensors").write_bytes(data)
    api = graph()
    before = {k: dict(api[k]["inputs"]) for k in ("4", "5")}
    changes = rw.set_residual(api, f"dog#2=@{tmp_path / 'my_dog.safetensors'}")
    node = api["5"]
    assert node["class_type"] == "Cones2InlineResidual" and node["_meta"] == graph()["5"]["_meta"]
    assert base64.b64decode(node["inputs"]["residual_base64"]) == data
    assert "residual_name" not in node["inputs"]
    assert {k: v for k, v in node["inputs"].items() if k != "residual_base64"} == {
        k: v for k, v in before["5"].items() if k != "residual_name"}  # phrase, occurrence, strength, the chain link
    assert api["4"]["inputs"] == before["4"] and api["4"]["class_type"] == "Cones2LoadResidual"
    assert changes == [f"node 5 (Cones2InlineResidual, {node['_meta']['title']!r}) (was Cones2LoadResidual) input "
                       f"'residual_base64' = <{len(node['inputs']['residual_base64']):,} characters of base64: "
                       f"{tmp_path / 'my_dog.safetensors'}>"]
    # an inline node is found again by phrase, id or title, and a server file name turns it back
    rw.set_residual(api, "dog#2=@" + str(tmp_path / "my_dog.safetensors"))
    rw.set_residual(api, "5=back.safetensors")
    assert api["5"]["class_type"] == "Cones2LoadResidual" and api["5"]["inputs"] == {**before["5"],
                                                                                      "residual_name": "back.safetensors"}


def test_residual_at_file_refuses_what_cannot_be_inlined(tmp_path):
    (tmp_path / "dog.pt").write_bytes(b"x")
    with pytest.raises(rw.UsageError, match=r"an inline residual is a .safetensors file \(a .pt is a pickle: convert"):
        rw.set_residual(graph(), f"barn=@{tmp_path / 'dog.pt'}")
    with pytest.raises(rw.UsageError, match="cannot read .*missing.safetensors"):
        rw.set_residual(graph(), f"barn=@{tmp_path / 'missing.safetensors'}")
    with pytest.raises(rw.UsageError, match="no residual node matches 'cat'"):
        rw.set_residual(graph(), f"cat=@{tmp_path / 'dog.pt'}")


def test_print_prompt_writes_a_self_contained_workflow(tmp_path, capsys):
    (tmp_path / "rex.safetensors").write_bytes(b"residual bytes")
    path = WORKFLOWS / "api" / "two_subjects_boxes.json"
    assert rw.main([str(path), "--print-prompt", "--residual", f"dog=@{tmp_path / 'rex.safetensors'}"]) == 0
    api = json.loads(capsys.readouterr().out)
    assert api["4"]["class_type"] == "Cones2InlineResidual"
    assert base64.b64decode(api["4"]["inputs"]["residual_base64"]) == b"residual bytes"


class FakeViews:
    """The /view route of a client: only images are fetched through it."""

    def __init__(self):
        self.asked = []

    def get(self, route):
        self.asked.append(route)
        return b"png"


def test_a_trained_residual_in_the_history_is_saved_beside_the_images(tmp_path):
    data = b"safetensors bytes"
    entry = {"outputs": {
        "4": {"text": ["dog.safetensors"], "cones2_residual": [
            {"filename": "dog.safetensors", "subfolder": "", "type": "cones2_residuals", "subject": "dog",
             "base64": base64.b64encode(data).decode()}]},
        "9": {"images": [{"filename": "img_00001_.png", "subfolder": "", "type": "output"}]},
        "12": {"cones2_residual": [{"filename": "x.safetensors", "base64": "%%%"}]}}}
    (tmp_path / "node4_residual.safetensors").write_bytes(b"older run")
    client = FakeViews()
    files, others = rw.save_outputs(client, entry, tmp_path, {})
    assert [f.name for f in files] == ["node4_residual-1.safetensors", "img_00001_.png"]
    assert files[0].read_bytes() == data and (tmp_path / "node4_residual.safetensors").read_bytes() == b"older run"
    assert len(client.asked) == 1 and "img_00001_.png" in client.asked[0]  # the residual is never fetched
    assert others == ["node 4:\ndog.safetensors", "node 12: a residual output without readable base64 (skipped)"]


def test_boxes_replace_the_layout_text():
    api = graph()
    rw.set_boxes(api, ["dog: 0 0 256 256", " dog #2: 256 0 256 256 ", "barn: 0 256 512 256"])
    assert api["10"]["inputs"]["boxes"] == "dog: 0 0 256 256\ndog #2: 256 0 256 256\nbarn: 0 256 512 256"
    with pytest.raises(rw.UsageError, match="no Cones2LayoutBoxes node"):
        rw.set_boxes(two_prompt_graph(), ["dog: 0 0 8 8"])


def test_checkpoint_and_image(tmp_path):
    api = json.loads((WORKFLOWS / "api" / "colour_map_layout.json").read_text())
    rw.set_checkpoint(api, "sd21.safetensors")
    assert api["2"]["inputs"]["ckpt_name"] == "sd21.safetensors"
    (tmp_path / "mine.png").write_bytes(b"png")
    rw.set_image(api, str(tmp_path / "mine.png"), None)  # no client: the name only (--print-prompt)
    assert api["9"]["inputs"]["image"] == "mine.png"
    with pytest.raises(rw.UsageError, match="no file"):
        rw.set_image(api, str(tmp_path / "nope.png"), None)


def test_links_to_missing_nodes_are_caught_before_submitting():
    api = graph()
    api["12"]["inputs"]["model"] = ["77", 0]
    with pytest.raises(rw.UsageError, match="node 12 .* input 'model' links to node 77"):
        rw.check_links(api)


def test_print_prompt_applies_every_override_without_a_server(capsys):
    path = WORKFLOWS / "api" / "two_subjects_boxes.json"
    assert rw.main([str(path), "--print-prompt", "--seed", "4-5", "--prompt", "a dog and a flower",
                    "--residual", "dog=rex.safetensors", "--box", "dog: 0 0 64 64", "--box", "flower: 64 0 64 64",
                    "--set", "KSampler.steps=3", "--server", "http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    first, second = [json.loads(chunk) for chunk in out.replace("}\n{", "}\n\x00{").split("\x00")]
    assert (first["13"]["inputs"]["seed"], second["13"]["inputs"]["seed"]) == (4, 5)
    assert first["13"]["inputs"]["steps"] == 3 and first["7"]["inputs"]["text"] == "a dog and a flower"
    assert first["4"]["inputs"]["residual_name"] == "rex.safetensors"
    assert first["9"]["inputs"]["boxes"] == "dog: 0 0 64 64\nflower: 64 0 64 64"


def test_unreadable_workflows_get_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert rw.main([str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad} is not JSON (line 1")
    bad.write_text('{"a": 1}')
    assert rw.main([str(bad)]) == 2
    assert f"{bad} is not an API-format workflow" in capsys.readouterr().err
    assert rw.main([str(tmp_path / "missing.json")]) == 2


def test_a_ui_format_file_is_refused_with_how_to_export_it(capsys):
    ui = WORKFLOWS / "two_subjects_boxes.json"
    assert rw.main([str(ui), "--server", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {ui} is a UI-format workflow (as the frontend saves it); the runner takes the API "
                   "format: open it in ComfyUI and use Workflow > Export (API), or take the file of the same name "
                   "in workflows/api/\n")


# --- server messages --------------------------------------------------------------------------

def test_node_errors_are_printed_per_node_and_input():
    api = graph()
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "...", "extra_info": {}},
            "node_errors": {
                "4": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                  "details": "residual_name: 'dog1.safetensors' not in []",
                                  "extra_info": {"input_name": "residual_name", "received_value": "dog1.safetensors"}}],
                      "dependent_outputs": ["14"], "class_type": "Cones2LoadResidual"},
                "12": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                                   "details": "steps", "extra_info": {"input_name": "steps", "received_value": 0}},
                                  {"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                                   "details": "model, received_type(CLIP) mismatch input_type(MODEL)",
                                   "extra_info": {"input_name": "model"}}],
                       "dependent_outputs": ["14"], "class_type": "Cones2LayoutGuidedSampler"}}}
    assert rw.format_node_errors(body, api).splitlines() == [
        "error: Prompt outputs failed validation",
        "  node 4 (Cones2LoadResidual, 'Subject 1: first dog') input 'residual_name': Value not in list: "
        "'dog1.safetensors' not in []",
        "  node 12 (Cones2LayoutGuidedSampler, 'Cones2 Layout Guided Sampler') input 'steps': "
        "Value 0 smaller than min of 1",
        "  node 12 (Cones2LayoutGuidedSampler, 'Cones2 Layout Guided Sampler') input 'model': "
        "Return type mismatch between linked nodes: received_type(CLIP) mismatch input_type(MODEL)",
    ]
    missing_class = {"error": {"type": "invalid_prompt", "message": "Cannot execute because node Foo does not exist.",
                               "details": "Node ID '#3'", "extra_info": {}}, "node_errors": {}}
    assert rw.format_node_errors(missing_class, api) == (
        "error: Cannot execute because node Foo does not exist.: Node ID '#3'")


def test_a_custom_validation_answer_repeated_per_input_is_printed_once():
    text = "Cones2LayoutGuidedSampler: weight is NaN (not a number); set it to a number from 0 to 1 (default 0.08)."
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"12": {"class_type": "Cones2LayoutGuidedSampler", "errors": [
                {"type": "custom_validation_failed", "message": "Custom validation failed for node",
                 "details": f"{name} - {text}", "extra_info": {"input_name": name}}
                for name in ("weight", "suppression", "start_percent", "end_percent", "denoise", "cfg")]}}}
    assert rw.format_node_errors(body, graph()).splitlines() == [
        "error: Prompt outputs failed validation",
        f"  node 12 (Cones2LayoutGuidedSampler, 'Cones2 Layout Guided Sampler'): {text}",
    ]


def test_execution_errors_name_the_node():
    msg = {"prompt_id": "p", "node_id": "8", "node_type": "Cones2ApplyResidual",
           "exception_type": "builtins.ValueError",
           "exception_message": "Cones2ApplyResidual: the phrase 'barn' is not in the prompt\n",
           "traceback": ["  File x\n", "    raise\n"]}
    assert rw.format_execution_error(msg, graph()) == (
        "error: node 8 (Cones2ApplyResidual, 'Positive prompt') failed: ValueError: "
        "Cones2ApplyResidual: the phrase 'barn' is not in the prompt")
    assert rw.format_execution_error(msg, graph(), verbose=True).endswith("  File x\n    raise")


def test_no_server_is_one_line(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert rw.main([str(WORKFLOWS / "api" / "two_subjects_boxes.json"), "--server", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: no ComfyUI server answers at http://127.0.0.1:{port}")
    assert "Traceback" not in err
