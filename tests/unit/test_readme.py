"""The README and docs/: every local link resolves, and the quick start is in step with its workflow."""

import json
import re

from cones2_test_support.pack import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_local_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("https://", "http://", "#")):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_quick_start_names_the_checkpoint_of_its_workflow_once():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    api = json.loads((ROOT / "workflows" / "api" / "first_guided_image.json").read_text())
    ckpt = next(n["inputs"]["ckpt_name"] for n in api.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert re.findall(r"[\w.-]+\.safetensors", quick) == [ckpt]  # one place to change it
    assert "workflows/api/first_guided_image.json" in quick and "pip install" in quick
