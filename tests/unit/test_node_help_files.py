"""web/docs holds one help page per node id the pack registers (the frontend's help panel reads
WEB_DIRECTORY/docs/<NodeId>.md); the integration test checks each page against its node class."""

import re

from cones2_test_support.pack import ROOT


def test_one_page_per_node_id():
    ids = set()
    for module in (ROOT / "nodes").glob("*.py"):
        ids |= set(re.findall(r'^    NAME = "(\w+)"$', module.read_text(), re.M))
    assert len(ids) >= 17
    assert {p.stem for p in (ROOT / "web" / "docs").glob("*.md")} == ids


def test_pages_link_only_to_absolute_addresses():
    # The help panel shows a page at the app's own URL: a relative link or image there would be broken.
    for page in (ROOT / "web" / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            assert target.startswith("https://"), f"{page.name}: relative link {target!r}"
