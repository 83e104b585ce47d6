"""training.file_names.slug: file-name stems from phrases and typed names."""

import re

from cones2.training.file_names import slug
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
