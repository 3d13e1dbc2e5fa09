"""Registers the imagebind components. Loaded through the ``sava.plugins`` entry point ``imagebind``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    pass
