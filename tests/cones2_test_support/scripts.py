"""Import the pack's command-line scripts (scripts/*.py) in tests: they import each other as top-level modules."""

import sys

from .pack import ROOT

SCRIPTS = ROOT / "scripts"
WORKFLOWS = ROOT / "workflows"


def scripts_on_path() -> None:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))


def official_example_dir():
    """The authors' example (never copied into the repository), where the project keeps it, or None."""
    import os
    from pathlib import Path

    for c in (os.environ.get("CONES2_OFFICIAL_EXAMPLE", ""), ROOT.parents[1] / "shared" / "official-example",
              ROOT.parent / "shared" / "official-example", "/work/shared/official-example"):
        if c and (Path(c) / "guidance_config_example.json").is_file():
            return Path(c)
    return None
