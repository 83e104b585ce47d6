"""Cones2LoadResidual and Cones2ApplyResidual in the real ComfyUI, with each family's real CLIP (random weights).

Tests that take ``clip`` run on SD1.5, SD2 and SDXL (Segmind Vega), each against the host's own
tokenization (every tokenizer of the family: SDXL's ``l`` and ``g`` must give the same rows).
"""

import sys

import pytest
import torch
from safetensors.torch import save_file

RESIDUALS = "cones2_residuals"


def pack_module(host, name):
    return sys.modules[f"{host.pack.__name__}.{name}"]


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def clip(request):
    return request.getfixturevalue(request.param)[1]


@pytest.fixture(scope="module")
def width(host, clip):
    return pack_module(host, "comfy_adapters.model_families").clip_family(clip).width


@pytest.fixture(scope="module")
def residual_dir(host):
    d = host.models_dir(RESIDUALS)
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_residual(host, residual_dir, name, tensor, subject=None):
    rf = pack_module(host, "training.residual_file")
    path = residual_dir / name
    if path.exists():
        path.unlink()
    if name.endswith(".pt"):
        torch.save(tensor, path)
    else:
        family = pack_module(host, "training.model_families").family_of_width(tensor.shape[-1])
        rf.save_residual(rf.make_residual(tensor, subject=subject, base_model=family.key), path)
    return name


def expected_rows(clip, text, phrase, occurrence=1):
    """Rows of a phrase occurrence, found independently: the phrase's token ids scanned in clip.tokenize(),
    in every tokenizer the CLIP runs (SDXL: ``l`` and ``g``), which must agree."""
    found = {}
    for key, chunks in clip.tokenize(text).items():
        ids = getattr(clip.tokenizer, f"clip_{key}").tokenizer(phrase)["input_ids"][1:-1]
        flat = [(c * len(chunk) + i, entry[0]) for c, chunk in enumerate(chunks)
                for i, entry in enumerate(chunk) if isinstance(entry[0], int)]
        hits = []
        for k in range(len(flat) - len(ids) + 1):
            if [t for _, t in flat[k:k + len(ids)]] == ids and (not hits or flat[k][0] > hits[-1][-1]):
                hits.append([r for r, _ in flat[k:k + len(ids)]])
        found[key] = hits[occurrence - 1]
    assert len(set(map(tuple, found.values()))) == 1, found
    return next(iter(found.values()))


def encode(host, clip, text, bindings=None):
    (cond,) = host.run("Cones2ApplyResidual", clip=clip, text=text, bindings=bindings)
    return cond


_CORE = {}  # core CLIPTextEncode is deterministic: one encode per (CLIP, prompt) (SDXL's bigG is slow on a CPU)


def core_encode(host, clip, text):
    key = (id(clip.cond_stage_model), text)
    if key not in _CORE:
        (_CORE[key],) = host.run("CLIPTextEncode", clip=clip, text=text)
    return _CORE[key]


def bind(host, name, phrase="", occurrence=1, strength=1.0, bindings=None):
    (out,) = host.run("Cones2LoadResidual", residual_name=name, phrase=phrase, occurrence=occurrence,
                      strength=strength, bindings=bindings)
    return out


def test_pack_loads_with_its_nodes_and_models_folder(host):
    mappings = host.nodes.NODE_CLASS_MAPPINGS
    assert {"Cones2LoadResidual", "Cones2ApplyResidual"} <= set(mappings)
    assert host.nodes.NODE_DISPLAY_NAME_MAPPINGS["Cones2LoadResidual"] == "Cones2 Load Residual"
    paths, exts = host.folder_paths.folder_names_and_paths[RESIDUALS]
    assert paths[0] == str(host.base_dir / "models" / RESIDUALS)
    assert {".safetensors", ".pt"} <= exts
    # the folder lists what load_residual reads, from one list
    assert pack_module(host, "comfy_adapters.folders").RESIDUAL_EXTENSIONS == set(
        pack_module(host, "training.residual_file").SUFFIXES)


def test_extra_model_paths_yaml_adds_folders_in_either_order(host, residual_dir, tmp_path):
    import utils.extra_config  # ComfyUI's own loader of extra_model_paths.yaml

    extra = tmp_path / "more_residuals"
    extra.mkdir()
    rf = pack_module(host, "training.residual_file")
    rf.save_residual(rf.make_residual(torch.zeros(1, 1024), subject="cat"), extra / "yaml_cat.safetensors")
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n    base_path: {tmp_path}\n    cones2_residuals: more_residuals\n")
    utils.extra_config.load_extra_path_config(str(yaml))
    pack_module(host, "comfy_adapters.folders").register_model_folders()  # as if the pack loaded after the yaml
    paths = host.folder_paths.get_folder_paths(RESIDUALS)
    assert paths[0] == str(residual_dir) and str(extra) in paths
    assert "yaml_cat.safetensors" in host.folder_paths.get_filename_list(RESIDUALS)
    assert bind(host, "yaml_cat.safetensors")[0].phrase == "cat"


