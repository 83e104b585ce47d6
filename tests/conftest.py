"""Shared test setup: import the pack's core as ``cones2`` (scripts/pack_alias.py)."""

from cones2_test_support.pack import import_pack_core

import_pack_core()
