"""SAVA plug-in: audioldm."""
