"""The plug-in registry: entry points, lazy targets, duplicates, unknown names, broken plug-ins."""

from __future__ import annotations

import sys
import types

import pytest

from conftest import REPO, TINY
from sava_core.errors import DuplicateComponentError, SavaError, UnknownComponentError
from sava_core.plugin import hookimpl
from sava_core.registry import Origin, Registries, get_registries, load_registries, plugin_settings_from_environment


def _plugin(*registrations: tuple[str, str, str]) -> types.ModuleType:
    module = types.ModuleType("fake_plugin")

    @hookimpl
    def sava_register(registry):
        for kind, name, target in registrations:
            registry.register(kind, name, target)

    module.sava_register = sava_register
    return module


def test_builtin_plugins_register_through_the_entry_point():
    registries = get_registries()
    by_name = {p.name: p for p in registries.plugins}
    assert by_name["core"].status == "loaded" and by_name["core"].distribution == "sava"
    assert by_name["synth"].status == "loaded"
    assert registries["adapter"].get("mlp").origin.plugin == "core"
    assert registries["dataset"].get("factor_world").origin.plugin == "synth"


def test_registration_is_lazy():
    registries = Registries()
    info = registries.add_plugin(_plugin(("adapter", "lazy", "no_such_module_xyz:Thing")), Origin("p", "dist-p", "1.0"))
    assert info.status == "loaded"  # nothing was imported
    assert "no_such_module_xyz" not in sys.modules
    with pytest.raises(SavaError, match=r"adapter 'lazy' from plugin 'p' \(dist-p 1.0\): target "
                                        r"'no_such_module_xyz:Thing': cannot import 'no_such_module_xyz'"):
        registries["adapter"].get("lazy").load()


def test_a_name_registered_twice_names_both_origins():
    registries = Registries()
    registries.add_plugin(_plugin(("adapter", "twin", "a:A")), Origin("first", "dist-one", "1.0"))
    info = registries.add_plugin(
        _plugin(("mask", "ok", "b:B"), ("adapter", "twin", "b:A")), Origin("second", "dist-two", "2.0")
    )
    assert info.status == "failed"
    assert "plugin 'first' (dist-one 1.0)" in info.reason and "plugin 'second' (dist-two 2.0)" in info.reason
    assert "ok" not in registries["mask"]  # all or nothing per plug-in
    assert registries["adapter"].get("twin").origin.plugin == "first"
    with pytest.raises(DuplicateComponentError):
        registries["adapter"].add(registries["adapter"].get("twin"))


def test_an_unknown_name_lists_what_is_available_and_the_closest_matches():
    with pytest.raises(UnknownComponentError) as err:
        get_registries()["dataset"].get("factor_wrld")
    assert err.value.close[0] == "factor_world"
    assert (
        "Did you mean 'factor_world'" in str(err.value)
        and "Available: audiocaps, factor_world, folder" in str(err.value)
    )


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_keep_working(broken_site, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_site))
    registries = load_registries()
    broken = next(p for p in registries.plugins if p.name == "broken")
    assert broken.status == "failed" and broken.distribution == "sava-broken-plugin" and broken.version == "9.9.9"
    assert "RuntimeError: this plug-in is broken on purpose" in broken.reason
    assert "mlp" in registries["adapter"] and "factor_world" in registries["dataset"]


def test_autoload_can_be_disabled_and_one_plugin_blocked(monkeypatch):
    assert "factor_world" not in load_registries(blocked={"synth"})["dataset"]
    assert load_registries(only=set()).entries() == []

    monkeypatch.setenv("SAVA_BLOCK_PLUGINS", "synth")
    registries = load_registries(*plugin_settings_from_environment())
    assert "factor_world" not in registries["dataset"] and "mlp" in registries["adapter"]
    assert next(p for p in registries.plugins if p.name == "synth").status == "blocked"

    monkeypatch.delenv("SAVA_BLOCK_PLUGINS")
    monkeypatch.setenv("SAVA_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert load_registries(*plugin_settings_from_environment()).entries() == []
    monkeypatch.setenv("SAVA_PLUGINS", "synth")
    assert {e.origin.plugin for e in load_registries(*plugin_settings_from_environment()).entries()} == {"synth"}


def test_a_target_that_is_not_its_kinds_contract_is_refused():
    registries = Registries()
    registries.add_plugin(_plugin(("adapter", "wrong", "collections:OrderedDict")), Origin("p", "d", "1"))
    with pytest.raises(Exception, match="not a subclass of sava_core.contracts:Adapter"):
        registries["adapter"].get("wrong").load()


def test_the_example_third_party_plugin_is_discovered(with_example_plugin):
    entry = get_registries()["adapter"].get("gated_linear")
    assert (entry.origin.plugin, entry.origin.distribution, entry.origin.version) == (
        "example", "sava-example-plugin", "0.3.0"
    )


def test_a_third_party_stage_runs_in_its_order_and_says_what_it_needs(with_example_plugin, tmp_path):
    """The example plug-in's `stage1_size` stage (order 25) runs after align in a recipe and adds its
    metrics; without align, or listed before it, the recipe is refused before anything runs."""
    from sava_core.errors import RecipeError
    from sava_core.recipe import plan
    from sava_core.runner import run_plan

    recipe = REPO / "recipes" / "align_quickstart.yaml"
    tiny = [*TINY, "variants={}"]
    result = run_plan(plan(recipe, [*tiny, "stages=[align, stage1_size]"]), tmp_path / "run")
    metrics = result.cells[0][2]
    assert metrics["params_m_v"] > 0 and metrics["params_projector"] > 0 and "shared_r2" in metrics
    assert (tmp_path / "run" / "runs" / "default" / "seed-0" / "stage1_size.json").is_file()
    with pytest.raises(RecipeError, match="stage1_size: reads the align stage's weights"):
        plan(recipe, [*tiny, "stages=[stage1_size]"])
    with pytest.raises(RecipeError, match=r"must be distinct and in the order \['align', 'stage1_size'\]"):
        plan(recipe, [*tiny, "stages=[stage1_size, align]"])
    with pytest.raises(RecipeError, match="unknown stage 'algn'. Did you mean 'align'"):
        plan(recipe, [*tiny, "stages=[algn]"])
