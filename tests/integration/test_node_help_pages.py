"""Every Cones2 node's help page (web/docs/<NodeId>.md, what the frontend's help panel shows) against
the real node classes, and the server serving it where the frontend asks for it."""

import re
import urllib.request

import pytest
from cones2.devtools.comfy_host import PACK_DIR_NAME
from cones2_test_support.pack import ROOT

DOCS = ROOT / "web" / "docs"


@pytest.fixture(scope="module")
def pack_nodes(host):
    return {name: cls for name, cls in host.nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("Cones2")}


def test_every_node_has_a_page_and_every_page_a_node(pack_nodes):
    assert len(pack_nodes) >= 17
    assert sorted(p.stem for p in DOCS.glob("*.md")) == sorted(pack_nodes)


def test_each_page_names_the_node_and_every_input_and_output(pack_nodes):
    problems = []
    for name, cls in sorted(pack_nodes.items()):
        page = (DOCS / f"{name}.md").read_text()
        if page.splitlines()[0] != f"# {cls.DISPLAY_NAME}":
            problems.append(f"{name}: the first line is not '# {cls.DISPLAY_NAME}'")
        headings = re.findall(r"^## (.+)$", page, re.M)
        for needed in ("Inputs", "Example", "Pitfalls"):
            if needed not in headings:
                problems.append(f"{name}: no '## {needed}' section")
        if not {"Output", "Outputs"} & set(headings):
            problems.append(f"{name}: no '## Output(s)' section")
        types = cls.INPUT_TYPES()
        inputs = [*types.get("required", {}), *types.get("optional", {})]
        outputs = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
        for word in inputs + outputs:
            if f"`{word}`" not in page:
                problems.append(f"{name}: `{word}` is not on its page")
        sockets = [k for k, spec in types.get("optional", {}).items()
                   if isinstance(spec[0], str) and spec[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN")]
        for word in sockets:  # an optional socket (a widget always has a value)
            if not re.search(rf"`{word}`[^\n|]*\(optional\)", page):
                problems.append(f"{name}: the optional input `{word}` is not marked (optional)")
    assert problems == []


def test_the_server_serves_each_page_where_the_help_panel_asks(comfy_server, pack_nodes):
    # frontend 1.27 and 1.58: /extensions/<pack folder>/docs/<NodeId>/<locale>.md, else .../docs/<NodeId>.md
    for name in sorted(pack_nodes):
        url = f"{comfy_server.url}/extensions/{PACK_DIR_NAME}/docs/{name}.md"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert response.read() == (DOCS / f"{name}.md").read_bytes()
    assert not any(e.endswith(".md") for e in comfy_server.get("/extensions"))  # never loaded as scripts
