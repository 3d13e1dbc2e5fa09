"""SAVA plug-in: imagebind."""
