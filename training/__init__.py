"""Training core of Cones 2: the residual file format, sentence corpus, losses, training loop.

Pure torch and safetensors: nothing here imports ComfyUI.
"""
