"""The shipped workflows: they parse, each UI form and its API form describe the same graph, and they are
in step with their specs (devtools/workflow_specs.py). Checked against the node schema snapshot; the
integration tests check the snapshot and the files against a real ComfyUI's /object_info."""

import json
import struct

import pytest
from cones2.devtools import make_workflows, workflow_specs
from cones2.devtools import node_schemas as wf
from cones2_test_support.scripts import WORKFLOWS

UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
SCHEMAS = make_workflows.load_schemas()
# Combos whose options are the files of one machine: the shipped values are placeholders.
PLACEHOLDER_INPUTS = {"ckpt_name", "residual_name", "image", "folder", "clip_name"}


def ids(paths):
    return [p.stem for p in paths]


def test_there_are_workflows_and_every_ui_form_has_an_api_form():
    assert {"two_subjects_boxes", "three_subjects_same_class", "colour_map_layout", "train_residual",
            "official_example"} <= set(ids(UI_FILES))
    assert ids(UI_FILES) == ids(API_FILES)


@pytest.mark.parametrize("path", UI_FILES, ids=ids(UI_FILES))
def test_the_template_folder_holds_only_ui_workflows(path):
    # ComfyUI lists workflows/*.json in its template browser; an API file there would not open.
    data = json.loads(path.read_text())
    assert wf.is_ui_workflow(data) and not wf.is_api_prompt(data)
    assert data["version"] == 0.4 and data["extra"]["frontendVersion"]
    assert data["last_node_id"] == max(n["id"] for n in data["nodes"])
    assert data["last_link_id"] == max((link[0] for link in data["links"]), default=0)


@pytest.mark.parametrize("path", API_FILES, ids=ids(API_FILES))
def test_api_files_are_api_prompts_with_titles(path):
    data = json.loads(path.read_text())
    assert wf.is_api_prompt(data) and not wf.is_ui_workflow(data)
    assert all(node["_meta"]["title"] for node in data.values())


@pytest.mark.parametrize("name", ids(UI_FILES))
def test_ui_and_api_forms_describe_the_same_graph(name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert wf.structural_diff(ui, api) == []  # the frontend's own export: tests/integration/test_frontend_workflows.py


@pytest.mark.parametrize("name", ids(API_FILES))
def test_api_forms_use_known_nodes_with_valid_inputs(name):
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert [str(p) for p in wf.validate_api(api, SCHEMAS, skip_combo_check=PLACEHOLDER_INPUTS)] == []


@pytest.mark.parametrize("path", UI_FILES, ids=ids(UI_FILES))
def test_ui_layout_is_readable(path):
    """No two nodes overlap (title bars included), and each group's box holds its members."""
    ui = json.loads(path.read_text())
    rects = {n["id"]: (n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]}
    items = sorted(rects.items())
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            overlap = ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]
            assert not overlap, f"nodes {a} and {b} overlap"
    for g in ui["groups"]:
        x, y, w, h = g["bounding"]
        inside = [n for n, r in rects.items() if x <= r[0] and y + 30 <= r[1] and r[2] <= x + w and r[3] <= y + h]
        assert inside, f"group {g['title']!r} holds no node"
    notes = [n for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes and all(n["widgets_values"][0].strip() for n in notes)


def test_files_are_in_step_with_their_specs(capsys):
    assert make_workflows.main(["--check"]) == 0, capsys.readouterr()


def test_each_spec_uses_only_inputs_its_nodes_have():
    for name, spec in workflow_specs.SPECS.items():
        graph = spec.build()
        for node in graph.nodes:
            if node.class_type in SCHEMAS:
                known = {d.name for d in wf.ordered_inputs(SCHEMAS[node.class_type])}
                assert set(node.inputs) <= known, (name, node.class_type, set(node.inputs) - known)


def test_layout_images_are_our_own_flat_colour_pngs():
    for name, (w, h, _, regions) in make_workflows.IMAGES.items():
        data = (WORKFLOWS / "images" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (w, h)
        for _, (x0, y0, x1, y1) in regions:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_the_colour_map_workflow_names_the_colours_of_its_image():
    api = json.loads((WORKFLOWS / "api" / "colour_map_layout.json").read_text())
    loader = next(n for n in api.values() if n["class_type"] == "LoadImage")
    colours = next(n for n in api.values() if n["class_type"] == "Cones2LayoutFromColorMap")["inputs"]["colors"]
    _, _, _, regions = make_workflows.IMAGES[loader["inputs"]["image"]]
    listed = {tuple(int(c) for c in line.split(":")[0].split(",")) for line in colours.splitlines()}
    assert listed == {colour for colour, _ in regions}


def test_box_workflows_keep_their_boxes_on_the_canvas():
    for name in ("two_subjects_boxes", "three_subjects_same_class"):
        api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
        boxes = next(n for n in api.values() if n["class_type"] == "Cones2LayoutBoxes")["inputs"]
        prompt = next(n for n in api.values() if n["class_type"] == "Cones2ApplyResidual")["inputs"]["text"]
        for line in boxes["boxes"].splitlines():
            phrase, numbers = line.split(":")
            x, y, w, h = map(int, numbers.split()[:4])
            assert x + w <= boxes["width"] and y + h <= boxes["height"]
            assert phrase.split("#")[0].strip() in prompt.split()
