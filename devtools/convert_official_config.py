"""Convert the authors' Cones 2 inference config (JSON + layout PNG + .pt residuals) to a workflow of this pack.

From the root of a clone of the repository (a developer tool: not in the published pack):

    python -m devtools.convert_official_config guidance_config_example.json -o my_example/ \\
        [--residuals-dir DIR] [--layout PNG] [--comfyui ~/ComfyUI] [--checkpoint NAME]

Writes ``OUT/api/NAME.json`` (API format: the shipped workflows/api/official_example.json with
the config's values; ComfyUI's frontend opens it too, dropped on the canvas), copies the layout
image to ``OUT/images/`` (the runner uploads it from there),
and converts each residual the config uses to ``<subject>.safetensors`` in the residuals folder
(``--comfyui PATH``: that ComfyUI's models/cones2_residuals; else OUT/cones2_residuals). Then:

    python scripts/run_workflow.py OUT/api/NAME.json --seed 0-3

How each field maps, and why their LMS sampler becomes Euler here: docs/authors-configs.md. The sampler settings are the shipped official_example workflow's
(devtools/workflow_specs.py); this tool puts the config's values into a copy of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_CHECKPOINT = "v2-1_768-ema-pruned.safetensors"  # SD2.1 768 v, the model the authors used
# The authors' graph with their sampler settings (devtools/workflow_specs.py: official_example).
TEMPLATE = Path(__file__).resolve().parents[1] / "workflows" / "api" / "official_example.json"
TOKEN_LIMIT = 75


class ConversionError(ValueError):
    """A config that cannot be converted; the message says what to fix."""


@dataclass(frozen=True)
class OfficialConfig:
    """One entry of the authors' inference config, in our terms."""

    prompt: str
    subjects: tuple[tuple[str, int], ...]  # subject_list: (residual_dict key, token index)
    residual_files: dict[str, str]  # residual_dict: key -> .pt path (or, once converted, our file name)
    colors: tuple[tuple[tuple[int, int, int], str, float], ...]  # colour, phrase, γ+
    guidance_steps: int = 50
    guidance_weight: float = 0.08
    weight_negative: float = -1e8
    layout_image: str = ""
    bindings: tuple[tuple[str, str, int], ...] = field(default=())  # (key, phrase, occurrence), resolved


def parse_official_config(data) -> OfficialConfig:
    """The first entry of the authors' config (a list of dicts, or one dict)."""
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict):
        raise ConversionError("the config is not the authors' format: expected [{\"prompt\": ..., ...}]")
    missing = [k for k in ("prompt", "residual_dict", "subject_list", "color_context", "layout") if k not in entry]
    if missing:
        raise ConversionError(f"the config lacks {', '.join(missing)} (the authors' inference config has them)")
    subjects = []
    for item in entry["subject_list"]:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], int)):
            raise ConversionError(f"subject_list entry {item!r}: expected [name, token index]")
        if item[0] not in entry["residual_dict"]:
            raise ConversionError(f"subject_list names {item[0]!r}, which residual_dict does not have "
                                  f"(it has {sorted(entry['residual_dict'])})")
        subjects.append((str(item[0]), int(item[1])))
    colors = []
    for key, value in entry["color_context"].items():
        rgb = _parse_color(key)
        if isinstance(value, str):
            value = [value]
        phrase = str(value[0])
        gamma = float(value[1]) if len(value) > 1 else 2.5
        colors.append((rgb, phrase, gamma))
    return OfficialConfig(
        prompt=str(entry["prompt"]), subjects=tuple(subjects),
        residual_files={str(k): str(v) for k, v in entry["residual_dict"].items()},
        colors=tuple(colors), guidance_steps=int(entry.get("guidance_steps", 50)),
        guidance_weight=float(entry.get("guidance_weight", 0.08)),
        weight_negative=float(entry.get("weight_negative", -1e8)), layout_image=str(entry["layout"]))


def _parse_color(key: str) -> tuple[int, int, int]:
    key = key.strip()
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", key) if key.startswith("#") else None
    if m:
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    parts = [p.strip() for p in key.split(",")]
    try:
        rgb = tuple(int(p) for p in parts[:3])
    except ValueError:
        raise ConversionError(f"color_context key {key!r} is not a colour 'R,G,B' or '#RRGGBB'") from None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ConversionError(f"color_context key {key!r} is not a colour 'R,G,B' (0..255 each)")
    return rgb  # type: ignore[return-value]


# --- token index -> phrase occurrence -----------------------------------------------------