PROMPTS = [
    "a photo of a dog on the beach",
    "a (dog:1.3) sitting in a (garden:0.8), [sunny] day",
    " ".join(["a very detailed scene with many objects"] * 12) + " and finally a dog on the grass",
    "embedding:cones2_test_emb a dog near a lake",
]


@pytest.fixture(scope="module")
def embedding(host):
    folder = host.models_dir("embeddings")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"clip_h": torch.randn(2, 1024) * 0.1, "clip_l": torch.randn(2, 768) * 0.1,
               "clip_g": torch.randn(2, 1280) * 0.1}, str(folder / "cones2_test_emb.safetensors"))


@pytest.mark.parametrize("text", PROMPTS)
def test_without_bindings_the_output_equals_core_clip_text_encode(host, clip, embedding, text):
    ours, core = encode(host, clip, text), core_encode(host, clip, text)
    assert len(ours) == len(core) == 1
    assert torch.equal(ours[0][0], core[0][0])
    assert torch.equal(ours[0][1]["pooled_output"], core[0][1]["pooled_output"])


@pytest.mark.parametrize("text", PROMPTS)
def test_a_residual_lands_exactly_on_its_phrase_rows(host, clip, width, residual_dir, embedding, text):
    delta = torch.randn(1, width)
    name = write_residual(host, residual_dir, "dog_rows.safetensors", delta, subject="dog")
    rows = expected_rows(clip, text, "dog")
    ours = encode(host, clip, text, bind(host, name, strength=0.75))[0]
    core = core_encode(host, clip, text)[0][0]
    assert ours[0].shape == core.shape
    if "many objects" in text:
        assert rows[0] > 77  # the long prompt puts the dog in ComfyUI's second 77-token chunk
    assert torch.equal(ours[0][0, rows], core[0, rows] + delta * 0.75)
    others = [r for r in range(core.shape[1]) if r not in rows]
    assert torch.equal(ours[0][0, others], core[0, others])
    assert [k for k in ours[1] if k.startswith("cones2_")] == ["cones2_prompt_tokens"]  # the pack's one key
    tokens = pack_module(host, "guidance.conditioning_keys").prompt_tokens(ours[1])
    assert tokens.occurrence("dog") == tuple(rows)
    assert torch.equal(ours[1]["pooled_output"], core_encode(host, clip, text)[0][1]["pooled_output"])


def test_two_residuals_on_two_occurrences_of_the_same_word(host, clip, width, residual_dir):
    text = "a dog and a dog playing in the snow"
    d1, d2 = torch.randn(1, width), torch.randn(1, width)
    b = bind(host, write_residual(host, residual_dir, "dog_a.safetensors", d1, "dog"))
    b = bind(host, write_residual(host, residual_dir, "dog_b.safetensors", d2, "dog"), occurrence=2, bindings=b)
    out = encode(host, clip, text, b)[0][0]
    core = core_encode(host, clip, text)[0][0]
    r1, r2 = expected_rows(clip, text, "dog", 1), expected_rows(clip, text, "dog", 2)
    assert r1 != r2
    assert torch.equal(out[0, r1], core[0, r1] + d1)
    assert torch.equal(out[0, r2], core[0, r2] + d2)


def test_a_multi_token_phrase_gets_row_i_on_token_i(host, clip, width, residual_dir):
    text = "a robot toy on a wooden table"
    delta = torch.randn(2, width)
    out = encode(host, clip, text, bind(host, write_residual(host, residual_dir, "toy.safetensors", delta,
                                                                 "robot toy")))[0][0]
    core = core_encode(host, clip, text)[0][0]
    rows = expected_rows(clip, text, "robot toy")
    assert len(rows) == 2 and rows[1] == rows[0] + 1
    assert torch.equal(out[0, rows[0]], core[0, rows[0]] + delta[0])
    assert torch.equal(out[0, rows[1]], core[0, rows[1]] + delta[1])


def test_bindings_chain_in_order_and_default_to_the_file_subject(host, residual_dir):
    names = [write_residual(host, residual_dir, f"chain{i}.safetensors", torch.zeros(1, 1024), s)
             for i, s in enumerate(["dog", "cat", "mug"])]
    b = None
    for n in names:
        b = bind(host, n, bindings=b)
    assert [(x.name, x.phrase) for x in b] == [("chain0.safetensors", "dog"), ("chain1.safetensors", "cat"),
                                               ("chain2.safetensors", "mug")]
    assert bind(host, names[0], phrase="  puppy ")[0].phrase == "puppy"


