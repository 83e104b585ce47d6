"""Inference core of Cones 2: prompt token lookup, residual placement, layout guidance.

Pure torch: nothing here imports ComfyUI.
"""
