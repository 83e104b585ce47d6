"""The tiny SD1.5 checkpoint lives in devtools/tiny_sd15.py (shared with the benchmarks); this name stays for tests."""

from cones2.devtools.tiny_sd15 import UNET_CONFIG, build_state_dict, tiny_sd15_checkpoint

__all__ = ["UNET_CONFIG", "build_state_dict", "tiny_sd15_checkpoint"]
