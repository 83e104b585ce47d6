"""Phrase lookup over ComfyUI-shaped token chunks, without a tokenizer."""

import unicodedata

import pytest
import torch
from cones2.guidance.prompt_tokens import (
    PhraseNotFoundError,
    PromptTokens,
    byte_encoder,
    content_tokens,
    group_words,
    normalize_text,
    phrase_words,
    piece_text,
)
from cones2_test_support.tiny_text import tiny_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

START, END, PAD = 49406, 49407, 0
# word -> BPE pieces, as CLIP would split them ("hotdog" is two pieces, the last is "dog</w>")
PIECES = {
    "a": ["a</w>"], "dog": ["dog</w>"], "dogs": ["dogs</w>"], "hotdog": ["hot", "dog</w>"],
    "and": ["and</w>"], "robot": ["robot</w>"], "toy": ["toy</w>"], "on": ["on</w>"],
    "the": ["the</w>"], "beach": ["beach</w>"], ",": [",</w>"], ".": [".</w>"],
    "sunglasses": ["sun", "glasses</w>"], "mug": ["mug</w>"],
    # byte-level BPE pieces as SD2's tokenizer gives them for 'café' (NFC) and '🐶'
    "café": ["cafÃ©</w>"], "🐶": ["ðŁĲ¶</w>"], "über": ["Ã¼", "ber</w>"],
}
VOCAB = {p: i + 100 for i, p in enumerate(sorted({p for ps in PIECES.values() for p in ps}))}
INV = {i: p for p, i in VOCAB.items()}


def chunks_for(words, chunk_len=77, per_chunk=75):
    """ComfyUI-shaped chunks: [start, <=75 content, end, pad...] with (id, weight) pairs."""
    ids = [VOCAB[p] for w in words for p in PIECES[w]]
    chunks = []
    for k in range(0, max(len(ids), 1), per_chunk):
        body = ids[k:k + per_chunk]
        chunk = [(START, 1.0)] + [(t, 1.0) for t in body] + [(END, 1.0)]
        chunk += [(PAD, 1.0)] * (chunk_len - len(chunk))
        chunks.append(chunk)
    return chunks


def tokens_for(words, **kw):
    return PromptTokens.from_chunks(chunks_for(words, **kw), INV.__getitem__, START, END)


def test_rows_skip_start_end_and_padding():
    t = tokens_for(["a", "dog", "on", "the", "beach"])
    assert t.length == 77
    assert t.rows == (1, 2, 3, 4, 5)
    assert t.find("dog") == [(2,)]
    assert t.find("the beach") == [(4, 5)]


def test_whole_words_only():
    t = tokens_for(["a", "hotdog", "and", "dogs", "and", "a", "dog"])
    assert t.find("dog") == [(8,)]  # not the "dog</w>" piece inside "hotdog", not "dogs"
    assert t.find("hotdog") == [(2, 3)]


def test_occurrences_of_the_same_word_and_multi_token_phrases():
    t = tokens_for(["a", "dog", "and", "a", "dog", "and", "a", "robot", "toy"])
    assert t.occurrence("dog", 1) == (2,)
    assert t.occurrence("dog", 2) == (5,)
    assert t.occurrence("robot toy") == (8, 9)
    assert t.occurrence("Robot   TOY") == (8, 9)  # case and spacing as CLIP normalises them


def test_multi_piece_word_spans_all_its_rows():
    t = tokens_for(["a", "sunglasses", "on", "a", "mug"])
    assert t.occurrence("sunglasses") == (2, 3)


def test_phrase_split_across_chunks_keeps_its_rows():
    words = ["a"] * 74 + ["robot", "toy"]  # robot is token 75 of chunk 0, toy token 1 of chunk 1
    t = tokens_for(words)
    assert t.length == 154
    assert t.occurrence("robot toy") == (75, 78)


def test_padding_id_zero_is_not_content_but_an_embedding_slot_is():
    chunk = [(START, 1.0), (VOCAB["a</w>"], 1.0), (torch.zeros(1024), 1.0), (VOCAB["dog</w>"], 1.0), (END, 1.0)]
    chunk += [(PAD, 1.0)] * (77 - len(chunk))
    t = PromptTokens.from_chunks([chunk], INV.__getitem__, START, END)
    assert t.rows == (1, 2, 3)
    assert t.find("dog") == [(3,)]


def test_content_tokens_give_rows_tokens_and_weights_of_the_content_only():
    first = [(START, 1.0), (VOCAB["a</w>"], 1.0), (VOCAB["dog</w>"], 1.2, 3), (END, 1.0)] + [(PAD, 1.0)] * 73
    second = [(START, 1.0), (VOCAB["mug</w>"], 0.8), (END, 1.0), (VOCAB["dog</w>"], 1.0)] + [(PAD, 1.0)] * 73
    assert list(content_tokens([first, second], START, END)) == [
        (1, VOCAB["a</w>"], 1.0), (2, VOCAB["dog</w>"], 1.2), (78, VOCAB["mug</w>"], 0.8)]  # nothing after an end


def test_weighted_triples_with_word_ids_are_accepted():
    chunk = [(START, 1.0, 0), (VOCAB["dog</w>"], 1.2, 1), (END, 1.0, 0)] + [(PAD, 1.0, 0)] * 74
    assert PromptTokens.from_chunks([chunk], INV.__getitem__, START, END).find("dog") == [(1,)]


def test_missing_phrase_and_occurrence_messages():
    t = tokens_for(["a", "dog", "on", "the", "beach"])
    with pytest.raises(PhraseNotFoundError, match=r"'cat' is not in the prompt \(prompt words: 'a dog on the beach'\)"):
        t.occurrence("cat")
    with pytest.raises(PhraseNotFoundError, match="occurs 1 time.*occurrence 2 does not exist.*from 1 to 1"):
        t.occurrence("dog", 2)
    with pytest.raises(PhraseNotFoundError, match="has no words"):
        t.find("   ")
    with pytest.raises(PhraseNotFoundError, match="1 or more"):
        t.occurrence("dog", 0)


