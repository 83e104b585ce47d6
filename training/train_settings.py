"""The training options, declared once: values, ranges, help and choices of every setting.

Cones2TrainResidual's inputs and scripts/train_residual.py's flags are built from the field
metadata here (``options()``), and the authors' preset (``AUTHORS_PRESET``) sits beside the
defaults. Field order is the node's widget order (saved workflows depend on it): first the
basic options, then the advanced ones; fields without an ``Option`` are not offered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum

from .model_families import SD1, SD2, SDXL, ModelFamily

DEFAULT_PROMPT = "a photo of {a} {}"
NATIVE_RESOLUTION = 0  # the resolution setting that means "the model's own size" (native_resolution)
SD2_BASE_RESOLUTION = 512  # SD2.0/2.1-base: the eps SD2 models, trained at 512 (the 768-v ones at SD2's 768)


def native_resolution(family: ModelFamily, prediction: str) -> int:
    """The size a model of ``family`` was trained at: the family's, except SD2.x-base (eps) at 512."""
    return SD2_BASE_RESOLUTION if family == SD2 and prediction == "eps" else family.resolution


def resolved_resolution(settings: TrainSettings, family: ModelFamily, prediction: str) -> TrainSettings:
    """``settings`` with resolution 0 (NATIVE_RESOLUTION) replaced by the model's native size."""
    if settings.resolution != NATIVE_RESOLUTION:
        return settings
    return replace(settings, resolution=native_resolution(family, prediction))

OFFICIAL_PROMPT = "{}"


class Preservation(str, Enum):
    PAPER = "paper"  # Eq. 3 over the generated sentences
    OFFICIAL = "official"  # the authors' BOS + trailing-rows term on the training prompt
    NONE = "none"


class ResidualFrom(str, Enum):
    CORPUS = "corpus"  # Eq. 5 over the generated sentences (paper)
    TEMPLATES = "templates"  # over the authors' 27 prompt templates


