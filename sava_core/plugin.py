"""The plug-in interface: pluggy hooks, ``sava_register(registry)`` and ``sava_component_weights(request)``.

A plug-in is a module listed under the ``sava.plugins`` entry-point group that defines::

    from sava_core.plugin import hookimpl

    @hookimpl
    def sava_register(registry):
        registry.register("adapter", "my_adapter", "my_pkg.adapters:MyAdapter",
                          params="my_pkg.params:MyAdapterParams", summary="one line")

A plug-in may also implement ``sava_component_weights(request)``: the core asks it for the weights
of a component that has no ``pretrained`` setting (a synthetic world answers for the components
it pretrains itself).

Registration is lazy: targets are "module:attribute" strings imported on first use, so listing
components never imports torch. Keep the plug-in module itself free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from sava_core.config import ComponentRef, Recipe
    from sava_core.registry import Registration, Registries

PROJECT = "sava"
ENTRY_POINT_GROUP = "sava.plugins"



@dataclass(frozen=True)
class WeightsRequest:
    """What :meth:`HookSpecs.sava_component_weights` is asked: the recipe, the registries it is built
    from, the model slot (a field of ``recipe.model``), its component reference, the run cell's
    directory (None outside a run) and whether the weights are required (False where random weights
    are acceptable)."""

    recipe: Recipe
    registries: Registries
    slot: str
    ref: ComponentRef
    cell_dir: Path | None
    required: bool = True


hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a SAVA plug-in may implement."""

    @hookspec
    def sava_register(self, registry: Registration) -> None:
        """Register components with ``registry.register(kind, name, target, params=..., summary=...)``."""

    @hookspec(firstresult=True)
    def sava_component_weights(self, request: WeightsRequest) -> str | None:
        """The weights file of the component in ``request.slot`` (e.g. ``video_encoder``) of
        ``request.recipe`` when this plug-in supplies them (a world that trains its own components),
        else None. The first plug-in that answers wins; raise :class:`~sava_core.errors.SavaError`
        when the weights are yours to give but missing and ``request.required``."""
