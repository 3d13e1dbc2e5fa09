"""SAVA plug-in: cogvideox."""
