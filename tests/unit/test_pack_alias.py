"""The ``cones2`` alias: one implementation (scripts/pack_alias.py), and the checkout's root never on sys.path."""

import sys

import cones2_test_support.pack as test_pack
from cones2.scripts import pack_alias


def test_tests_and_scripts_share_one_alias():
    assert test_pack.import_pack_core.__code__.co_filename == pack_alias.import_pack_core.__code__.co_filename \
        == pack_alias.__file__
    assert test_pack.ROOT == pack_alias.ROOT and (pack_alias.ROOT / "training" / "trainer.py").is_file()


def test_the_alias_maps_the_checkout_and_takes_its_root_off_sys_path(monkeypatch):
    root = pack_alias.ROOT
    monkeypatch.setattr(sys, "path", [str(root), str(root / "scripts"), *sys.path])
    pkg = pack_alias.import_pack_core()
    assert str(root) not in sys.path and str(root / "scripts") in sys.path
    assert pkg is sys.modules["cones2"] and pkg.__path__ == [str(root)]
    assert pack_alias.import_pack_core() is pkg  # idempotent
    import cones2.training.residual_file as rf

    assert rf.__file__ == str(root / "training" / "residual_file.py")