def test_phrase_words_split_like_clip():
    assert phrase_words("A Dog, on  the beach.") == ("a", "dog", ",", "on", "the", "beach", ".")
    assert phrase_words("dog's toy") == ("dog", "'s", "toy")
    assert phrase_words("42 cats") == ("4", "2", "cats")
    assert phrase_words("café") == ("cafÃ©",)  # UTF-8 bytes in the byte-level BPE alphabet, as pieces are
    # U+001F is whitespace to str.split() but a token to CLIP (not Unicode White_Space)
    assert phrase_words("dog\x1fcat") == ("dog", "ğ", "cat")


PHRASES = (("dog",), ("robot", "toy"), ("a", "dog"), ("sunglasses",), ("café",), ("dog", "dog"))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), phrase=st.sampled_from(PHRASES), copies=st.integers(0, 4))
def test_find_returns_the_rows_of_every_planted_copy(data, phrase, copies):
    """Copies of the phrase planted among words that share none of its words (nor a piece of them): find
    gives exactly the planted copies, at the rows where their pieces were put, across chunk borders too."""
    fillers = sorted(w for w in PIECES if w not in phrase and not set(PIECES[w]) & {p for w in phrase for p in PIECES[w]})
    gaps = data.draw(st.lists(st.lists(st.sampled_from(fillers), max_size=40), min_size=copies + 1, max_size=copies + 1))
    words, planted, k = [], [], 0  # k: content tokens so far; token k sits in chunk k // 75 at slot 1 + k % 75
    for i, gap in enumerate(gaps):
        for w in gap:
            words.append(w)
            k += len(PIECES[w])
        if i < copies:
            rows = []
            for w in phrase:
                words.append(w)
                for _ in PIECES[w]:
                    rows.append((k // 75) * 77 + 1 + k % 75)
                    k += 1
            planted.append(tuple(rows))
    assert tokens_for(words).find(" ".join(phrase)) == planted


# --- the token map as it is stored in conditioning (JSON text) ---------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), max_size=20), st.integers(min_value=77, max_value=231))
def test_the_json_form_round_trips_any_token_map(pieces, length):
    tokens = PromptTokens(length=length, rows=tuple(range(1, len(pieces) + 1)), pieces=tuple(pieces))
    text = tokens.to_json()
    assert isinstance(text, str) and PromptTokens.from_json(text) == tokens


@pytest.mark.parametrize("text", ["", "[]", '{"rows": [1], "pieces": ["a</w>"]}', '{"length": 77, "rows": [1, 2], '
                                  '"pieces": ["a</w>"]}', '{"length": "x", "rows": [], "pieces": []}'])
def test_text_that_is_not_a_token_map_is_refused(text):
    with pytest.raises(ValueError, match="not a Cones 2 token map"):
        PromptTokens.from_json(text)


# --- Unicode: phrases normalised as CLIP normalises the prompt; messages show the typed text --------


def test_a_decomposed_phrase_matches_the_composed_prompt_word():
    t = tokens_for(["a", "café", "and", "a", "🐶", "über"])
    nfd = unicodedata.normalize("NFD", "Café")
    assert nfd != "Café" and len(nfd) == 5
    assert t.occurrence(nfd) == t.occurrence("café") == (2,)
    assert t.occurrence("🐶") == (5,)
    assert t.occurrence(unicodedata.normalize("NFD", "ÜBER")) == (6, 7)  # a two-piece word


def test_messages_list_the_prompt_words_as_typed_not_in_the_bpe_alphabet():
    t = tokens_for(["a", "café", "and", "a", "🐶", "über"])
    with pytest.raises(PhraseNotFoundError) as e:
        t.occurrence("cat")
    assert "(prompt words: 'a café and a 🐶 über')" in str(e.value)
    assert "Ã" not in str(e.value) and "ðŁ" not in str(e.value)


def test_piece_text_decodes_pieces_and_marks_a_cut_character():
    assert piece_text("cafÃ©</w>") == "café" and piece_text("ðŁĲ¶</w>") == "🐶" and piece_text("dog") == "dog"
    assert piece_text("ðŁĲ") == "\ufffd"  # three of the emoji's four bytes: a word cut by truncation
    assert piece_text("<embedding></w>") == "<embedding>"


@settings(max_examples=150, deadline=None)
# unassigned code points (Cn) are left out: the regex module and the tokenizers library ship different
# Unicode versions, and a code point one of them has not assigned yet is a letter to the other
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn")), max_size=40))
def test_phrase_words_split_as_transformers_clip_tokenizer_does_in_nfd_and_nfc(text):
    """The oracle is the CLIPTokenizer class ComfyUI's tokenizer wraps (over a vocabulary of single bytes, so
    each word comes back as its bytes with '</w>' on the last one): its normalisation, its word split."""
    tokenizer = tiny_tokenizer()
    for form in ("NFD", "NFC"):
        typed = unicodedata.normalize(form, text)
        pieces = tokenizer.tokenize(typed)
        words = tuple(w.text for w in group_words(range(len(pieces)), pieces))
        assert phrase_words(typed) == words


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20))
def test_piece_text_inverts_the_byte_alphabet(word):
    enc = byte_encoder()
    assert piece_text("".join(enc[b] for b in word.encode("utf-8")) + "</w>") == word


def test_normalize_text_is_nfc_whitespace_and_lowercase():
    assert normalize_text(" A\u0301  Dog\t\nÉ ") == "á dog é"
