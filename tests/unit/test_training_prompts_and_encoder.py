"""Prompt ids with subject rows, and the trainable text encoder against transformers' CLIPTextModel."""

import pytest
import torch
from cones2.training.clip_text import (
    ClipTextConfig,
    ClipTextEncoder,
    ConcatTextEncoder,
    config_from_state_dict,
    encoder_from_state_dict,
    weights_fingerprint,
)
from cones2.training.prompt_ids import (
    PromptError,
    SpecialTokens,
    encode_prompts,
    occurrences,
    pad_ids,
    phrase_token_ids,
)
from cones2_test_support import tiny_text as tt


def test_phrase_ids_of_one_and_two_token_phrases():
    assert len(phrase_token_ids(tt.tokenize, "dog", tt.special_tokens())) == 1
    assert len(phrase_token_ids(tt.tokenize, "robot toy", tt.special_tokens())) == 2
    assert phrase_token_ids(tt.tokenize, "Dog") == phrase_token_ids(tt.tokenize, "dog")  # CLIP lowercases


@pytest.mark.parametrize("phrase", ["", "   ", "\n"])
def test_a_phrase_of_zero_tokens_is_refused_with_a_clear_message(phrase):
    with pytest.raises(PromptError, match="has no tokens. Type the subject's class word"):
        phrase_token_ids(tt.tokenize, phrase)


def test_a_prompt_long_phrase_is_refused():
    with pytest.raises(PromptError, match="tokens long; a subject phrase is a short class name"):
        phrase_token_ids(tt.tokenize, "a very long phrase that is really a whole prompt " * 2)


def test_padded_ids_and_subject_rows():
    sp = tt.special_tokens()
    pid = phrase_token_ids(tt.tokenize, "robot toy", sp)
    batch = encode_prompts(tt.tokenize, ["a robot toy", "a photo of the robot toy on a table"], pid, sp)
    assert batch.ids.shape == (2, 77)
    content = tt.tokenize("a robot toy")
    assert batch.ids[0].tolist() == [sp.start, *content, sp.end] + [sp.pad] * (77 - len(content) - 2)
    start0 = int(batch.subject_start[0])
    assert batch.ids[0, start0:start0 + 2].tolist() == list(pid)
    mask = batch.subject_mask()
    assert mask.sum(1).tolist() == [2, 2]
    rows = batch.subject_rows()
    assert torch.equal(batch.ids.gather(1, rows), torch.tensor([list(pid), list(pid)]))


def test_strict_prompts_name_the_problem_and_corpora_skip_bad_sentences():
    sp = tt.special_tokens()
    pid = phrase_token_ids(tt.tokenize, "dog", sp)
    with pytest.raises(PromptError, match="does not contain the phrase"):
        encode_prompts(tt.tokenize, ["a cat"], pid, sp)
    with pytest.raises(PromptError, match="holds the phrase 2 times"):
        encode_prompts(tt.tokenize, ["a dog and a dog"], pid, sp)
    with pytest.raises(PromptError, match="tokens long"):
        encode_prompts(tt.tokenize, ["dog " + "x" * 80], pid, sp)
    kept = encode_prompts(tt.tokenize, ["a cat", "a dog", "a dog and a dog", "my dog"], pid, sp, strict=False)
    assert kept.texts == ("a dog", "my dog")


def test_occurrences_and_padding():
    assert occurrences([1, 2, 3, 1, 2], [1, 2]) == [0, 3]
    assert occurrences([1, 1, 1], [1, 1]) == [0]
    assert pad_ids([5], SpecialTokens(start=1, end=2, pad=0, length=5)) == [1, 5, 2, 0, 0]