Tokenize = Callable[[str], Sequence[str]]  # text -> BPE pieces (no start/end tokens)


def clip_tokenizer(comfyui: Path | None) -> Tokenize | None:
    """CLIP's BPE tokenizer from a ComfyUI checkout (comfy/sd1_tokenizer; SD2 uses the same), or None."""
    if comfyui is None:
        return None
    folder = Path(comfyui).expanduser() / "comfy" / "sd1_tokenizer"
    if not (folder / "vocab.json").is_file():
        return None
    try:
        from transformers import CLIPTokenizer
    except ImportError:
        return None
    tok = CLIPTokenizer.from_pretrained(str(folder))
    return lambda text: tok.tokenize(text)


def _prompt_tokens():
    """The pack's guidance.prompt_tokens, through the ``cones2`` alias (set up by the entry point)."""
    from cones2.guidance import prompt_tokens

    return prompt_tokens


def word_tokenizer(text: str) -> list[str]:
    """One token per word, split as CLIP's pre-tokenizer splits (no BPE vocabulary needed)."""
    pt = _prompt_tokens()
    return [w + pt.END_OF_WORD for w in pt.phrase_words(text)]


def _words(pieces: Sequence[str]) -> list[tuple[str, int, int]]:
    """(word, first token index, last) with indices counted from 1 (0 is the start token)."""
    words = _prompt_tokens().group_words(range(1, len(pieces) + 1), pieces)
    return [(w.text, w.rows[0], w.rows[-1]) for w in words]


def subject_binding(prompt: str, name: str, index: int, tokenize: Tokenize) -> tuple[str, int]:
    """(phrase, occurrence) for the authors' [name, token index]: the word at the index, counted."""
    pieces = list(tokenize(prompt))
    words = _words(pieces)
    if not 1 <= index <= min(len(pieces), TOKEN_LIMIT):
        counted = "" if tokenize is not word_tokenizer else " counting one token per word"
        raise ConversionError(f"subject {name!r}: token index {index} is outside the prompt's tokens "
                              f"1..{min(len(pieces), TOKEN_LIMIT)} (0 is the start token){counted}")
    at = next(w for w in words if w[1] <= index <= w[2])
    name_words = [w for w, _, _ in _words(list(tokenize(name)))]
    # The residual binds to the name when the name's words sit at the index, else to the word there.
    for k in range(len(name_words)):
        start = words.index(at) - k
        if start >= 0 and [w[0] for w in words[start:start + len(name_words)]] == name_words:
            phrase_words_ = name_words
            first = start
            break
    else:  # the name is not the word there (e.g. residual_dict key "dog2"): bind the word at the index
        phrase_words_, first = [at[0]], words.index(at)
    occurrence = sum(1 for s in range(first + 1)
                     if [w[0] for w in words[s:s + len(phrase_words_)]] == phrase_words_)
    return " ".join(phrase_words_), occurrence


def resolve_bindings(config: OfficialConfig, tokenize: Tokenize,
                     overrides: dict[str, tuple[str, int]] | None = None) -> OfficialConfig:
    bindings = []
    for name, index in config.subjects:
        if overrides and name in overrides:
            phrase, occurrence = overrides[name]
        else:
            phrase, occurrence = subject_binding(config.prompt, name, index, tokenize)
        bindings.append((name, phrase, occurrence))
    return replace(config, bindings=tuple(bindings))


def color_warnings(config: OfficialConfig, tokenize: Tokenize) -> list[str]:
    """Where this workflow guides less than the authors' code: a colour phrase said twice."""
    words = [w for w, _, _ in _words(list(tokenize(config.prompt)))]
    out = []
    for _, phrase, _ in config.colors:
        pw = [w for w, _, _ in _words(list(tokenize(phrase)))]
        n = sum(1 for s in range(len(words)) if words[s:s + len(pw)] == pw)
        if n == 0:
            out.append(f"the colour map's phrase {phrase!r} is not in the prompt; Layout from Color Map will "
                       "refuse it at run time")
        elif n > 1:
            out.append(f"{phrase!r} occurs {n} times in the prompt: the authors' code gives each occurrence the "
                       f"colour's region; this workflow gives it to the first (add a colour per occurrence, "
                       f"'R,G,B: {phrase} #2')")
    return out


# --- the graph ----------------------------------------------------------------------------

def colors_text(config: OfficialConfig) -> str:
    def num(x: float) -> str:
        return f"{x:g}"
    return "\n".join(f"{r},{g},{b}: {phrase} {num(gamma)}" for (r, g, b), phrase, gamma in config.colors)


