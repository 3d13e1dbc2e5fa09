"""Registers the audioldm components. Loaded through the ``sava.plugins`` entry point ``audioldm``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    pass
