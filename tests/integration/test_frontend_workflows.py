"""The UI workflows in ComfyUI's real frontend (the pinned comfyui-frontend-package), in headless Chromium.

Each UI file loads with no missing node, no validation warning and no link fix-up, and the
frontend's own graphToPrompt gives exactly the shipped API file: the UI and API forms are the
same graph by the frontend's reckoning (the pack has no conversion of its own). Skipped without Chromium.
"""

import json

import pytest
from cones2_test_support.frontend import Frontend, chromium_path
from cones2_test_support.scripts import WORKFLOWS

NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="no Chromium (install Debian's chromium or set CHROMIUM) for the frontend test")


@pytest.fixture(scope="module")
def frontend(comfy_server):
    comfy_server.post("/api/settings/Comfy.TutorialCompleted", True)  # no template dialog over the canvas
    comfy_server.post("/api/settings/Comfy.Validation.Workflows", True)
    fe = Frontend(comfy_server.url).start()
    yield fe
    fe.stop()


LOAD_AND_EXPORT = """(async () => {
    document.querySelectorAll('.p-toast-message').forEach(e => e.remove());
    await window.app.loadGraphData(%s, true, true, %s);
    await new Promise(r => setTimeout(r, 300));
    const nodes = window.app.graph._nodes;
    const missing = nodes.filter(n => !(n.type in LiteGraph.registered_node_types)).map(n => n.type);
    const toasts = [...document.querySelectorAll('.p-toast-message')].map(e => e.innerText);
    const dialogs = [...document.querySelectorAll('.p-dialog')].map(e => e.innerText.slice(0, 300));
    const p = await window.app.graphToPrompt();
    return {missing, toasts, dialogs, output: p.output, count: nodes.length};
})()"""


@pytest.mark.parametrize("name", NAMES)
def test_the_frontend_opens_the_ui_form_and_exports_the_api_form(frontend, name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    result = frontend.evaluate(LOAD_AND_EXPORT % (json.dumps(ui), json.dumps(name)))
    assert result["missing"] == [] and result["dialogs"] == []
    assert result["toasts"] == [], result["toasts"]
    assert result["count"] == len(ui["nodes"])
    assert result["output"] == api  # the frontend's own graphToPrompt gives the shipped API file
