"""Registers the ltx2 components. Loaded through the ``sava.plugins`` entry point ``ltx2``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    pass
