"""Scores of generated images: subject fidelity (CLIP-I / DINO), prompt fidelity (CLIP-T), identity mixing.

Pure torch (Pillow only to draw the heat-map): embeddings come in from the host adapters.
"""
