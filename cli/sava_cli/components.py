"""The registries one ``sava`` command builds from (once) and hands to the core."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sava_core.registry import Registries

_blocked: set[str] = set()
_loaded: list[Registries] = []


def block(names: list[str]) -> None:
    """Plug-ins (entry-point names) not to load in this command (``--block-plugin``)."""
    _blocked.clear()
    _blocked.update(names)
    _loaded.clear()


def registries() -> Registries:
    """This command's registries: the plug-ins the environment allows, less the blocked ones."""
    if not _loaded:
        from sava_core.registry import load_registries, plugin_settings_from_environment

        blocked, only = plugin_settings_from_environment()
        _loaded.append(load_registries(blocked | _blocked, only))
    return _loaded[0]
