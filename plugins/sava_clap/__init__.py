"""SAVA plug-in: clap."""
