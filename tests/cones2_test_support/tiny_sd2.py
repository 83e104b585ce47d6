"""The tiny SD2 checkpoint lives in devtools/tiny_sd2.py (shared with the benchmarks); this name stays for tests."""

from cones2.devtools.tiny_sd2 import UNET_CONFIG, build_state_dict, tiny_sd2_checkpoint

__all__ = ["UNET_CONFIG", "build_state_dict", "tiny_sd2_checkpoint"]