def build_api(config: OfficialConfig, *, name: str = "official_example", checkpoint: str = DEFAULT_CHECKPOINT,
              tokenize: Tokenize | None = None, tolerance: float = 0.0, background: str = "255,255,255") -> dict:
    """The API workflow for the authors' config: the template with its values, one Load Residual per subject
    (residual_files: our file names; layout_image: its name)."""
    if not config.bindings:
        config = resolve_bindings(config, tokenize or word_tokenizer)
    api = json.loads(TEMPLATE.read_text(encoding="utf-8"))

    def inputs(cls: str) -> dict:
        (node,) = [n for n in api.values() if n["class_type"] == cls]
        return node["inputs"]

    loader_ids = [k for k, n in api.items() if n["class_type"] == "Cones2LoadResidual"]
    loader = api[loader_ids[0]]
    for k in loader_ids:
        del api[k]
    ids = loader_ids + [str(i) for i in range(max(map(int, api)) + 1, 10**6)]
    previous = None
    for node_id, (key, phrase, occurrence) in zip(ids, config.bindings, strict=False):
        node = copy.deepcopy(loader)
        node["inputs"].update(residual_name=config.residual_files[key], phrase=phrase, occurrence=occurrence)
        node["inputs"].pop("bindings", None)
        if previous:
            node["inputs"]["bindings"] = [previous, 0]
        node["_meta"]["title"] = f"Subject: {phrase}" + (f" #{occurrence}" if occurrence > 1 else "")
        api[node_id], previous = node, node_id
    positive = inputs("Cones2ApplyResidual")
    positive["text"] = config.prompt
    positive.pop("bindings", None)
    if previous:
        positive["bindings"] = [previous, 0]
    inputs("CheckpointLoaderSimple")["ckpt_name"] = checkpoint
    inputs("LoadImage")["image"] = config.layout_image
    inputs("Cones2LayoutFromColorMap").update(colors=colors_text(config), tolerance=tolerance, background=background)
    inputs("SaveImage")["filename_prefix"] = f"cones2/{name}"
    sampler = inputs("Cones2LayoutGuidedSampler")
    guided = config.guidance_steps > 0
    # guidance_steps 0 = no guidance: weight 0 leaves the model unguided; the range stays the whole
    # run, since an empty range (end_percent 0) is refused by the sampler
    sampler.update(weight=config.guidance_weight if guided else 0.0, suppression=config.weight_negative,
                   start_percent=0.0, self_recurrence=guided,
                   end_percent=min(config.guidance_steps, sampler["steps"]) / sampler["steps"] if guided else 1.0)
    return dict(sorted(api.items(), key=lambda item: int(item[0])))


# --- files --------------------------------------------------------------------------------