def test_bind_residual_takes_a_residual_from_another_node(host, clip, width):
    rf = pack_module(host, "training.residual_file")
    delta = torch.randn(1, width)
    family = pack_module(host, "training.model_families").family_of_width(width).key
    (b,) = host.run("Cones2BindResidual", residual=rf.make_residual(delta, subject="dog", base_model=family), phrase="",
                    occurrence=2, strength=0.5)
    assert (b[0].name, b[0].phrase, b[0].occurrence) == ("trained residual 'dog'", "dog", 2)
    text = "a dog and a dog"
    out = encode(host, clip, text, b)[0][0]
    rows = expected_rows(clip, text, "dog", 2)
    assert torch.equal(out[0, rows], core_encode(host, clip, text)[0][0][0, rows] + delta * 0.5)
    with pytest.raises(ValueError, match="Cones2BindResidual: the residual records no subject.*'phrase' box"):
        host.run("Cones2BindResidual", residual=rf.make_residual(delta, base_model=family), phrase=" ", occurrence=1,
                 strength=1.0)


def test_official_pt_residual_binds_to_the_typed_phrase(host, sd2, residual_dir):
    clip = sd2[1]
    delta = torch.randn(1024)
    name = write_residual(host, residual_dir, "official_dog.pt", delta)
    with pytest.raises(ValueError, match="Cones2LoadResidual: official_dog.pt records no subject.*'phrase' box"):
        bind(host, name)
    text = "a mug and a dog on the beach"
    out = encode(host, clip, text, bind(host, name, phrase="dog"))[0][0]
    rows = expected_rows(clip, text, "dog")
    assert rows == [5]  # the authors' example config counts the dog at token 5
    assert torch.equal(out[0, 5], core_encode(host, clip, text)[0][0][0, 5] + delta)


def test_inputs_are_never_modified(host, clip, width, residual_dir):
    text = "a dog on the beach"
    before = host.run("CLIPTextEncode", clip=clip, text=text)[0][0][0].clone()  # not cached
    delta = torch.randn(1, width)
    b = bind(host, write_residual(host, residual_dir, "keep.safetensors", delta, "dog"))
    kept = b[0].residual.clone()
    encode(host, clip, text, b)
    encode(host, clip, text, b)
    assert torch.equal(b[0].residual, kept)
    assert torch.equal(host.run("CLIPTextEncode", clip=clip, text=text)[0][0][0], before)


@pytest.mark.parametrize("name,tensor,message", [
    ("sd15.safetensors", torch.randn(1, 768), r"Cones2LoadResidual: sd15.safetensors: the residual is 768 wide "
                                              r"\(768 is SD1.x's conditioning width\), but its family is SD2.x \(a "
                                              r"file that records no family is SD2.x.*1024 wide"),
    ("nan.pt", torch.full((1024,), float("nan")), r"Cones2LoadResidual: nan.pt: .*1024 NaN or infinite values"),
])
def test_bad_residual_files_are_refused_by_name(host, residual_dir, name, tensor, message):
    if name.endswith(".pt"):
        torch.save(tensor, residual_dir / name)
    else:
        save_file({"residual": tensor}, str(residual_dir / name))
    with pytest.raises(ValueError, match=message):
        bind(host, name, phrase="dog")


def test_a_file_that_is_not_a_residual_is_refused(host, residual_dir):
    save_file({"lora_te_text_model.weight": torch.zeros(8)}, str(residual_dir / "a_lora.safetensors"))
    with pytest.raises(ValueError, match="Cones2LoadResidual: a_lora.safetensors: not a Cones 2 residual"):
        bind(host, "a_lora.safetensors", phrase="dog")


def test_phrase_and_occurrence_errors_name_the_node_and_fix(host, clip, width, residual_dir):
    b = bind(host, write_residual(host, residual_dir, "err_dog.safetensors", torch.zeros(1, width), "dog"))
    with pytest.raises(ValueError, match=r"Cones2ApplyResidual: the phrase 'dog' is not in the prompt "
                                         r"\(prompt words: 'a cat on a sofa'\)"):
        encode(host, clip, "a cat on a sofa", b)
    b2 = bind(host, "err_dog.safetensors", occurrence=3)
    with pytest.raises(ValueError, match="Cones2ApplyResidual: the phrase 'dog' occurs 2 time.*from 1 to 2"):
        encode(host, clip, "a dog and a dog", b2)
    toy = bind(host, "err_dog.safetensors", phrase="robot toy")
    with pytest.raises(ValueError, match="Cones2ApplyResidual: residual 'err_dog.safetensors' has 1 token row"):
        encode(host, clip, "a robot toy", toy)


