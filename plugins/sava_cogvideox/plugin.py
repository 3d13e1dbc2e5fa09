"""Registers the cogvideox components. Loaded through the ``sava.plugins`` entry point ``cogvideox``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    pass
