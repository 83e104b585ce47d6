"""The pack's folders: the residual model folder (registered with folder_paths) and training checkpoints.

Every file name that comes from a workflow is resolved here, inside its folder (``residual_file``,
``checkpoint_file``); a missing and a refused name get the same message (``not_in_folder``).
"""

import os
from pathlib import Path

import folder_paths

from ..training.file_names import resolve_in_folders, slug
from ..training.residual_file import SUFFIXES
from ..training.train_checkpoint import SUFFIX

RESIDUALS = "cones2_residuals"
RESIDUALS_LABEL = f"models/{RESIDUALS}"
RESIDUAL_EXTENSIONS = set(SUFFIXES)  # what load_residual reads
CHECKPOINT_SUBFOLDER = "cones2_training"
CHECKPOINTS_LABEL = f"output/{CHECKPOINT_SUBFOLDER}"


def register_model_folders() -> None:
    """Register ``models/cones2_residuals``, keeping paths already set by extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, RESIDUALS)
    paths, extensions = folder_paths.folder_names_and_paths.get(RESIDUALS, ([], set()))
    if default not in paths:
        paths = [default, *paths]
    folder_paths.folder_names_and_paths[RESIDUALS] = (paths, set(extensions) | RESIDUAL_EXTENSIONS)


def residual_save_dir() -> str:
    """Where new residuals are written: the folder's first (default) path."""
    return folder_paths.get_folder_paths(RESIDUALS)[0]


def checkpoint_dir() -> Path:
    """Where training checkpoints go: ``output/cones2_training`` (run state, not a model)."""
    return Path(folder_paths.get_output_directory()) / CHECKPOINT_SUBFOLDER


def checkpoint_names() -> list[str]:
    folder = checkpoint_dir()
    if not folder.is_dir():
        return []
    # only names that resolve inside the folder: the list is what ComfyUI's own validation accepts for resume_from
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith(SUFFIX) and not p.name.startswith(".") and checkpoint_file(p.name) is not None)


def new_checkpoint_path(phrase: str) -> Path:
    folder = checkpoint_dir()
    stem = slug(phrase)
    k = 1
    while (folder / f"{stem}_{k:05d}{SUFFIX}").exists():
        k += 1
    return folder / f"{stem}_{k:05d}{SUFFIX}"


def residual_file(name) -> Path | None:
    """The residual file ``name`` (a workflow value) inside the residual folders, or None (missing or refused)."""
    return resolve_in_folders(name, folder_paths.get_folder_paths(RESIDUALS), SUFFIXES)


def checkpoint_file(name) -> Path | None:
    """The training checkpoint ``name`` (a workflow value) inside ``output/cones2_training``, or None."""
    return resolve_in_folders(name, [checkpoint_dir()], (SUFFIX,))


def not_in_folder(what: str, name, folder: str) -> str:
    """The one message for a workflow file name that is missing or may not be read (no existence oracle)."""
    return (f"{what} {name!r} is not a file in {folder}. Pick one from the list (names are relative to that "
            "folder; paths and links leading out of it are refused).")
