"""Built-in SAVA plug-in: media."""
