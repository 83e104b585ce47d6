"""Inference core of Cones 2: prompt token lookup, residual placement, layout guidance.

Pure torch (with regex, and Pillow for the layout preview's labels): nothing here imports ComfyUI.
"""