def find_file(path: str, config_dir: Path, extra_dirs: Sequence[Path] = ()) -> Path | None:
    """The file a config path names: as written, relative to the config, or by name in extra_dirs."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [config_dir / p, Path.cwd() / p]
    candidates += [config_dir / p.name] + [d / p.name for d in extra_dirs]
    return next((c for c in candidates if c.is_file()), None)


def background_colors(image_path: Path, listed: Sequence[tuple[int, int, int]]) -> str:
    """White, plus every other unlisted colour covering >= 1% of the layout (the authors ignore them)."""
    extra = []
    try:
        from PIL import Image
    except ImportError:
        return "255,255,255"
    img = Image.open(image_path).convert("RGB")
    counts = img.getcolors(maxcolors=img.width * img.height) or []
    total = img.width * img.height
    for n, rgb in sorted(counts, reverse=True):
        if n / total >= 0.01 and rgb not in listed and rgb != (255, 255, 255):
            extra.append(rgb)
    return "; ".join(",".join(map(str, c)) for c in [(255, 255, 255), *extra])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("config", type=Path, help="the authors' inference config (JSON)")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: <config name>_cones2 beside the config)")
    p.add_argument("--name", help="workflow name (default: the config's file name)")
    p.add_argument("--residuals-dir", type=Path, action="append", default=[], help="where the .pt residuals are")
    p.add_argument("--layout", type=Path, help="the layout PNG (default: the config's 'layout' path)")
    p.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH") or None,
                   help="a ComfyUI checkout: its tokenizer, and its models/cones2_residuals for the residuals")
    p.add_argument("--residuals-out", type=Path, help="where to write the converted residuals")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"checkpoint name (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="colour tolerance of Layout from Color Map (default 0: the authors' exact match)")
    p.add_argument("--bind", action="append", default=[], metavar="NAME=PHRASE#OCCURRENCE",
                   help="bind a subject_list name by hand instead of by its token index")
    p.add_argument("--force", action="store_true", help="overwrite existing residual files")
    args = p.parse_args(argv)

    from cones2.training.residual_file import ResidualFileError, convert_to_safetensors

    try:
        data = json.loads(args.config.read_text(encoding="utf-8"))
        config = parse_official_config(data)
    except (OSError, json.JSONDecodeError, ConversionError) as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return 2
    name = args.name or re.sub(r"\W+", "_", args.config.stem).strip("_") or "official_example"
    out = args.output or args.config.resolve().parent / f"{name}_cones2"
    config_dir = args.config.resolve().parent

    tokenize = clip_tokenizer(args.comfyui)
    overrides = {}
    for spec in args.bind:
        key, _, rest = spec.partition("=")
        phrase, _, occ = rest.partition("#")
        if not key or not phrase.strip():
            p.error(f"--bind {spec!r}: write NAME=PHRASE#OCCURRENCE, e.g. dog=dog#2")
        overrides[key.strip()] = (phrase.strip(), int(occ or 1))
    try:
        config = resolve_bindings(config, tokenize or word_tokenizer, overrides)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("tokenizer: " + ("CLIP's (from ComfyUI)" if tokenize else "one token per word (pass --comfyui for CLIP's)"))
    for key, phrase, occurrence in config.bindings:
        index = dict(config.subjects)[key]
        print(f"subject {key!r} at token {index} -> phrase {phrase!r}, occurrence {occurrence}")
        if phrase != key and key not in overrides and tokenize is None:
            print(f"warning: {key!r} binds to the word {phrase!r} at token {index} counting one token per word; "
                  f"if a word before it is several tokens this is off: pass --comfyui PATH for CLIP's tokenizer "
                  f"or --bind {key}=PHRASE#OCCURRENCE", file=sys.stderr)
    for w in color_warnings(config, tokenize or word_tokenizer):
        print(f"warning: {w}", file=sys.stderr)

    status = 0
    res_out = args.residuals_out or ((args.comfyui / "models" / "cones2_residuals") if args.comfyui else out / "cones2_residuals")
    res_names = {}
    for key, phrase, _ in config.bindings:
        target = res_out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.safetensors"
        res_names[key] = target.name
        src = find_file(config.residual_files[key], config_dir, args.residuals_dir)
        if src is None:
            print(f"error: residual {config.residual_files[key]!r} for {key!r} not found (looked beside the config "
                  f"and in --residuals-dir); the workflow names {target.name}: convert it later with "
                  f"scripts/convert_residual.py", file=sys.stderr)
            status = 1
            continue
        try:
            res_out.mkdir(parents=True, exist_ok=True)
            convert_to_safetensors(src, target, subject=phrase, overwrite=args.force)
            print(f"residual {src} -> {target}")
        except FileExistsError:
            print(f"kept the existing {target} (pass --force to overwrite it)")
        except ResidualFileError as e:
            print(f"error: {src}: {e}", file=sys.stderr)
            status = 1

    layout_src = args.layout or find_file(config.layout_image, config_dir)
    listed = [c for c, _, _ in config.colors]
    if layout_src is None or not Path(layout_src).is_file():
        print(f"error: layout image {config.layout_image!r} not found; pass --layout PNG", file=sys.stderr)
        status = 1
        layout_name, background = Path(config.layout_image).name, "255,255,255"
    else:
        layout_name = Path(layout_src).name
        (out / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layout_src, out / "images" / layout_name)
        background = background_colors(Path(layout_src), listed)
        print(f"layout {layout_src} -> {out / 'images' / layout_name}")

    config = replace(config, residual_files={**config.residual_files, **res_names}, layout_image=layout_name)
    api = build_api(config, name=name, checkpoint=args.checkpoint, tolerance=args.tolerance, background=background)
    target = out / "api" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(api, indent=2, ensure_ascii=False) + "\n")
    print(f"workflow (API) -> {target} (ComfyUI opens it too: drop it on the canvas)")
    print(f"run: python scripts/run_workflow.py {target} --seed 0-3")
    return status


if __name__ == "__main__":
    from scripts.pack_alias import import_pack_core  # run from the checkout's root: python -m devtools....

    import_pack_core()
    sys.exit(main())
