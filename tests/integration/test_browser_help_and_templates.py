"""The template browser lists the pack's workflows with their thumbnails, and a node's help panel shows
its page from web/docs, in a real browser (headless Chromium) on a real ComfyUI server.

tests/browser/help_and_templates.mjs goes the user's way: Browse Templates -> the pack's category
-> the cards -> open first_guided_image; select its Cones2 Layout Boxes node -> Info. It runs on
every frontend (the pinned one, plus CONES2_FRONTEND_ROOTS); skipped, with the reason, where node,
Chromium or playwright-core is absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from cones2.devtools.comfy_host import PACK_DIR_NAME
from cones2_test_support.browser import BROWSER, CHROMIUM, FRONTENDS, NODE, skip_reason
from cones2_test_support.pack import ROOT
from PIL import Image

pytestmark = [pytest.mark.server, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]

WORKFLOWS = ROOT / "workflows"
UI_NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
HELP_PAGE = ROOT / "web" / "docs" / "Cones2LayoutBoxes.md"


@pytest.fixture(scope="module", params=FRONTENDS, ids=[f"frontend-{fe[0]}" for fe in FRONTENDS])
def seen(request, tmp_path_factory):
    """Run the browser script against a server of one frontend; return (result.json, its folder)."""
    from cones2_test_support.server import ComfyServer

    version, root = request.param
    server = ComfyServer(extra_args=["--front-end-root", root] if root else []).start()
    try:
        out = tmp_path_factory.mktemp(f"help-templates-{version}")
        proc = subprocess.run([NODE, str(BROWSER / "help_and_templates.mjs"), server.url, str(out), PACK_DIR_NAME],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CHROMIUM": CHROMIUM})
        result_file = out / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        assert proc.returncode == 0, (
            f"the browser script failed ({proc.returncode}); steps done: {result.get('steps')}\n"
            f"{result.get('error')}\n{proc.stderr[-3000:]}\nbrowser console: {result.get('console')}\n"
            f"server log:\n{server.log()[-3000:]}\nscreenshot of the failure: {out / 'failure.png'}")
        assert result["frontendVersion"] in (version, None), (result["frontendVersion"], version)
        return result, out
    finally:
        server.stop()


def test_the_template_browser_lists_every_ui_workflow_of_the_pack(seen):
    r, out = seen
    assert sorted(r["templates"]["names"]) == UI_NAMES
    assert Image.open(out / "templates.png").width >= 1000  # what it looked like


def test_every_template_card_shows_its_thumbnail(seen):
    r, _ = seen
    fetched = {f["path"]: f["status"] for f in r["fetched"]}
    for name in UI_NAMES:
        # the frontend asks for <name>.jpg beside the workflow, and the server has it
        assert fetched.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg") == 200, name
        images = r["templates"]["cards"][name]["images"]
        shown = [i for i in images if i["naturalWidth"] > 0 and i["visible"] and i["shownWidth"] > 50]
        width, height = Image.open(WORKFLOWS / f"{name}.jpg").size
        assert shown and all((i["naturalWidth"], i["naturalHeight"]) == (width, height) for i in shown), (
            name, images)


def test_a_template_opens_the_workflow_it_names(seen):
    r, _ = seen
    ui = json.loads((WORKFLOWS / "first_guided_image.json").read_text())
    assert r["templates"]["loaded"] == sorted(n["type"] for n in ui["nodes"])


def test_the_help_panel_shows_the_nodes_page_from_web_docs(seen):
    r, _ = seen
    fetched = {f["path"]: f["status"] for f in r["fetched"]}
    assert fetched.get(f"/extensions/{PACK_DIR_NAME}/docs/Cones2LayoutBoxes.md") == 200
    page = HELP_PAGE.read_text()
    prose = re.sub(r"```.*?```", "", page, flags=re.S)
    help_ = r["help"]
    # every heading of the page, rendered as a heading, in order
    assert help_["headings"] == re.findall(r"^#{1,3} (.+)$", prose, re.M)
    assert help_["tables"] == page.count("\n| --- |") + page.count("\n|---|")  # markdown tables became tables
    assert help_["codeBlocks"] >= page.count("```") // 2
    assert "dog #2: 288, 64, 224, 320, 2.0" in help_["text"]  # the grammar's example, verbatim
