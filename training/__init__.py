"""Training core of Cones 2: the residual file format, sentence corpus, losses, training loop.

Pure torch/transformers: nothing here imports ComfyUI.
"""