def hf_model(width=32, layers=3, heads=2, act="gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=tt.vocab_size(), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                         hidden_act=act, bos_token_id=tt.special_tokens().start, eos_token_id=tt.special_tokens().end,
                         pad_token_id=0)
    m = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # break symmetric inits (LayerNorm ones, zero biases)
    return m


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_the_encoder_reproduces_transformers_penultimate_layer_with_final_norm(act):
    hf = hf_model(act=act)
    ids = torch.tensor([tt.special_tokens().start, *tt.tokenize("a robot toy on a dog"), tt.special_tokens().end]
                       + [0] * 66)[None]
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        want = getattr(hf, "text_model", hf).final_layer_norm(out.hidden_states[-2])  # 4.x / 5.x
        ours = encoder_from_state_dict(hf.state_dict(), layer_index=-2, heads=2, activation=act)
        assert len(ours.layers) == 2  # the last layer is never stored
        torch.testing.assert_close(ours(ids), want, atol=1e-5, rtol=1e-5)
        last = encoder_from_state_dict(hf.state_dict(), layer_index=-1, heads=2, activation=act)
        torch.testing.assert_close(last(ids), out.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_state_dict_names_of_transformers_4_and_comfyui_load_too():
    hf = hf_model()
    sd = hf.state_dict()
    prefixed = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in sd.items()}
    prefixed["text_projection.weight"] = torch.zeros(32, 32)
    prefixed["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    a = encoder_from_state_dict(sd, heads=2)
    b = encoder_from_state_dict(prefixed, heads=2)
    ids = torch.randint(0, 500, (2, 77))
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))
    assert config_from_state_dict(prefixed).layers == 2
    with pytest.raises(ValueError, match="not a CLIP text transformer"):
        config_from_state_dict({"foo": torch.zeros(1)})


def test_the_copy_of_inference_tensors_trains_and_never_shares_storage():
    hf = hf_model()
    with torch.inference_mode():
        sd = {k: v.clone() for k, v in hf.state_dict().items()}  # as weights loaded inside a ComfyUI prompt
    enc = encoder_from_state_dict(sd, heads=2)
    ids = torch.randint(0, 500, (1, 77))
    enc(ids).sum().backward()
    assert enc.layers[0].mlp.fc1.weight.grad is not None
    with torch.no_grad():
        enc.final_layer_norm.weight.add_(1.0)
    assert not torch.equal(enc.final_layer_norm.weight, sd["text_model.final_layer_norm.weight"]
                           if "text_model.final_layer_norm.weight" in sd else sd["final_layer_norm.weight"])


def test_prefix_then_rest_equals_the_whole_and_trainable_parts():
    enc = ClipTextEncoder(ClipTextConfig(vocab_size=600, width=32, heads=2, mlp_width=64, layers=4))
    ids = torch.randint(0, 600, (3, 77))
    with torch.no_grad():
        whole = enc(ids)
        for start in range(5):
            torch.testing.assert_close(enc.forward_from(enc.embed_prefix(ids, start), start), whole)
    assert len(enc.trainable_parameters(0)) == len(list(enc.parameters()))
    last1 = enc.trainable_parameters(1)
    assert {id(p) for p in last1} == {id(p) for p in [*enc.layers[3].parameters(), *enc.final_layer_norm.parameters()]}
    assert enc.first_trained_layer(1) == 3 and enc.first_trained_layer(0) == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    enc = ClipTextEncoder(ClipTextConfig(vocab_size=600, width=32, heads=2, mlp_width=64, layers=2))
    ids = torch.randint(0, 600, (2, 77))
    grads = []
    for flag in (False, True):
        enc.zero_grad()
        enc.gradient_checkpointing = flag
        enc(ids).pow(2).sum().backward()
        grads.append(enc.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_fingerprint_changes_with_the_weights():
    enc = ClipTextEncoder(ClipTextConfig(vocab_size=600, width=32, heads=2, mlp_width=64, layers=2))
    a = weights_fingerprint(enc)
    with torch.no_grad():
        enc.layers[-1].mlp.fc2.weight[0, 0] += 1
    assert weights_fingerprint(enc) != a


def test_without_final_norm_the_encoder_gives_the_raw_hidden_state_and_stores_no_norm():
    hf = hf_model(act="quick_gelu")
    ids = torch.tensor([tt.special_tokens().start, *tt.tokenize("a dog"), tt.special_tokens().end] + [0] * 73)[None]
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True).hidden_states[-2]  # SDXL's rows: no final layer norm
        ours = encoder_from_state_dict(hf.state_dict(), layer_index=-2, heads=2, activation="quick_gelu",
                                       final_norm=False)
        torch.testing.assert_close(ours(ids), want, atol=1e-5, rtol=1e-5)
    assert not [k for k in ours.state_dict() if "final_layer_norm" in k]
    assert {id(p) for p in ours.trainable_parameters(1)} == {id(p) for p in ours.layers[-1].parameters()}
    assert weights_fingerprint(ours) != weights_fingerprint(encoder_from_state_dict(hf.state_dict(), heads=2))