def test_a_clip_of_another_kind_is_refused_by_what_it_runs(host):
    import comfy.sd
    import comfy.sdxl_clip

    # the SDXL refiner's CLIP tokenizes for 'g' and 'l' but encodes with bigG alone: not SDXL's conditioning
    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLRefinerClipModel)
    refiner = comfy.sd.CLIP(target=target, parameters=0)  # weights never used
    with pytest.raises(ValueError, match=r"Cones2ApplyResidual: this CLIP runs the text encoders \['g'\], which "
                                         r"Cones 2 cannot use.*SD1.x \(CLIP-L\), SD2.x \(OpenCLIP-H\), SDXL"):
        encode(host, refiner, "a dog")


@pytest.mark.parametrize("residual_family", ["sd1", "sd2", "sdxl"])
def test_a_residual_of_another_family_is_refused_naming_both(host, clip, residual_dir, residual_family):
    families = pack_module(host, "training.model_families")
    model = pack_module(host, "comfy_adapters.model_families").clip_family(clip)
    theirs = families.family_named(residual_family)
    b = bind(host, write_residual(host, residual_dir, "other.safetensors", torch.randn(1, theirs.width), "dog"))
    if theirs == model:
        assert encode(host, clip, "a dog", b)[0][0].shape[-1] == model.width
        return
    with pytest.raises(ValueError) as e:
        encode(host, clip, "a dog", b)
    msg = str(e.value)
    assert msg.startswith("Cones2ApplyResidual: residual 'other.safetensors' is an ")
    for f in (theirs, model):
        assert f.label in msg and f"{f.width} wide" in msg


def test_long_prompts_and_weights_put_the_map_on_the_hosts_rows(host, clip, width, residual_dir):
    # a weighted phrase in ComfyUI's third chunk; every family's padding (SD1/SDXL-l: end token, SD2/SDXL-g: 0)
    text = " ".join(["a very detailed scene with many objects"] * 25) + ", a (fluffy dog:1.4) on (grass:0.7)"
    rows = expected_rows(clip, text, "fluffy dog")
    assert rows[0] > 2 * 77
    delta = torch.randn(2, width)
    out = encode(host, clip, text, bind(host, write_residual(host, residual_dir, "long.safetensors", delta,
                                                             "fluffy dog")))[0]
    core = core_encode(host, clip, text)[0][0]
    assert out[0].shape == core.shape and core.shape[1] == 3 * 77
    assert torch.equal(out[0][0, rows], core[0, rows] + delta)
    tokens = pack_module(host, "guidance.conditioning_keys").prompt_tokens(out[1])
    first = clip.tokenize(text)
    for key, chunks in first.items():  # content rows: everything between start and the first end, per chunk
        tok = getattr(clip.tokenizer, f"clip_{key}")
        content = [c * 77 + i for c, chunk in enumerate(chunks) for i in range(1, 1 + next(
            j for j, entry in enumerate(chunk[1:]) if entry[0] == tok.end_token))]
        assert list(tokens.rows) == content


@pytest.mark.parametrize("trained_with", ["same", "other", "unknown"])
def test_a_residual_trained_with_other_encoders_is_applied_with_a_warning(host, clip, width, residual_dir,
                                                                          caplog, trained_with):
    families = pack_module(host, "comfy_adapters.model_families")
    rf = pack_module(host, "training.residual_file")
    fingerprint = {"same": families.text_encoder_fingerprint(clip), "other": "w1:0000000000000000",
                   "unknown": None}[trained_with]
    delta = torch.randn(1, width)
    residual = rf.make_residual(delta, subject="dog", base_model=families.clip_family(clip).key,
                                text_encoders=fingerprint)
    rf.save_residual(residual, residual_dir / "fp.safetensors", overwrite=True)
    assert rf.load_residual(residual_dir / "fp.safetensors").text_encoders == fingerprint
    caplog.clear()
    out = encode(host, clip, "a dog", bind(host, "fp.safetensors"))[0][0]
    rows = expected_rows(clip, "a dog", "dog")
    assert torch.equal(out[0, rows], core_encode(host, clip, "a dog")[0][0][0, rows] + delta)  # applied anyway
    warned = [r.getMessage() for r in caplog.records if "other text encoders" in r.getMessage()]
    if trained_with == "other":
        assert len(warned) == 1 and "'fp.safetensors'" in warned[0] and fingerprint in warned[0]
        assert families.text_encoder_fingerprint(clip) in warned[0]
    else:
        assert warned == []


def test_the_encoder_fingerprint_tells_the_families_apart_and_ignores_clones(host, sd1, sd2, sdxl):
    fp = pack_module(host, "comfy_adapters.model_families").text_encoder_fingerprint
    prints = [fp(m[1]) for m in (sd1, sd2, sdxl)]
    assert len(set(prints)) == 3
    assert fp(sdxl[1].clone()) == prints[2]
