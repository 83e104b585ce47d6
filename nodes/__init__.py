"""ComfyUI node classes of the pack, one module per feature group."""

from ..comfy_adapters.folders import register_model_folders
from ..comfy_adapters.image_encoders import register_dinov2_folder

# before the node modules: registering a node reads its INPUT_TYPES, which lists these folders' files
register_model_folders()
register_dinov2_folder()

from . import (  # noqa: E402
    init_latent_nodes,
    layout_guidance_nodes,
    layout_nodes,
    residual_nodes,
    scoring_nodes,
    training_nodes,
)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (residual_nodes, layout_nodes, layout_guidance_nodes, training_nodes, init_latent_nodes, scoring_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
