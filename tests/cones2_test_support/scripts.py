"""Where the pack's user tools and shipped workflows are, and the authors' example (for the converter's tests).

Tests import the tools as modules of the alias: ``from cones2.scripts import run_workflow``.
"""

import os
from pathlib import Path

from .pack import ROOT

SCRIPTS = ROOT / "scripts"
WORKFLOWS = ROOT / "workflows"


def official_example_dir() -> Path | None:
    """The authors' example (never copied into the repository), where the project keeps it, or None."""
    for c in (os.environ.get("CONES2_OFFICIAL_EXAMPLE", ""), ROOT.parents[1] / "shared" / "official-example",
              ROOT.parent / "shared" / "official-example", "/work/shared/official-example"):
        if c and (Path(c) / "guidance_config_example.json").is_file():
            return Path(c)
    return None
