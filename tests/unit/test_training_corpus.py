"""The generated sentence corpus (paper, Eq. 3 and 5) and the authors' templates."""

import re

import pytest
from cones2.training import corpus
from hypothesis import given, settings
from hypothesis import strategies as st


def count_phrase(sentence: str, phrase: str) -> int:
    return len(re.findall(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", sentence))


def test_the_corpus_is_deterministic_large_and_unique():
    a = corpus.subject_sentences("dog", 1000)
    b = corpus.subject_sentences("dog", 1000)
    assert a == b
    assert len(a) == 1000 and len(set(a)) == 1000
    assert a[:5] == list(corpus.iter_subject_sentences("dog"))[:5]


def test_every_sentence_holds_the_phrase_exactly_once():
    for phrase in ("dog", "robot toy", "tree", "red car", "cat"):
        sentences = corpus.subject_sentences(phrase, 1000)
        assert len(sentences) == 1000
        assert all(count_phrase(s, phrase) == 1 for s in sentences), phrase


def test_parts_that_contain_a_phrase_word_are_left_out():
    for s in corpus.subject_sentences("tree", 1000):
        assert "near a tree" not in s
    assert not any("next to a cat" in s for s in corpus.subject_sentences("cat", 1000))


def test_the_corpus_mixes_every_pattern_and_part_list():
    sentences = corpus.subject_sentences("dog", 1000)
    assert any(s.startswith("a photo of a dog") for s in sentences)
    assert any(s.startswith("a dog ") or s.startswith("the dog ") for s in sentences)
    styles = sum(any(s.startswith(st_) for s in sentences) for st_ in corpus.STYLES)
    scenes = sum(any(sc in s for s in sentences) for sc in corpus.SCENES)
    relations = sum(any(r in s for s in sentences) for r in corpus.RELATIONS)
    assert styles == len(corpus.STYLES) and scenes == len(corpus.SCENES) and relations == len(corpus.RELATIONS)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8), min_size=1, max_size=3))
def test_any_phrase_gets_a_thousand_sentences_each_holding_it_once(words):
    phrase = " ".join(words)
    sentences = corpus.subject_sentences(phrase, 1000)
    assert len(sentences) >= 1000
    assert all(count_phrase(s, phrase) >= 1 for s in sentences)
    # word-level: no other part of the sentence repeats a word of the phrase
    banned = set(words)
    for s in sentences[:200]:
        rest = re.sub(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", " ", s, count=1)
        assert not (set(re.findall(r"[a-z0-9]+", rest)) & banned), (phrase, s)


def test_articles_follow_the_phrase():
    assert corpus.fill("a photo of {a} {}", "apple") == "a photo of an apple"
    assert corpus.fill("a photo of {a} {}", "dog") == "a photo of a dog"
    assert corpus.fill("{}", "  robot   toy ") == "robot toy"
    assert "an apple" in " ".join(corpus.subject_sentences("apple", 50))
    assert " a apple" not in " ".join(corpus.subject_sentences("apple", 1000))


def test_official_templates_are_the_authors_27_verbatim():
    assert len(corpus.OFFICIAL_TEMPLATES) == 27
    out = corpus.official_sentences("apple")
    assert out[0] == "a photo of a apple"  # the authors do not fix articles
    assert out[-1] == "a photo of a small apple"
    assert all(count_phrase(s, "apple") == 1 for s in out)


@pytest.mark.parametrize("phrase", ["photo", "table", "red"])
def test_phrases_that_clash_with_part_words_still_get_a_thousand_sentences(phrase):
    sentences = corpus.subject_sentences(phrase, 1000)
    assert len(sentences) == 1000
    assert all(count_phrase(s, phrase) == 1 for s in sentences)


def test_a_phrase_made_of_a_function_word_gets_fewer_sentences_but_each_holds_it_once():
    sentences = corpus.subject_sentences("a", 1000)
    assert 100 < len(sentences) < 1000
    assert all(count_phrase(s, "a") == 1 for s in sentences)