def content_ids(text, pad):
    s = tt.special_tokens()
    body = [s.start, *tt.tokenize(text), s.end]
    return torch.tensor([body + [pad] * (77 - len(body))])


def test_a_concat_encoder_is_its_parts_side_by_side_each_padded_its_own_way():
    enc = tt.tiny_concat_encoder()
    end = tt.special_tokens().end
    a, b = enc.parts
    with torch.no_grad():
        want = torch.cat([a(content_ids("a robot toy", end)), b(content_ids("a robot toy", 0))], dim=-1)
        for pad in (end, 0, tt.special_tokens().pad):  # however the prompt was padded
            torch.testing.assert_close(enc(content_ids("a robot toy", pad)), want, rtol=0, atol=0)
    assert want.shape == (1, 77, 16 + 24)
    # an end token inside the content region is the first end: only what follows it is padding
    ids = content_ids("a dog", end)
    assert enc.part_ids(ids, 0)[0, :4].tolist() == ids[0, :4].tolist() and enc.part_ids(ids, 0)[0, 4:].eq(0).all()


def test_a_concat_encoder_splits_at_every_layer_and_trains_the_last_k_layers_of_each_part():
    enc = tt.tiny_concat_encoder()
    ids = torch.cat([content_ids("a dog", 0), content_ids("a cat on a robot toy", 0)])
    a, b = enc.parts
    assert len(enc.layers) == 3
    with torch.no_grad():
        whole = enc(ids)
        for start in range(4):
            torch.testing.assert_close(enc.forward_from(enc.embed_prefix(ids, start), start), whole)
    assert enc.first_trained_layer(1) == 2 and enc.first_trained_layer(0) == 0 and enc.first_trained_layer(3) == 0
    ids_of = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids_of(enc.trainable_parameters(1)) == ids_of([*a.layers[1].parameters(), *b.layers[2].parameters()])
    # k at least as deep as a part: that part trains whole, embeddings included
    assert ids_of(enc.trainable_parameters(2)) == ids_of([*a.parameters(), *b.layers[1:].parameters()])
    assert ids_of(enc.trainable_parameters(0)) == ids_of(enc.parameters())
    names = dict(enc.named_parameters())
    assert "parts.0.encoder.layers.1.mlp.fc1.weight" in names and "parts.1.embeddings.token_embedding.weight" in names


def test_a_concat_encoder_passes_checkpointing_and_cancel_checks_to_its_parts():
    enc = tt.tiny_concat_encoder()
    calls = []
    enc.between_layers = lambda: calls.append(1)
    enc.gradient_checkpointing = True
    assert all(p.gradient_checkpointing and p.between_layers is enc.between_layers for p in enc.parts)
    enc(content_ids("a dog", 0)).sum().backward()
    assert len(calls) == 2 + 3
    enc.between_layers = None
    assert all(p.between_layers is None for p in enc.parts)
    with pytest.raises(ValueError, match="one pad id per part"):
        ConcatTextEncoder(list(enc.parts), pads=(0,), end=1)


def test_a_concat_fingerprint_changes_with_either_part():
    enc = tt.tiny_concat_encoder()
    seen = {weights_fingerprint(enc)}
    for part in enc.parts:
        with torch.no_grad():
            part.layers[-1].mlp.fc2.weight[0, 0] += 1
        seen.add(weights_fingerprint(enc))
    assert len(seen) == 3
