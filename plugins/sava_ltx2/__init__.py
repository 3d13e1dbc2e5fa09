"""SAVA plug-in: ltx2."""
