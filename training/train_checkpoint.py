"""Training checkpoints: everything needed to resume a run exactly, in one safetensors file.

Tensors: the trained encoder parameters (``param.<name>``) and the optimizer state
(``optim.<index>.<key>``). String metadata: the step, the run's settings (a resumed run
must match them, except the step count and checkpoint interval), a fingerprint of the
original encoder and of the photos, the loss history, the optimizer's param groups and
the grad scaler's state. Per-step randomness derives from (seed, step), so no RNG state
is stored. Writes are atomic: a crash or Cancel never leaves a partial checkpoint, and a
diverged run never overwrites the last good one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic_files import write_atomic
from .errors import TrainingResumeError

FORMAT = "cones2-training-state"
VERSION = 1
SUFFIX = ".cones2-train.safetensors"


@dataclass
class TrainState:
    step: int
    settings: dict  # must match on resume
    fingerprints: dict  # encoder/photos identity; must match on resume
    params: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer state_dict
    losses: dict[str, list[float]] = field(default_factory=dict)
    scaler: dict | None = None


def save_state(state: TrainState, path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{k}": v.detach().to("cpu").contiguous() for k, v in state.params.items()}
    groups = []
    for g in state.optimizer["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    scalars = {}
    for index, entry in state.optimizer["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    meta = {
        "format": FORMAT, "format_version": str(VERSION), "step": str(state.step),
        "settings": json.dumps(state.settings, sort_keys=True),
        "fingerprints": json.dumps(state.fingerprints, sort_keys=True),
        "losses": json.dumps(state.losses),
        "param_groups": json.dumps(groups),
        "optim_scalars": json.dumps(scalars),
        "scaler": json.dumps(state.scaler),
    }
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=True)


def _read(path, tensors: bool) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise TrainingResumeError(f"no checkpoint at {path}.")
    if path.stat().st_size == 0:
        raise TrainingResumeError(f"{path.name} is empty (0 bytes), not a checkpoint; start a new run.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise TrainingResumeError(f"{path.name} is not a Cones 2 training checkpoint.")
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except TrainingResumeError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TrainingResumeError(
            f"{path.name}: not a readable checkpoint ({first}); it may be truncated or damaged. Resume from "
            "another checkpoint or start a new run.") from None
    version = meta.get("format_version", "0")
    if not version.isdigit():
        raise TrainingResumeError(f"{path.name}: damaged checkpoint (format_version {version!r}); start a new run.")
    if int(version) > VERSION:
        raise TrainingResumeError(f"{path.name} was written by a newer version of the pack; update it.")
    return meta, data


def peek_state(path) -> TrainState:
    """The checkpoint's step, settings, fingerprints and losses, without reading its tensors."""
    meta, _ = _read(path, tensors=False)
    try:
        return TrainState(step=int(meta["step"]), settings=json.loads(meta["settings"]),
                          fingerprints=json.loads(meta["fingerprints"]), params={}, optimizer={},
                          losses=json.loads(meta["losses"]))
    except (KeyError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise _damaged(path, e) from None


def _damaged(path, e: Exception) -> TrainingResumeError:
    return TrainingResumeError(
        f"{Path(path).name}: damaged checkpoint metadata ({type(e).__name__}: {e}); resume from another "
        "checkpoint or start a new run.")


def load_state(path) -> TrainState:
    """Read a checkpoint written by ``save_state``; raise TrainingResumeError if it is not one."""
    try:
        return _load_state(path)
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, TrainingResumeError):
            raise
        raise _damaged(path, e) from None


def _load_state(path) -> TrainState:
    meta, tensors = _read(path, tensors=True)
    params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, index, key = k.split(".", 2)
            state.setdefault(int(index), {})[key] = v
    for k, v in json.loads(meta["optim_scalars"]).items():
        index, key = k.split(".", 1)
        state.setdefault(int(index), {})[key] = v
    groups = json.loads(meta["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return TrainState(
        step=int(meta["step"]), settings=json.loads(meta["settings"]),
        fingerprints=json.loads(meta["fingerprints"]), params=params,
        optimizer={"state": state, "param_groups": groups}, losses=json.loads(meta["losses"]),
        scaler=json.loads(meta.get("scaler", "null")),
    )


def check_resumable(state: TrainState, settings: dict, fingerprints: dict | None, source: str) -> None:
    """Raise TrainingResumeError naming every setting or input that differs from the checkpoint's.

    ``fingerprints=None`` checks the settings only (before the encoder copy exists).
    """
    diffs = [f"{k}: checkpoint {state.settings.get(k)!r}, now {v!r}"
             for k, v in settings.items() if state.settings.get(k) != v]
    names = {"encoder": "the text encoder (another checkpoint?)", "images": "the subject images"}
    diffs += [f"{names.get(k, k)} differ" for k, v in (fingerprints or {}).items() if state.fingerprints.get(k) != v]
    if diffs:
        raise TrainingResumeError(
            f"cannot resume from {source}: it belongs to another run ({'; '.join(diffs)}). "
            "Use the same inputs and settings (only steps and the checkpoint interval may change), "
            "or start a new run."
        )
