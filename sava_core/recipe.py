"""Recipes: safe YAML, ``key=value`` overrides, two-pass validation and the variant x sweep x seed grid.

Pass 1 checks the recipe's structure (:class:`sava_core.config.Recipe`); pass 2 looks up every
component by name and validates its ``params`` against the component's own model. All problems of
both passes, and of every variant, are reported together with their dotted YAML paths.
A recipe names registered components only; it cannot import code.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sava_core.config import ModelSection, Recipe, path_name_problem
from sava_core.errors import Problem, RecipeError, SavaError, UnknownComponentError
from sava_core.io import canonical_hash, not_regular
from sava_core.registry import Registries, get_registries, target_problem


class _RecipeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where installed) that refuses a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first + 1}): keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a UTF-8 recipe file with a safe loader (libyaml's where installed); the top level must
    be a mapping, keys unique within a mapping."""
    path = Path(path)
    kind = not_regular(path)
    if kind == "missing":
        raise SavaError(
            f"recipe file not found: {path}. List shipped recipes with `ls recipes/` or copy one with `sava cp`."
        )
    if kind is not None:
        raise SavaError(f"recipe {path} is not a regular file ({kind}); give a recipe file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SavaError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                        "save the recipe as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except RecursionError:
        raise SavaError(f"{path}: nested too deeply to be a recipe") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SavaError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SavaError(f"{path}: a recipe must be a YAML mapping (key: value), got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# overrides: "a.b.c=value" sets (YAML value syntax), "~a.b" deletes


def parse_override(text: str) -> tuple[str, Any, bool]:
    """Split ``key=value`` (value parsed as YAML) or ``~key``; returns (key, value, delete)."""
    if text.startswith("~"):
        key = text[1:].strip()
        if not key:
            raise SavaError(f"bad override {text!r}: expected '~dotted.key'")
        return key, None, True
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SavaError(f"bad override {text!r}: expected 'dotted.key=value' or '~dotted.key'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value, False


def apply_overrides(data: dict[str, Any], overrides: list[str], where: str = "override") -> dict[str, Any]:
    """Return a copy of ``data`` with the overrides applied in order."""
    data = copy.deepcopy(data)
    for text in overrides:
        key, value, delete = parse_override(text)
        parts = key.split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, key, where)]
                continue
            if not isinstance(node.get(part), (dict, list)):
                if delete:
                    raise SavaError(f"{where} {text!r}: {'.'.join(parts[: i + 1])} does not exist")
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            idx = _list_index(node, last, key, where)
            if delete:
                node.pop(idx)
            else:
                node[idx] = value
        elif delete:
            if last not in node:
                raise SavaError(f"{where} {text!r}: {key} does not exist")
            del node[last]
        else:
            node[last] = value
    return data


MAX_DEPTH = 32
"""Deepest nesting a recipe may have (the schema needs 6)."""


def _shape_problems(data: Any, path: str = "", depth: int = 0) -> list[Problem]:
    """Non-finite numbers and nesting deeper than :data:`MAX_DEPTH`, each with its dotted path."""
    if depth > MAX_DEPTH:
        return [Problem(path or "(top)", f"nested more than {MAX_DEPTH} levels deep")]
    if isinstance(data, float) and not math.isfinite(data):
        return [Problem(path, f"{data} is not a finite number")]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    return [p for k, v in items for p in _shape_problems(v, f"{path}.{k}" if path else str(k), depth + 1)]


def _list_index(node: list[Any], part: str, key: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise SavaError(f"{where} {key!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


# ---------------------------------------------------------------------------------------------
# validation


def component_paths(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, kind) of every component reference in the recipe schema."""
    found: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        extra = field.json_schema_extra
        if isinstance(extra, dict) and "kind" in extra:
            found.append((path, str(extra["kind"])))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += component_paths(field.annotation, prefix=f"{path}.")
    return found


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling)"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        out.append(Problem(path, msg))
    return out


def check(
    data: dict[str, Any], registries: Registries | None = None, prefix: str = ""
) -> tuple[Recipe | None, list[Problem]]:
    """Validate one recipe mapping in two passes; returns the parsed recipe (if valid) and all problems."""
    registries = registries or get_registries()
    problems: list[Problem] = []
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, prefix.rstrip("."))
    for path, kind in component_paths():
        ref = _get(data, path)
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            continue  # pass 1 reports the structural problem
        try:
            entry = registries[kind].get(ref["name"])
        except UnknownComponentError as exc:
            problems.append(Problem(f"{prefix}{path}.name", str(exc)))
            continue
        unloadable = target_problem(entry.target)
        if unloadable:
            problems.append(Problem(f"{prefix}{path}.name", f"{kind} {entry.name!r} from {entry.origin}: {unloadable}"))
            continue
        params = ref.get("params") or {}
        if not isinstance(params, dict):
            continue
        try:
            entry.load_params().model_validate(params)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"{prefix}{path}.params")
        except SavaError as exc:
            problems.append(Problem(f"{prefix}{path}", str(exc)))
    if recipe is not None and not problems:
        problems += _step_problems(recipe, registries, prefix)
    return (recipe if not problems else None), problems


def _step_problems(recipe: Recipe, registries: Registries, prefix: str) -> list[Problem]:
    """The stage list and the generation mode, checked against the registered stages and modes:
    names, order (each stage's ``order``), and what each stage requires of the rest of the recipe."""
    problems: list[Problem] = []
    stages = []
    for i, name in enumerate(recipe.stages):
        try:
            stages.append((name, registries["stage"].get(name).load()()))
        except UnknownComponentError as exc:
            problems.append(Problem(f"{prefix}stages.{i}", str(exc)))
        except SavaError as exc:
            problems.append(Problem(f"{prefix}stages.{i}", str(exc)))
    try:
        registries["generation_mode"].get(recipe.generate.mode).load()
    except SavaError as exc:
        problems.append(Problem(f"{prefix}generate.mode", str(exc)))
    if problems:
        return problems
    order = [name for name, _ in sorted(stages, key=lambda item: item[1].order)]
    if len(set(recipe.stages)) != len(recipe.stages) or order != recipe.stages:
        problems.append(Problem(f"{prefix}stages", f"{recipe.stages} must be distinct and in the order {order}"))
    for name, stage in stages:
        problems += [Problem(f"{prefix}stages", f"{name}: {text}") for text in stage.requires(recipe, registries)]
    return problems


# ---------------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a variant label, a seed and its fully resolved recipe."""

    variant: str
    seed: int
    recipe: Recipe

    @property
    def key(self) -> str:
        return f"{self.variant}/seed-{self.seed}"


def _sweep_points(sweep: dict[str, list[Any]]) -> list[tuple[str, list[str]]]:
    if not sweep:
        return [("", [])]
    keys = list(sweep)
    short = [k.split(".")[-1] for k in keys]
    labels = short if len(set(short)) == len(short) else keys
    points = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        label = ",".join(
            f"{lab}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for lab, v in zip(labels, values)
        )
        points.append((path_safe_label(label), [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]))
    return points


def path_safe_label(label: str) -> str:
    """``label`` as one folder name: unchanged when it is one, else with each separator or control
    character replaced by ``_``, shortened, and a hash of the original appended (so that two
    values never share a folder)."""
    if path_name_problem(label) is None:
        return label
    cleaned = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in label).strip()[:80]
    return f"{cleaned.strip('.') or 'value'}~{hashlib.sha256(label.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Plan:
    """A validated recipe: the resolved mapping, its hash and the grid of runs."""

    resolved: dict[str, Any]
    cells: list[Cell]

    @property
    def hash(self) -> str:
        return recipe_hash(self.resolved)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(c.variant for c in self.cells))


def recipe_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved recipe (first 16 hex digits)."""
    return canonical_hash(data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in the default components of ``model`` so that an override such as
    ``model.mask.params.hard=true`` refines the default mask instead of replacing it."""
    model = data.get("model", {})
    if not isinstance(model, dict):
        return data  # pass 1 reports it
    return {**data, "model": _deep_merge(ModelSection().model_dump(), model)}


def apply_preset(data: dict[str, Any], overrides: list[str], source: str = "recipe") -> dict[str, Any]:
    """If ``preset`` names one of the recipe's ``presets``, apply its overrides, then ``overrides``
    again so that the command line wins (``sava run r.yaml preset=tiny data.params.n_train=8``)."""
    name = data.get("preset")
    if name is None:
        return data
    presets = data.get("presets") or {}
    if not isinstance(presets, dict) or name not in presets:
        raise RecipeError(
            [Problem("preset", f"{name!r} is not one of this recipe's presets ({', '.join(presets) or 'none'})")],
            source=source,
        )
    changes = presets[name]
    if not isinstance(changes, list) or not all(isinstance(o, str) for o in changes):
        raise RecipeError([Problem(f"presets.{name}", "must be a list of 'key=value' overrides")], source=source)
    bad = [o for o in changes if o.lstrip("~").split("=")[0].split(".")[0] in ("preset", "presets")]
    if bad:
        raise RecipeError([Problem(f"presets.{name}", f"a preset cannot change {', '.join(bad)}")], source=source)
    return apply_overrides(apply_overrides(data, changes, where=f"presets.{name}"), overrides)


def plan(path: str | Path, overrides: list[str] | None = None, registries: Registries | None = None) -> Plan:
    """Load, override, validate (every variant too) and expand a recipe; raise :class:`RecipeError`."""
    return plan_data(load_yaml(path), overrides, registries, source=str(path))


def plan_data(data: dict[str, Any], overrides: list[str] | None = None, registries: Registries | None = None,
              source: str = "recipe") -> Plan:
    """:func:`plan` for a recipe already read into a mapping."""
    path = source
    data = apply_preset(apply_overrides(with_defaults(data), overrides or []), overrides or [], source)
    shape = _shape_problems(data)
    if shape:
        raise RecipeError(shape, source=str(path))
    registries = registries or get_registries()
    base, problems = check(data, registries)
    if base is None:
        raise RecipeError(problems, source=str(path))
    resolved = base.model_dump(mode="json")
    variants = base.variants or {"default": []}
    cells: list[Cell] = []
    grid_keys = {"variants", "sweep", "seeds", "seed"}
    core = {k: v for k, v in data.items() if k not in grid_keys}
    for vname, voverrides in variants.items():
        grid_changes = [o for o in voverrides if o.lstrip("~").split("=")[0].split(".")[0] in grid_keys]
        if grid_changes:
            problems.append(Problem(f"variants.{vname}", f"a variant cannot change {', '.join(grid_changes)}; "
                                                         "seeds, sweep and variants are set at the top level"))
            continue
        try:
            vdata = apply_overrides(core, voverrides, where=f"variants.{vname}")
        except SavaError as exc:
            problems.append(Problem(f"variants.{vname}", str(exc)))
            continue
        for label, soverrides in _sweep_points(base.sweep):
            cdata = apply_overrides(vdata, soverrides, where="sweep")
            name = vname if not label else (label if vname == "default" else f"{vname},{label}")
            cell_recipe, cell_problems = check(cdata, registries)
            if cell_problems:
                where = f"variants.{vname}" + (f" [{label}]" if label else "")
                problems += [Problem(f"{where} -> {p.path}", p.message) for p in cell_problems]
                continue
            assert cell_recipe is not None
            for seed in base.seeds:
                cells.append(Cell(name, seed, cell_recipe.model_copy(update={"seed": seed})))
    problems += _mixed_precision_problems(cells)
    if problems:
        raise RecipeError(problems, source=str(path))
    return Plan(resolved, cells)


def _mixed_precision_problems(cells: list[Cell]) -> list[Problem]:
    """Accelerate's mixed precision is process-wide: the first training phase of the run fixes it (a
    null value: what `accelerate launch` set, else `no`) and a later phase may only repeat it or leave
    it null. Walks the phases in the order the runner trains them (the pretrain stage, which trains
    only when its weights are missing, counts only where it sets a value)."""
    state: tuple[str, str] | None = None  # (value, where it was set)
    for cell in cells:
        r = cell.recipe
        phases = [(f"pretrain.{k}", getattr(r.pretrain, k)) for k in ("autoencoder", "video", "audio")
                  if "pretrain" in r.stages and getattr(r.pretrain, k).mixed_precision is not None]
        if "align" in r.stages:
            phases += [("align.train", r.align.train), ("align.projector_train", r.align.projector_train)]
        if "finetune" in r.stages:
            phases.append(("finetune.train", r.finetune.train))
        for where, train in phases:
            value = train.mixed_precision
            if state is None:
                state = (value or os.environ.get("ACCELERATE_MIXED_PRECISION", "no"), f"{cell.variant}: {where}")
            elif value is not None and value != state[0]:
                return [Problem(f"{cell.variant} -> {where}.mixed_precision",
                                f"{value}, but {state[1]} already fixed it to {state[0]} for the whole run "
                                "(Accelerate's mixed precision is process-wide); "
                                "give the first training phase the same value, or leave them all "
                                "null and use `accelerate launch --mixed_precision ...`")]
    return []
