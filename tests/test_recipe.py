"""Recipes: safe YAML, overrides, two-pass validation with YAML paths, the variant x sweep x seed grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sava_core.errors import RecipeError, SavaError
from sava_core.recipe import apply_overrides, plan

REPO = Path(__file__).parent.parent
SHIPPED = sorted((REPO / "recipes").rglob("*.yaml"))


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


BASE = {"name": "t", "data": {"name": "factor_world", "params": {}}}


def test_overrides_set_nested_keys_with_yaml_values_and_delete():
    data = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    out = apply_overrides(data, ["a.b=2.5", "a.e.f=true", "a.c.1=7", "~d", "g=[1, 2]", "h=null"])
    assert out == {"a": {"b": 2.5, "c": [1, 7], "e": {"f": True}}, "g": [1, 2], "h": None}
    assert data["a"]["b"] == 1  # the input is not modified
    with pytest.raises(SavaError, match="expected 'dotted.key=value'"):
        apply_overrides(data, ["novalue"])
    with pytest.raises(SavaError, match="does not exist"):
        apply_overrides(data, ["~zzz"])


def test_three_mistakes_are_reported_at_once_with_their_yaml_paths(tmp_path):
    recipe = write(tmp_path, {**BASE, "lerning_rate": 0.1,
                              "model": {"mask": {"name": "mlpp"},
                                        "adapter": {"name": "mlp", "params": {"hidden": "wide"}}}})
    with pytest.raises(RecipeError) as err:
        plan(recipe)
    paths = {p.path for p in err.value.problems}
    assert paths == {"lerning_rate", "model.mask.name", "model.adapter.params.hidden"}
    text = str(err.value)
    assert "Did you mean 'mlp'?" in text and "unknown key" in text and "valid integer" in text


def test_variants_sweeps_and_seeds_make_a_grid(tmp_path):
    recipe = write(tmp_path, {**BASE, "seeds": [0, 1],
                              "variants": {"none": ["model.mask.params.mode=none"], "joint": []},
                              "sweep": {"align.loss.alpha": [0.01, 1.0]}})
    p = plan(recipe, ["align.width=8"])
    assert len(p.cells) == 2 * 2 * 2
    assert p.variants == ["none,alpha=0.01", "none,alpha=1.0", "joint,alpha=0.01", "joint,alpha=1.0"]
    cell = next(c for c in p.cells if c.variant == "none,alpha=1.0" and c.seed == 1)
    assert cell.recipe.model.mask.params == {"mode": "none"}
    assert cell.recipe.align.loss.alpha == 1.0 and cell.recipe.align.width == 8 and cell.recipe.seed == 1
    assert p.resolved["align"]["width"] == 8  # command-line overrides are part of the resolved recipe


def test_a_bad_variant_is_reported_with_its_name(tmp_path):
    recipe = write(tmp_path, {**BASE, "variants": {"bad": ["model.mask.params.mode=sideways"], "good": []}})
    with pytest.raises(RecipeError) as err:
        plan(recipe)
    assert [p.path for p in err.value.problems] == ["variants.bad -> model.mask.params.mode"]


def test_the_hash_changes_with_the_recipe(tmp_path):
    recipe = write(tmp_path, BASE)
    assert plan(recipe).hash == plan(recipe).hash != plan(recipe, ["align.width=16"]).hash


def test_a_recipe_cannot_run_code(tmp_path):
    recipe = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\ndata: {name: factor_world}\n")
    with pytest.raises(SavaError, match="not valid YAML"):
        plan(recipe)
    recipe = write(tmp_path, {**BASE, "model": {"adapter": {"name": "os:system"}}})
    with pytest.raises(RecipeError, match="unknown adapter 'os:system'"):
        plan(recipe)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_recipe_validates_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# sava run {path.relative_to(REPO)}", "a shipped recipe starts with the command that runs it"
    assert plan(path).cells


def test_a_variant_cannot_change_the_grid(tmp_path):
    recipe = write(tmp_path, {**BASE, "variants": {"more": ["seeds=[5]"], "ok": []}})
    with pytest.raises(RecipeError, match="a variant cannot change seeds"):
        plan(recipe)


def test_a_preset_applies_its_overrides_and_the_command_line_still_wins(tmp_path):
    recipe = write(tmp_path, {**BASE, "seeds": [0, 1, 2], "align": {"width": 64},
                              "presets": {"tiny": ["seeds=[0]", "align.width=8", "align.train.steps=3"]}})
    assert len(plan(recipe).cells) == 3  # no preset: the recipe as written
    cells = plan(recipe, ["preset=tiny", "align.train.steps=5"]).cells
    assert len(cells) == 1
    assert cells[0].recipe.align.width == 8 and cells[0].recipe.align.train.steps == 5
    with pytest.raises(RecipeError, match="'huge' is not one of this recipe's presets \\(tiny\\)"):
        plan(recipe, ["preset=huge"])


def test_mixed_precision_that_accelerate_cannot_switch_within_a_run_is_caught_before_it_runs(monkeypatch):
    """Accelerate's mixed precision is process-wide: a later training phase (or cell) asking for another
    value than the first phase fixed would fail hours in; it is a recipe problem naming both phases.
    A null phase after an explicit one inherits its value."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    quickstart = REPO / "recipes" / "quickstart.yaml"
    assert plan(quickstart, ["align.train.mixed_precision=bf16"]).cells
    with pytest.raises(
        RecipeError, match=r"finetune\.train\.mixed_precision.*bf16.*align\.train already fixed it to no"
    ):
        plan(quickstart, ["finetune.train.mixed_precision=bf16"])
    with pytest.raises(RecipeError, match="process-wide"):  # a variant that differs from the cells before it
        plan(quickstart, ["align.train.mixed_precision=bf16",
                          "variants={a: [], b: [align.train.mixed_precision=fp16]}"])


