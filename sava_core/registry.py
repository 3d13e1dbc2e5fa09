"""Typed, lazy component registries filled by plug-ins through the ``sava.plugins`` entry points.

One :class:`Registry` per component kind. An entry names its code as a lazy "module:attr" target and
its parameters as a pydantic model (also lazy, in a module that must not import torch), so that
``sava list`` and ``sava validate`` stay light.

Callers build the registries once (:func:`load_registries`, or the process-wide default
:func:`get_registries`) and pass them to whatever needs components. Only the public entry points
(``recipe.plan``, ``runner.run_plan``, ``evaluation.evaluate`` and the plug-in test kit) fall back to
the default when given none; stages, the toolkit and plug-ins use the registries they are handed.

Environment (read by :func:`plugin_settings_from_environment`; :func:`load_registries` takes the
settings as arguments):
    SAVA_DISABLE_PLUGIN_AUTOLOAD=1  load only the entry points named in SAVA_PLUGINS (comma list).
    SAVA_BLOCK_PLUGINS=a,b          never load these entry points (by entry-point name).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel

from sava_core.errors import DuplicateComponentError, SavaError, UnknownComponentError
from sava_core.plugin import ENTRY_POINT_GROUP, PROJECT, HookSpecs, WeightsRequest

#: Every component kind of the method (the paper, section 3), with the contract
#: (base class) a registered target must subclass.
KINDS: dict[str, str] = {
    "video_encoder": "sava_core.contracts:VideoEncoder",
    "audio_encoder": "sava_core.contracts:AudioEncoder",
    "text_encoder": "sava_core.contracts:TextEncoder",
    "adapter": "sava_core.contracts:Adapter",
    "mask": "sava_core.contracts:Mask",
    "decoder": "sava_core.contracts:Decoder",
    "projector": "sava_core.contracts:Projector",
    "backbone": "sava_core.contracts:Backbone",
    "sampler": "sava_core.contracts:Sampler",
    "joint_generator": "sava_core.contracts:JointGenerator",
    "metric": "sava_core.contracts:Metric",
    "extractor": "sava_core.contracts:FeatureExtractor",
    "dataset": "sava_core.contracts:Dataset",
    "stage": "sava_core.stage:Stage",
    "generation_mode": "sava_core.stage:GenerationMode",
    "eval_protocol": "sava_core.eval_protocol:EvalProtocol",
}


#: Kinds whose components take no parameters (constructed as ``Component(**runtime)``).
PARAMETERLESS = frozenset({"stage", "generation_mode", "eval_protocol"})


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute. A module that cannot be imported
    (missing, or raising on import) is a :class:`SavaError` naming the target and the cause."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SavaError(f"bad target {target!r}: expected 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SavaError(f"target {target!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); "
                        "install what it needs, or fix the plug-in's registration") from exc
    except Exception as exc:  # a module that raises on import: the plug-in's bug, shown as one line
        raise SavaError(f"target {target!r}: importing {module_name!r} raised {type(exc).__name__}: {exc} "
                        "(sava --debug ... shows the traceback)") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SavaError(f"target {target!r}: module {module_name!r} has no attribute {attr!r}") from None


def target_problem(target: str) -> str | None:
    """Why ``"package.module:attr"`` cannot be loaded, found without executing the module (and so
    without importing torch): the module is not found, or its source defines no ``attr`` at top
    level. None when it looks loadable (or cannot be told without importing it: a compiled module,
    a module with ``__getattr__`` or ``import *``). Parent packages are imported, as
    :func:`importlib.util.find_spec` must."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        return f"bad target {target!r}: expected 'package.module:attribute'"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"target {target!r}: cannot find module {module_name!r} ({exc})"
    except Exception as exc:  # a parent package that raises on import
        return f"target {target!r}: importing a parent package of {module_name!r} raised {type(exc).__name__}: {exc}"
    if spec is None:
        return f"target {target!r}: no module named {module_name!r} (check the spelling, or install its package)"
    if module_name in sys.modules:
        return None if hasattr(sys.modules[module_name], attr) else (
            f"target {target!r}: module {module_name!r} has no attribute {attr!r}")
    if not (spec.origin and spec.origin.endswith(".py")):
        return None
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"), spec.origin)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return f"target {target!r}: cannot read {spec.origin}: {exc}"
    names = _top_level_names(tree)
    if attr in names or "__getattr__" in names or "*" in names:
        return None
    close = difflib.get_close_matches(attr, sorted(n for n in names if not n.startswith("_")), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"target {target!r}: module {module_name!r} ({spec.origin}) defines no {attr!r}{hint}"


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module's source binds at top level (also inside top-level if / try blocks)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return names


@dataclass(frozen=True)
class Origin:
    """Where a registration came from: entry-point name, distribution and its version."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component: kind, short name, lazy targets and origin."""

    kind: str
    name: str
    target: str
    params: str | None
    summary: str
    origin: Origin

    def load(self) -> type:
        """Import the component class and check it against its kind's contract."""
        try:
            cls = import_target(self.target)
        except SavaError as exc:
            raise SavaError(f"{self.kind} {self.name!r} from {self.origin}: {exc}") from exc.__cause__
        base = import_target(KINDS[self.kind])
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise SavaError(
                f"{self.kind} {self.name!r} from {self.origin}: {self.target} is not a subclass of "
                f"{KINDS[self.kind]}"
            )
        return cls

    def load_params(self) -> type[BaseModel]:
        """The component's pydantic parameter model (imported without the component when possible)."""
        model = import_target(self.params) if self.params else getattr(self.load(), "Params", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise SavaError(f"{self.kind} {self.name!r} from {self.origin} declares no pydantic Params model")
        return model

    def as_row(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.origin.plugin,
            "distribution": self.origin.distribution,
            "version": self.origin.version,
            "summary": self.summary,
        }


class Registry:
    """The components of one kind, by short name."""

    def __init__(self, kind: str, plugins: list[PluginInfo] | None = None):
        self.kind = kind
        self._entries: dict[str, ComponentEntry] = {}
        self._plugins = plugins if plugins is not None else []  # the report of the registries it belongs to

    def add(self, entry: ComponentEntry) -> None:
        if entry.name in self._entries:
            first = self._entries[entry.name]
            raise DuplicateComponentError(
                f"{self.kind} {entry.name!r} is registered twice: by {first.origin} and by {entry.origin}. "
                f"Block one of them with SAVA_BLOCK_PLUGINS=<plugin>."
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> ComponentEntry:
        try:
            return self._entries[name]
        except KeyError:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            failed = [f"{p.name} ({p.distribution} {p.version}: {p.reason})"
                      for p in self._plugins if p.status == "failed"]
            raise UnknownComponentError(self.kind, name, names, close, failed) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[ComponentEntry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def build(self, name: str, params: dict[str, Any] | BaseModel | None = None, **runtime: Any) -> Any:
        """Instantiate ``name`` with validated ``params`` and runtime arguments (sizes, devices)."""
        entry = self.get(name)
        if self.kind in PARAMETERLESS:
            if params:
                raise SavaError(f"{self.kind} {name!r} takes no parameters")
            return entry.load()(**runtime)
        model = entry.load_params()
        if not isinstance(params, model):
            params = model.model_validate(params or {})
        return entry.load()(params, **runtime)


@dataclass
class PluginInfo:
    """A plug-in that loaded, was blocked, or failed (with the reason)."""

    name: str
    distribution: str
    version: str
    status: str  # "loaded" | "failed" | "blocked"
    reason: str = ""
    components: int = 0


class Registration:
    """What a plug-in's ``sava_register`` receives: registers on behalf of one origin, atomically."""

    def __init__(self, origin: Origin):
        self.origin = origin
        self.entries: list[ComponentEntry] = []

    def register(self, kind: str, name: str, target: str, *, params: str | None = None, summary: str = "") -> None:
        """Register ``name`` of ``kind`` implemented by lazy ``target`` ("module:attr")."""
        if kind not in KINDS:
            raise SavaError(f"{self.origin}: unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if ":" not in target:
            raise SavaError(f"{self.origin}: target {target!r} of {kind} {name!r} must be 'module:attr'")
        self.entries.append(ComponentEntry(kind, name, target, params, summary, self.origin))


def _hook_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(HookSpecs)
    return manager


@dataclass
class Registries:
    """All registries, the report of which plug-ins loaded, and the hooks of the loaded plug-ins."""

    plugins: list[PluginInfo] = field(default_factory=list)
    kinds: dict[str, Registry] = field(default_factory=dict)
    hooks: pluggy.PluginManager = field(default_factory=_hook_manager)

    def __post_init__(self) -> None:
        self.kinds = self.kinds or {k: Registry(k, self.plugins) for k in KINDS}

    def component_weights(self, request: WeightsRequest) -> str | None:
        """The weights file a plug-in supplies for ``request.slot`` (``sava_component_weights``), or None."""
        result: str | None = self.hooks.hook.sava_component_weights(request=request)
        return result

    def __getitem__(self, kind: str) -> Registry:
        try:
            return self.kinds[kind]
        except KeyError:
            raise SavaError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}") from None

    def entries(self, kind: str | None = None) -> list[ComponentEntry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for e in self[k].entries()]

    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status == "failed"]

    def add_plugin(self, module: ModuleType | object, origin: Origin) -> PluginInfo:
        """Run one plug-in's ``sava_register``; on any error record it and register nothing from it."""
        manager = _hook_manager()
        info = PluginInfo(origin.plugin, origin.distribution, origin.version, "loaded")
        registration = Registration(origin)
        try:
            manager.register(module, name=origin.plugin)
            manager.hook.sava_register(registry=registration)
            added: list[ComponentEntry] = []
            try:
                for entry in registration.entries:
                    self[entry.kind].add(entry)
                    added.append(entry)
            except Exception:
                for entry in added:  # all or nothing per plug-in
                    del self[entry.kind]._entries[entry.name]
                raise
            info.components = len(registration.entries)
            self.hooks.register(module, name=origin.plugin)
        except Exception as exc:  # a broken plug-in must not take the others down
            info.status, info.reason = "failed", f"{type(exc).__name__}: {exc}"
        self.plugins.append(info)
        return info


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def load_registries(blocked: set[str] | frozenset[str] = frozenset(), only: set[str] | None = None) -> Registries:
    """Discover the ``sava.plugins`` entry points and run each plug-in's registration hook.

    ``blocked``: entry-point names never loaded; ``only``: when given, load just these."""
    registries = Registries()
    eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    seen: set[str] = set()
    for ep in eps:
        if ep.name in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in blocked:
            registries.plugins.append(
                PluginInfo(ep.name, dist, version, "blocked", "blocked (--block-plugin or SAVA_BLOCK_PLUGINS)")
            )
            continue
        if only is not None and ep.name not in only:
            registries.plugins.append(
                PluginInfo(ep.name, dist, version, "blocked", "not in SAVA_PLUGINS (SAVA_DISABLE_PLUGIN_AUTOLOAD)")
            )
            continue
        origin = Origin(ep.name, dist, version)
        try:
            module = ep.load()
        except Exception as exc:
            registries.plugins.append(PluginInfo(ep.name, dist, version, "failed", f"{type(exc).__name__}: {exc}"))
            continue
        registries.add_plugin(module, origin)
    return registries


_REGISTRIES: Registries | None = None


def plugin_settings_from_environment() -> tuple[set[str], set[str] | None]:
    """(blocked, only) for :func:`load_registries` from SAVA_BLOCK_PLUGINS and
    SAVA_DISABLE_PLUGIN_AUTOLOAD / SAVA_PLUGINS (see the module docstring)."""
    autoload = os.environ.get("SAVA_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
    return _env_list("SAVA_BLOCK_PLUGINS"), None if autoload else _env_list("SAVA_PLUGINS")


def get_registries() -> Registries:
    """The process-wide default registries, loaded on first use with the environment's settings."""
    global _REGISTRIES
    if _REGISTRIES is None:
        _REGISTRIES = load_registries(*plugin_settings_from_environment())
    return _REGISTRIES


def reset_registries() -> None:
    """Forget the loaded registries (the next :func:`get_registries` rediscovers plug-ins)."""
    global _REGISTRIES
    _REGISTRIES = None
