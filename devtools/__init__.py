"""Developer tools: the workflow generator and the test/benchmark support (never published).

Run from the checkout's root as modules (``python -m devtools.make_workflows``); tests and
benchmarks import them as ``cones2.devtools`` through the alias (scripts/pack_alias.py).
"""
