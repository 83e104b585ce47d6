"""The workflow builder (devtools/): one spec, both formats. The frontend's own export checks the pair for the
shipped files (tests/integration/test_frontend_workflows.py); here the schema-free checks and the widget layout."""

import pytest
from cones2.devtools import node_schemas as wf
from cones2.devtools.workflow_builder import Graph
from hypothesis import given, settings
from hypothesis import strategies as st

KSAMPLER = {
    "input": {"required": {
        "model": ["MODEL", {}], "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000}], "cfg": ["FLOAT", {"default": 8.0}],
        "sampler_name": [["euler", "lms"], {}], "scheduler": [["normal", "karras"], {}],
        "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}]}},
    "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                 "negative", "latent_image", "denoise"]},
    "output": ["LATENT"], "output_name": ["LATENT"], "display_name": "KSampler"}
LOADER = {"input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
          "output": ["MODEL", "CLIP", "VAE"], "output_name": ["MODEL", "CLIP", "VAE"],
          "display_name": "Load Checkpoint"}
ENCODE = {"input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]}},
          "output": ["CONDITIONING"], "display_name": "CLIP Text Encode (Prompt)"}
LATENT = {"input": {"required": {"width": ["INT", {"default": 512, "min": 16}], "height": ["INT", {"default": 512}],
                                 "batch_size": ["INT", {"default": 1}]}}, "output": ["LATENT"]}
LOAD_IMAGE = {"input": {"required": {"image": [["x.png", "y.png"], {"image_upload": True}]}},
              "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]}
NOISE = {"input": {"required": {"noise_seed": ["INT", {"default": 0, "min": 0}]}}, "output": ["NOISE"]}
SCHEMAS = {"KSampler": KSAMPLER, "CheckpointLoaderSimple": LOADER, "CLIPTextEncode": ENCODE,
           "EmptyLatentImage": LATENT, "LoadImage": LOAD_IMAGE, "RandomNoise": NOISE}


def small_graph() -> Graph:
    g = Graph("small")
    g.note("read me", col=0)
    ckpt = g.node("CheckpointLoaderSimple", col=0, ckpt_name="b.safetensors")
    pos = g.node("CLIPTextEncode", col=1, title="Positive", clip=ckpt[1], text="a dog")
    neg = g.node("CLIPTextEncode", col=1, title="Negative", clip=ckpt[1], text="")
    lat = g.node("EmptyLatentImage", col=1, width=64, height=64)
    g.node("KSampler", col=2, model=ckpt[0], positive=pos[0], negative=neg[0], latent_image=lat[0], seed=7,
           steps=3, sampler_name="lms", control="randomize")
    return g


def test_widgets_values_follow_input_order_with_the_control_value_after_the_seed():
    ui = small_graph().to_ui(SCHEMAS)
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"] == [7, "randomize", 3, 8.0, "lms", "normal", 1.0]
    assert [i["name"] for i in sampler["inputs"]] == ["model", "positive", "negative", "latent_image"]
    latent = next(n for n in ui["nodes"] if n["type"] == "EmptyLatentImage")
    assert latent["widgets_values"] == [64, 64, 1]  # batch_size took its default


def test_links_name_their_slots_on_both_ends():
    ui = small_graph().to_ui(SCHEMAS)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, typ in ui["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[origin]["outputs"][origin_slot]["type"] == typ == nodes[target]["inputs"][target_slot]["type"]
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(nodes)


def test_the_ui_form_holds_the_api_forms_graph():
    g = small_graph()
    api = g.to_api(SCHEMAS)
    assert wf.structural_diff(g.to_ui(SCHEMAS), api) == []
    assert api["6"]["_meta"]["title"] == "KSampler" and api["3"]["_meta"]["title"] == "Positive"
    assert "1" not in api  # the note stays in the UI


def test_a_seed_named_int_without_the_flag_gets_a_control_value_too():
    g = Graph("noise")
    g.node("RandomNoise", col=0, noise_seed=5)
    ui = g.to_ui(SCHEMAS)
    assert ui["nodes"][0]["widgets_values"] == [5, "fixed"]
    assert g.to_api(SCHEMAS)["1"]["inputs"] == {"noise_seed": 5}


def test_an_image_upload_combo_is_followed_by_the_upload_button_value():
    g = Graph("img")
    g.node("LoadImage", col=0, image="y.png")
    ui = g.to_ui(SCHEMAS)
    assert ui["nodes"][0]["widgets_values"] == ["y.png", "image"]
    assert g.to_api(SCHEMAS)["1"]["inputs"] == {"image": "y.png"}


def test_an_unknown_input_or_a_missing_required_socket_is_refused_when_building():
    g = Graph("bad")
    g.node("CLIPTextEncode", col=0, text="x", clip=None, colour="red")
    with pytest.raises(ValueError, match="no input.*colour"):
        g.to_api(SCHEMAS)
    g = Graph("bad2")
    g.node("KSampler", col=0, seed=1)
    with pytest.raises(ValueError, match="needs its input 'model'"):
        g.to_api(SCHEMAS)


def test_validate_api_reports_each_problem_with_node_and_input():
    api = small_graph().to_api(SCHEMAS)
    api["6"]["inputs"].update(steps=0, sampler_name="bogus", positive=["4", 0], model=["99", 0])
    api["4"]["inputs"]["text"] = 5
    del api["5"]["inputs"]["width"]
    problems = [str(p) for p in wf.validate_api(api, SCHEMAS)]
    assert "node 6 (KSampler) input 'steps': 0 is below the minimum 1" in problems
    assert any(p.startswith("node 6 (KSampler) input 'sampler_name': 'bogus' is not one of") for p in problems)
    assert "node 6 (KSampler) input 'model': links to node 99, which is not in the graph" in problems
    assert "node 4 (CLIPTextEncode) input 'text': expects a string, got 5" in problems
    assert "node 5 (EmptyLatentImage) input 'width': required input is missing" in problems
    api["6"]["inputs"]["positive"] = ["2", 0]  # a MODEL into CONDITIONING
    assert any("gets MODEL from node 2, expects CONDITIONING" in str(p) for p in wf.validate_api(api, SCHEMAS))
    # machine-specific combos may hold placeholders
    api = small_graph().to_api(SCHEMAS)
    api["2"]["inputs"]["ckpt_name"] = "placeholder.safetensors"
    assert wf.validate_api(api, SCHEMAS, skip_combo_check={"ckpt_name"}) == []


def test_diff_api_names_the_differences():
    a = small_graph().to_api(SCHEMAS)
    b = small_graph().to_api(SCHEMAS)
    b["6"]["inputs"]["steps"] = 4
    b["3"]["_meta"]["title"] = "Other"
    assert wf.diff_api(a, b) == ["node 3: title 'Positive' vs 'Other'", "node 6 (KSampler) input 'steps': 3 vs 4"]


# --- property: any graph the builder makes has matching forms -------------------------

TYPES = ["A", "B", "C"]


@st.composite
def schemas_and_graph(draw):
    schemas = {}
    for c in range(draw(st.integers(1, 4))):
        required, optional, order = {}, {}, {"required": [], "optional": []}
        for i in range(draw(st.integers(0, 6))):
            kind = draw(st.sampled_from(["socket", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "seed",
                                         "forced", "upload"]))
            name = f"in{i}" if kind != "seed" else f"seed{i}"
            spec = {"socket": [draw(st.sampled_from(TYPES)), {}], "INT": ["INT", {"default": 1}],
                    "FLOAT": ["FLOAT", {"default": 0.5}], "STRING": ["STRING", {"multiline": draw(st.booleans())}],
                    "BOOLEAN": ["BOOLEAN", {"default": True}], "COMBO": [["p", "q", "r"], {}],
                    "seed": ["INT", {"default": 0, "control_after_generate": True}],
                    "forced": ["INT", {"forceInput": True}], "upload": [["f.png", "g.png"], {"image_upload": True}]}[kind]
            section = "optional" if kind in ("socket", "forced") or draw(st.booleans()) else "required"
            (required if section == "required" else optional)[name] = spec
            order[section].append(name)
        outputs = draw(st.lists(st.sampled_from([*TYPES, "INT"]), max_size=3))
        schemas[f"N{c}"] = {"input": {"required": required, "optional": optional}, "input_order": order,
                            "output": outputs, "display_name": f"Node {c}"}
    g = Graph("random")
    made = []
    for k in range(draw(st.integers(1, 6))):
        cls = draw(st.sampled_from(sorted(schemas)))
        inputs = {}
        for d in wf.ordered_inputs(schemas[cls]):
            sources = [(n, s) for n in made for s, t in enumerate(wf.output_types(schemas[n.class_type]))
                       if (not d.is_widget and t == d.type) or (d.is_widget and d.type == "INT" and t == "INT")]
            if sources and draw(st.booleans()):
                node, slot = draw(st.sampled_from(sources))
                inputs[d.name] = node[slot]
            elif d.is_widget and draw(st.booleans()):
                inputs[d.name] = draw({"INT": st.integers(-5, 5), "FLOAT": st.floats(-2, 2, allow_nan=False),
                                       "STRING": st.text(max_size=8), "BOOLEAN": st.booleans()}.get(
                    d.type_name, st.sampled_from(d.combo_options or ["x"])))
        made.append(g.node(cls, col=k % 3, title=draw(st.none() | st.text(min_size=1, max_size=6)), **inputs))
        if draw(st.booleans()):
            g.note(draw(st.text(max_size=20)), col=k % 3)
    return schemas, g


@settings(max_examples=150, deadline=None)
@given(schemas_and_graph())
def test_every_built_graph_has_matching_ui_and_api_forms(case):
    schemas, g = case
    api, ui = g.to_api(schemas), g.to_ui(schemas)
    for node in ui["nodes"]:
        if node["type"] in schemas:  # each widget slot holds the API input of its name (the frontend reads it so)
            layout = wf.widget_layout(schemas[node["type"]])
            assert len(node["widgets_values"]) == len(layout)
            linked = {i["name"] for i in node["inputs"] if "widget" in i}
            inputs = api[str(node["id"])]["inputs"]
            assert {k: v for k, v in zip(layout, node["widgets_values"], strict=True) if k and k not in linked} == {
                k: v for k, v in inputs.items() if k in layout and k not in linked}
    assert wf.structural_diff(ui, api) == []
    assert wf.validate_api(api, schemas) == []