def test_a_second_mixed_precision_in_one_process_is_a_clear_error():
    from accelerate.state import AcceleratorState

    from sava_core.config import TrainConfig
    from sava_core.training import make_accelerator

    try:
        AcceleratorState._reset_state(reset_partial_state=True)
        make_accelerator(TrainConfig(mixed_precision="no"), cpu=True)
        with pytest.raises(SavaError, match="mixed_precision: bf16 .* after one with no.*process-wide"):
            make_accelerator(TrainConfig(mixed_precision="bf16"), cpu=True)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("where, data", [
    ("name", {**BASE, "name": "../../../x/escaped_name"}),
    ("name", {**BASE, "name": ".."}),
    ("variants", {**BASE, "variants": {"../../../../x/ESCAPED_variant": []}}),
    ("variants", {**BASE, "variants": {"/x/ABS_variant": []}}),
    ("variants", {**BASE, "variants": {"tab\tin_name": []}}),
])
def test_a_name_that_would_leave_the_run_directory_is_refused(tmp_path, where, data):
    with pytest.raises(RecipeError) as err:
        plan(write(tmp_path, data))
    assert err.value.problems[0].path.startswith(where) and "a name" in str(err.value)


def test_every_file_a_run_writes_stays_inside_its_run_directory_whatever_the_sweep_values(tmp_path):
    """Sweep values become folder names; hostile ones are made safe (and kept apart by a hash)."""
    from conftest import TINY
    from sava_core.runner import run_plan

    hostile = ["x/../../../../escaped", "/abs/path", "a\\b", "..", "ok"]
    (tmp_path / "recipe").mkdir()
    recipe = write(tmp_path / "recipe", {**BASE, "sweep": {"description": hostile}})
    p = plan(recipe, TINY + ["align.train.steps=2", "align.projector_train.steps=2"])
    assert len({c.variant for c in p.cells}) == len(hostile)
    run_plan(p, tmp_path / "out" / "run")
    outside = [f for f in tmp_path.rglob("*") if f.is_file() and tmp_path / "out" / "run" not in f.parents
               and tmp_path / "recipe" not in f.parents]
    assert outside == []
    cells = sorted(d.name for d in (tmp_path / "out" / "run" / "runs").iterdir())
    assert "description=ok" in cells and "description=.." in cells
    assert len(cells) == len(hostile)
