"""Test support: importing the pack, finding and driving a real ComfyUI, tiny SD2 models."""