class Precision(str, Enum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


PRESERVATION = tuple(c.value for c in Preservation)
RESIDUAL_FROM = tuple(c.value for c in ResidualFrom)
PRECISIONS = tuple(c.value for c in Precision)


@dataclass(frozen=True)
class Option:
    """How a setting is offered: the node's widget and the script's flag are made from this."""

    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: type[Enum] | None = None
    advanced: bool = False  # the node's optional inputs
    off_flag: str | None = None  # a setting on by default: the script's flag that turns it off
    aliases: tuple[str, ...] = ()  # more script flags


def _option(default, help: str, **kw):
    return field(default=default, metadata={"option": Option(help, **kw)})


def _advanced(default, help: str, **kw):
    return _option(default, help, advanced=True, **kw)


@dataclass(frozen=True)
class TrainSettings:
    """Training options. Defaults follow the paper (lr 1e-6, 3,000 steps, batch 1, Eq. 3 and Eq. 5 over a
    1,000-sentence corpus); ``AUTHORS_PRESET`` holds what the authors' code changes."""

    steps: int = _option(3000, "Training steps (paper: 3000).", min=1, max=100000)
    learning_rate: float = _option(1e-6, "AdamW learning rate (paper: 1e-6).",
                                   min=1e-8, max=1e-2, step=1e-7, aliases=("--lr",))
    batch_size: int = _option(1, "Photos per step.", min=1, max=16)
    resolution: int = _option(
        NATIVE_RESOLUTION, f"Training resolution in px (the photos' short side). 0 = the model's own: {SD1.resolution} "
        f"for SD1.x, {SD2_BASE_RESOLUTION} for SD2.x-base, {SD2.resolution} for SD2.x 768-v, {SDXL.resolution} for "
        "SDXL; lower needs less memory and time.",
        min=0, max=2048, step=64)
    preservation_weight: float = _option(
        1e-3, "λ of the paper's text-embedding-preservation loss (Eq. 3/4); 0 = off (faster: no corpus "
        "sentences in the steps). Not used by the official regularizer, whose weights are fixed.",
        min=0.0, max=100.0, step=1e-4)
    seed: int = _option(0, "The seed of the run's noise, timesteps, photo order and corpus.",
                        min=0, max=0xFFFFFFFFFFFFFFFF)
    preservation: str = _advanced(
        Preservation.PAPER.value, "paper: Eq. 3 over the generated sentences (every row but the subject's); "
        "official: the authors' 1e-2·|Δ start row| + 1e-3·|Δ rows after the subject| on the training prompt; "
        "none.", choices=Preservation)
    residual_from: str = _advanced(
        ResidualFrom.CORPUS.value, "corpus: Eq. 5 averaged over the generated sentences (paper); templates: "
        "over the authors' 27 prompt templates.", choices=ResidualFrom)
    training_prompt: str = _advanced(
        DEFAULT_PROMPT, "Prompt of the subject photos: {} = the phrase, {a} = 'a'/'an'.")
    corpus_size: int = _advanced(1000, "Generated sentences containing the phrase (paper: 1000).",
                                 min=1, max=20000)
    sentences_per_step: int = _advanced(4, "Corpus sentences in each step's preservation term.", min=1, max=64)
    train_layers: int = _advanced(
        0, "0 = train the whole text encoder (paper). k = only its last k layers: much less memory and time "
        "(a low-memory option).", min=0, max=32)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0  # 0 = no clipping
    precision: str = _advanced(
        Precision.AUTO.value, "UNet autocast: auto = bf16 on CUDA when supported, else fp16; fp32 on CPU. The "
        "text encoder always trains in float32.", choices=Precision)
    gradient_checkpointing: bool = _advanced(True, "Recompute UNet activations: far less memory.",
                                             off_flag="--no-gradient-checkpointing")
    flip: bool = _advanced(False, "Also train on mirrored photos (off for asymmetric subjects, e.g. text).")
    random_crop: bool = _advanced(True, "Random square crops of non-square photos (else center).",
                                  off_flag="--center-crop")
    checkpoint_every: int = _advanced(0, "Save a resumable checkpoint every N steps (0 = never).",
                                      min=0, max=100000)

    def binding(self) -> dict:
        """The settings a resumed run must share with its checkpoint."""
        free = {"steps", "checkpoint_every", "gradient_checkpointing", "precision"}
        return {k: v for k, v in asdict(self).items() if k not in free}

    @classmethod
    def from_values(cls, values: dict, base: TrainSettings | None = None) -> TrainSettings:
        """``base`` (default: the defaults) with the settings in ``values`` (others ignored), each as its field's type."""
        kinds = {f.name: f.type for f in fields(cls)}
        cast = {"int": int, "float": float, "bool": bool, "str": str}
        given = {k: cast[kinds[k]](v) for k, v in values.items() if k in kinds and v is not None}
        return cls(**{**asdict(base or cls()), **given})


AUTHORS_PRESET = {  # the authors' train_cones2.py: what it sets differently from the paper's defaults
    "learning_rate": 5e-6, "steps": 4000, "resolution": 768, "preservation": Preservation.OFFICIAL.value,
    "residual_from": ResidualFrom.TEMPLATES.value, "training_prompt": OFFICIAL_PROMPT,
}


@dataclass(frozen=True)
class OfferedSetting:
    name: str
    kind: type  # int, float, bool or str
    default: object
    option: Option

    @property
    def help(self) -> str:
        """The option's help, with the authors' value when their preset changes it."""
        if self.name in AUTHORS_PRESET:
            return f"{self.option.help} The authors' code: {AUTHORS_PRESET[self.name]:g}." if self.kind is float \
                else f"{self.option.help} The authors' code: {AUTHORS_PRESET[self.name]}."
        return self.option.help


def options() -> list[OfferedSetting]:
    """Every offered setting, in widget order."""
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    return [OfferedSetting(f.name, kinds[f.type], f.default, f.metadata["option"]) for f in fields(TrainSettings)
            if "option" in f.metadata]
