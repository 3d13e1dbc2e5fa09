"""Registers the clap components. Loaded through the ``sava.plugins`` entry point ``clap``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    pass
