"""training.file_names: file-name stems from phrases and typed names; workflow file names kept in their folder."""

import re

import pytest
from cones2.training.file_names import resolve_in_folders, slug
from hypothesis import given
from hypothesis import strategies as st


def test_phrases_become_readable_stems():
    assert slug("dog") == "dog"
    assert slug("  robot toy ") == "robot_toy"
    assert slug("my dog: Rex!") == "my_dog_Rex"
    assert slug("../etc/passwd") == "etc_passwd"
    assert slug("...") == "subject" and slug("", fallback="residual") == "residual"
    assert slug("a" * 100) == "a" * 60


@given(st.text(max_size=200))
def test_any_text_gives_a_safe_nonempty_stem(text):
    s = slug(text)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,59}", s)  # never hidden, never a path


# --- resolve_in_folders: a workflow's file name, inside its folder or nowhere ----------------------


@pytest.fixture
def folders(tmp_path):
    """(folder, a file outside it, a second folder); the folder holds dog.pt, sub/cat.pt and links."""
    folder, other, outside = tmp_path / "res", tmp_path / "extra", tmp_path / "outside"
    for d in (folder / "sub", other, outside):
        d.mkdir(parents=True)
    (folder / "dog.pt").write_bytes(b"dog")
    (folder / "sub" / "cat.pt").write_bytes(b"cat")
    (other / "owl.pt").write_bytes(b"owl")
    victim = outside / "victim.pt"
    victim.write_bytes(b"secret")
    (folder / "out.pt").symlink_to(victim)
    (folder / "outdir").symlink_to(outside, target_is_directory=True)
    (folder / "owl_link.pt").symlink_to(other / "owl.pt")
    return folder, victim, other


def test_names_inside_the_folder_resolve(folders):
    folder, _, _ = folders
    assert resolve_in_folders("dog.pt", [folder]) == (folder / "dog.pt").resolve()
    assert resolve_in_folders("sub/cat.pt", [folder]) == (folder / "sub" / "cat.pt").resolve()
    assert resolve_in_folders("./dog.pt", [folder]) == (folder / "dog.pt").resolve()


@pytest.mark.parametrize("name", [
    "../outside/victim.pt", "sub/../../outside/victim.pt", "..\\outside\\victim.pt", "..",
    "/etc/passwd", "../../../../../../etc/passwd", "C:\\Windows\\win.ini", "C:victim.pt", "\\\\server\\share\\x.pt",
    "out.pt", "outdir/victim.pt", "dog.pt\x00", "dog\x00.pt", "", "missing.pt", "sub", None, 3,
])
def test_names_leaving_the_folder_or_missing_resolve_to_nothing(folders, name):
    folder, victim, _ = folders
    assert (folder / "../outside/victim.pt").is_file() and (folder / "out.pt").is_file()  # naive joins reach it
    assert resolve_in_folders(name, [folder]) is None


def test_the_absolute_path_of_a_file_inside_is_refused_too(folders):
    folder, _, _ = folders
    assert resolve_in_folders(str(folder / "dog.pt"), [folder]) is None


def test_a_link_into_another_listed_folder_is_followed(folders):
    folder, _, other = folders
    assert resolve_in_folders("owl_link.pt", [folder]) is None
    assert resolve_in_folders("owl_link.pt", [folder, other]) == (other / "owl.pt").resolve()
    assert resolve_in_folders("owl.pt", [folder, other]) == (other / "owl.pt").resolve()


def test_a_folder_that_is_a_link_is_followed(folders, tmp_path):
    folder, _, _ = folders
    (tmp_path / "linked").symlink_to(folder, target_is_directory=True)
    assert resolve_in_folders("dog.pt", [tmp_path / "linked"]) == (folder / "dog.pt").resolve()


def test_suffixes_limit_what_resolves(folders):
    folder, _, _ = folders
    assert resolve_in_folders("dog.pt", [folder], (".safetensors",)) is None
    assert resolve_in_folders("dog.pt", [folder], (".safetensors", ".pt")) is not None


@given(st.lists(st.sampled_from(list("./\\\x00ab") + ["..", "outside", "victim.pt", "dog.pt", "sub"]),
                max_size=12).map("".join))
def test_any_name_resolves_inside_the_folder_or_not_at_all(tmp_path_factory, name):
    base = tmp_path_factory.getbasetemp() / "resolve_any"
    folder, outside = base / "res", base / "outside"
    if not folder.exists():
        (folder / "sub").mkdir(parents=True)
        outside.mkdir()
        (folder / "dog.pt").write_bytes(b"dog")
        (outside / "victim.pt").write_bytes(b"secret")
        (folder / "sub" / "outside").symlink_to(outside, target_is_directory=True)
    found = resolve_in_folders(name, [folder])
    assert found is None or found.is_relative_to(folder.resolve())
