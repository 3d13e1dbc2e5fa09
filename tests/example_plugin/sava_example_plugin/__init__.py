"""An example third-party SAVA plug-in."""
