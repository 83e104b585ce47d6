"""Phrases typed in any Unicode form find their prompt words as each family's real tokenizers split them."""

import sys
import unicodedata

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def clip(request):
    return request.getfixturevalue(request.param)[1]


def tokenizer_words(clip, text, key):
    """The words of ``text`` as the host's own tokenizer ``key`` (transformers' CLIPTokenizer) splits it."""
    tok = getattr(clip.tokenizer, f"clip_{key}")
    pieces = [tok.inv_vocab[i] for i in tok.tokenizer(text)["input_ids"][1:-1]]
    words, word = [], ""
    for p in pieces:
        word += p.removesuffix("</w>")
        if p.endswith("</w>"):
            words.append(word)
            word = ""
    return tuple(words)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Co", "Cn")), max_size=24))
def test_phrase_words_split_like_the_hosts_tokenizer_in_any_normal_form(host, clip, text):
    pt = pack_module(host, "guidance.prompt_tokens")
    for key in clip.tokenize("").keys():  # SDXL: both 'l' and 'g'
        for form in ("NFC", "NFD"):
            assert pt.phrase_words(unicodedata.normalize(form, text)) == tokenizer_words(clip, text, key)


def bind(host, phrase, clip):
    rf = pack_module(host, "training.residual_file")
    family = pack_module(host, "comfy_adapters.model_families").clip_family(clip)
    residual = rf.make_residual(torch.full((1, family.width), 0.5), base_model=family.key)
    (bindings,) = host.run("Cones2BindResidual", residual=residual, phrase=phrase, occurrence=1, strength=1.0)
    return bindings


def test_a_decomposed_phrase_binds_to_the_composed_prompt_word(host, clip):
    nfd = unicodedata.normalize("NFD", "Café")
    assert nfd != unicodedata.normalize("NFC", nfd)
    (cond,) = host.run("Cones2ApplyResidual", clip=clip, text="a dog in a café", bindings=bind(host, nfd, clip))
    (plain,) = host.run("CLIPTextEncode", clip=clip, text="a dog in a café")
    changed = (cond[0][0] - plain[0][0]).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [5]  # <start> a dog in a café: the residual went to café's row


def test_the_phrase_not_found_message_shows_the_words_as_typed(host, clip):
    with pytest.raises(ValueError) as e:
        host.run("Cones2ApplyResidual", clip=clip, text="a 🐶 in a café", bindings=bind(host, "cat", clip))
    assert "(prompt words: 'a 🐶 in a café')" in str(e.value)
    assert "ðŁ" not in str(e.value) and "Ã" not in str(e.value)
