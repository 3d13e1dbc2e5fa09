"""The plug-in interface: one pluggy hook, ``sava_register(registry)``.

A plug-in is a module listed under the ``sava.plugins`` entry-point group that defines::

    from sava_core.plugin import hookimpl

    @hookimpl
    def sava_register(registry):
        registry.register("adapter", "my_adapter", "my_pkg.adapters:MyAdapter",
                          params="my_pkg.params:MyAdapterParams", summary="one line")

Registration is lazy: targets are "module:attribute" strings imported on first use, so listing
components never imports torch. Keep the plug-in module itself free of heavy imports.
"""

from __future__ import annotations

import pluggy

PROJECT = "sava"
ENTRY_POINT_GROUP = "sava.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a SAVA plug-in may implement."""

    @hookspec
    def sava_register(self, registry) -> None:  # type: ignore[no-untyped-def]
        """Register components with ``registry.register(kind, name, target, params=..., summary=...)``."""
