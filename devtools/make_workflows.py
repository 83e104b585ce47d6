"""Write the shipped workflows from their specs (devtools/workflow_specs.py), in both formats.

From the checkout's root:

    python -m devtools.make_workflows                      # write every workflow whose nodes are known
    python -m devtools.make_workflows --server http://127.0.0.1:8188   # refresh node schemas first
    python -m devtools.make_workflows --check              # exit 1 if a file differs from its spec

For each spec NAME: ``workflows/NAME.json`` (UI format, opens in ComfyUI's frontend and its
template browser), its thumbnail ``workflows/NAME.jpg`` (the name the template browser asks for)
and ``workflows/api/NAME.json`` (API format, for scripts/run_workflow.py and POST /prompt), plus
the layout images in ``workflows/images/``. The node schemas (the
/object_info entries of every node the specs use) are kept in devtools/workflow_schemas.json so
that writing and checking need no ComfyUI; ``--server`` refreshes them from a running ComfyUI
with the pack installed. A spec that uses a node without a schema is skipped and named.
Standard library only (and the pack's own family facts, through the alias).
"""

from __future__ import annotations

if __name__ == "__main__" and __package__ == "devtools":
    # `python -m devtools.make_workflows`: run the copy imported through the pack alias, since the
    # specs read the family facts (checkpoint names) from the pack's training/model_families.py
    import sys

    from scripts.pack_alias import import_pack_core

    import_pack_core()
    from cones2.devtools.make_workflows import main

    sys.exit(main())

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import workflow_specs
from .node_schemas import ordered_inputs
from .placeholder_images import PHOTOS, png_bytes
from .workflow_builder import Graph
from .workflow_thumbnails import thumbnail

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"
IMAGES_DIR = WORKFLOWS / "images"
SCHEMAS = Path(__file__).resolve().parent / "workflow_schemas.json"
# Combo lists that name files on one machine (models, inputs) are not kept in the snapshot.
FILE_LIKE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|png|jpe?g|webp|gif|bmp|tiff?)$", re.I)
MACHINE_LISTS = ("ckpt_name", "residual_name", "folder")  # combos that list files or folders only
SCHEMA_KEYS = ("input", "input_order", "output", "output_name", "output_is_list", "name", "display_name",
               "category", "output_node")


# --- node schemas -------------------------------------------------------------------------

def load_schemas(path: Path = SCHEMAS) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def trim_schema(entry: dict, machine_lists: bool = False) -> dict:
    """The parts of an /object_info entry the generator uses; machine-specific lists emptied."""
    out = {k: entry[k] for k in SCHEMA_KEYS if k in entry}
    out["input"] = {}
    for section in ("required", "optional"):
        items = (entry.get("input") or {}).get(section)
        if items is None:
            continue
        trimmed = {}
        for name, spec in items.items():
            spec = list(spec)
            if isinstance(spec[0], list) and not machine_lists:
                spec[0] = _portable_options(name, spec)
            trimmed[name] = spec
        out["input"][section] = trimmed
    return out


def _portable_options(name: str, spec: list) -> list:
    """A combo's options without the names of one machine's files (models, inputs, checkpoints)."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("image_upload") or name in MACHINE_LISTS:
        return []
    return [v for v in spec[0] if not (isinstance(v, str) and FILE_LIKE.search(v))]


def fetch_schemas(server: str, classes: set[str]) -> tuple[dict, list[str]]:
    try:
        with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=60) as r:
            info = json.loads(r.read())
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"error: cannot read {server}/object_info ({getattr(e, 'reason', e)}); is ComfyUI "
                         "running with the pack installed?") from None
    return {c: trim_schema(info[c]) for c in sorted(classes) if c in info}, sorted(classes - set(info))


# --- layout images (our own, drawn here) --------------------------------------------------

# name -> (width, height, background, [(colour, (x0, y0, x1, y1)), ...]); regions are rectangles.
IMAGES = {
    "colour_layout_512.png": (512, 512, (255, 255, 255), [
        ((255, 192, 0), (48, 232, 240, 472)),
        ((0, 112, 192), (280, 152, 480, 472)),
    ]),
    "official_layout_768.png": (768, 768, (255, 255, 255), [
        ((255, 192, 0), (72, 384, 360, 704)),
        ((255, 0, 0), (400, 344, 704, 704)),
    ]),
}


# --- writing ------------------------------------------------------------------------------

def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def outputs_for(graph: Graph, schemas: dict) -> dict[Path, bytes]:
    """Every file a graph gives: its UI and API forms, and the UI form's thumbnail for the template browser."""
    return {WORKFLOWS / f"{graph.name}.json": dumps(graph.to_ui(schemas)).encode(),
            API_DIR / f"{graph.name}.json": dumps(graph.to_api(schemas)).encode(),
            WORKFLOWS / f"{graph.name}.jpg": thumbnail(graph, IMAGES)}


def image_outputs() -> dict[Path, bytes]:
    return {**{IMAGES_DIR / name: png_bytes(*spec) for name, spec in IMAGES.items()},
            **{IMAGES_DIR / name: make() for name, make in PHOTOS.items()}}


def build_all(names: list[str] | None, schemas: dict) -> tuple[dict[Path, bytes], dict[str, list[str]]]:
    files: dict[Path, bytes] = {}
    skipped: dict[str, list[str]] = {}
    for name, spec in workflow_specs.SPECS.items():
        if names and name not in names:
            continue
        graph = spec.build()
        missing = sorted(graph.classes() - set(schemas))
        if missing:
            skipped[name] = missing
            continue
        for n in graph.nodes:  # fail early, naming the spec, on an input the node does not have
            known = {d.name for d in ordered_inputs(schemas[n.class_type])}
            bad = [k for k in n.inputs if k not in known]
            if bad:
                raise SystemExit(f"error: {name}: node {n.id} ({n.class_type}) has no input(s) {bad}")
        files.update(outputs_for(graph, schemas))
    return files, skipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="only these workflows (default: all)")
    p.add_argument("--server", help="refresh the node schemas from this running ComfyUI first")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is out of date")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in workflow_specs.SPECS]
    if unknown:
        p.error(f"no spec named {unknown}; specs: {', '.join(workflow_specs.SPECS)}")

    schemas = load_schemas()
    if args.server:
        classes = set().union(*(s.build().classes() for s in workflow_specs.SPECS.values()))
        fresh, absent = fetch_schemas(args.server, classes)
        schemas.update(fresh)
        if not args.check:
            SCHEMAS.write_text(dumps(dict(sorted(schemas.items()))))
            print(f"node schemas: {len(fresh)} refreshed from {args.server} -> {SCHEMAS.relative_to(ROOT)}")
        if absent:
            print(f"not on that server: {', '.join(absent)}")

    files, skipped = build_all(args.names or None, schemas)
    files.update(image_outputs())
    stale = []
    for path, data in sorted(files.items()):
        current = path.read_bytes() if path.exists() else None
        if current == data:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)}")
    for name, missing in skipped.items():
        print(f"skipped {name}: no schema for {', '.join(missing)} (run with --server against a ComfyUI "
              "that has these nodes)")
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale)
              + "\nrun: python -m devtools.make_workflows", file=sys.stderr)
        return 1
    if not stale:
        print("all workflow files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
