"""The pack's model folder, registered with ComfyUI's folder_paths."""

import os

import folder_paths

from ..training.residual_file import SUFFIXES

RESIDUALS = "cones2_residuals"
RESIDUAL_EXTENSIONS = set(SUFFIXES)  # what load_residual reads


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
