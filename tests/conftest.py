"""Shared test setup: import the pack's core as ``cones2`` (see cones2_test_support/pack.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # for cones2_test_support only

from cones2_test_support.pack import import_pack_core  # noqa: E402

import_pack_core()
