"""Built-in SAVA plug-in: metrics."""
