"""The `sava` command-line interface."""
