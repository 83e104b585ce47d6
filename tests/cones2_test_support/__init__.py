"""pytest's side of the test support: the alias loader, the plugin, the ComfyUI server and frontend drivers.

What benchmarks share with the tests (the in-process host, the tiny checkpoints) is in devtools/.
"""
