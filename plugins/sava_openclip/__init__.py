"""SAVA plug-in: openclip."""
