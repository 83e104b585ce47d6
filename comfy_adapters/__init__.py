"""ComfyUI adapters: the code between the pure core (guidance/, training/) and the host.

Node classes (nodes/) and the headless tools (scripts/) import these; these never import
node modules.
"""
