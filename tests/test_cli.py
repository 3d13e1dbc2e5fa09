"""The `sava` command: light start-up, readable errors with exit code 2, plug-ins, run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import EXAMPLE_PLUGIN, REPO, TINY, make_distribution, run_cli

HEAVY = ("torch", "diffusers", "transformers")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["validate", "recipes/quickstart.yaml"], ["plugins"]])
def test_listing_and_validating_never_import_heavy_libraries(args):
    code = (
        "import sys, json\n"
        f"sys.argv = ['sava', *{args!r}]\n"
        "from sava_cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_validate_reports_three_mistakes_with_paths_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\n"
        "data: {name: factor_world}\n"
        "model:\n  mask: {name: jointt}\n  adapter: {name: mlp, params: {hidden: lots}}\n"
        "align: {widht: 16}\n"
    )
    out = run_cli("validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for path in ("model.mask.name", "model.adapter.params.hidden", "align.widht"):
        assert path in out.stderr, out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["validate", "no/such/recipe.yaml"], "recipe not found"),
        (["run", "quickstart", "oops"], "bad override"),
        (["list", "widget"], "unknown component kind 'widget'"),
        (["cp", "no-such-recipe", "x.yaml"], "no shipped recipe"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args, message, tmp_path):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = run_cli("--debug", "validate", "missing.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" in out.stderr and "error: recipe not found: missing.yaml" in out.stderr


def test_list_shows_origin_and_json(example_site):
    out = run_cli("list", "adapter", "--json", extra_path=[example_site, EXAMPLE_PLUGIN])
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["mlp"]["plugin"] == "core" and rows["mlp"]["distribution"] == "sava"
    assert rows["gated_linear"] | {"summary": ""} == {
        "kind": "adapter", "name": "gated_linear", "plugin": "example", "distribution": "sava-example-plugin",
        "version": "0.3.0", "summary": ""}


def test_a_broken_plugin_is_listed_with_its_error_and_the_rest_still_works(broken_site):
    plugins = run_cli("plugins", extra_path=[broken_site])
    assert plugins.returncode == 1  # a failed plug-in is a failure of this command, listed with why
    assert "failed" in plugins.stdout and "this plug-in is broken on purpose" in plugins.stdout
    listing = run_cli("list", extra_path=[broken_site])
    assert listing.returncode == 0 and "factor_world" in listing.stdout and "mlp" in listing.stdout
    assert "broken" in listing.stderr  # a warning, not silence
    blocked = run_cli("--block-plugin", "broken", "plugins", extra_path=[broken_site])
    assert "blocked" in blocked.stdout and "failed" not in blocked.stdout


def test_the_example_plugin_runs_from_a_recipe(example_site, tmp_path):
    out = run_cli("run", "recipes/align_quickstart.yaml", *TINY, "model.adapter.name=gated_linear",
                  "model.adapter.params={gate_bias: 1.0}", "--out", str(tmp_path / "run"),
                  extra_path=[example_site, EXAMPLE_PLUGIN], cwd=REPO)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())
    assert resolved["model"]["adapter"]["name"] == "gated_linear"
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert {"name": "example", "distribution": "sava-example-plugin", "version": "0.3.0", "status": "loaded",
            "reason": ""} in env["plugins"]
    assert (tmp_path / "run" / "runs" / "joint_hard" / "seed-0" / "metrics.json").exists()


def test_cp_copies_a_shipped_recipe(tmp_path):
    out = run_cli("cp", "quickstart", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "quickstart.yaml").read_text() == (REPO / "recipes" / "quickstart.yaml").read_text()
    again = run_cli("cp", "quickstart", str(tmp_path))
    assert again.returncode == 2 and "--force" in again.stderr


def test_an_unknown_name_points_at_a_plugin_that_failed_to_load(broken_site, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndata: {name: factor_world}\nmodel:\n  mask: {name: l1_gates}\n")
    out = run_cli("validate", str(recipe), extra_path=[broken_site])
    assert out.returncode == 2
    assert "unknown mask 'l1_gates'" in out.stderr and "failed to load may have held it: broken" in out.stderr


@pytest.fixture
def typo_site(tmp_path):
    """A plug-in with a misspelled lazy target and one whose module imports a package that is missing."""
    site = tmp_path / "typo_site"
    site.mkdir()
    (site / "sava_typo_plugin.py").write_text(
        "from sava_core.plugin import hookimpl\n\n\n@hookimpl\ndef sava_register(registry):\n"
        "    p = 'sava_core.components.params:MaskParams'\n"
        "    registry.register('mask', 'typo_mask', 'sava_core.components.stage1:MLPMsk', params=p)\n"
        "    registry.register('mask', 'needs_pkg', 'sava_needs_pkg:Mask', params=p)\n"
    )
    (site / "sava_needs_pkg.py").write_text(
        "import surely_not_installed_pkg\nfrom sava_core.components.stage1 import MLPMask as Mask\n")
    make_distribution(site, "sava-typo-plugin", "1.0", {"typo": "sava_typo_plugin"})
    return site


def test_validate_catches_a_misspelled_lazy_target_without_importing_torch(typo_site, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndata: {name: factor_world}\nmodel:\n  mask: {name: typo_mask}\n")
    out = run_cli("validate", str(recipe), extra_path=[typo_site])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model.mask.name" in out.stderr and "defines no 'MLPMsk'; did you mean MLPMask" in out.stderr
    probe = ("import sys; from sava_core.recipe import load_yaml, check; "
             f"_, problems = check(load_yaml({str(recipe)!r})); "
             "print(len(problems), 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(typo_site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["1", "False"], done.stderr


def test_an_import_error_building_a_component_is_one_line_with_exit_2(typo_site, tmp_path):
    out = run_cli("run", "recipes/align_quickstart.yaml", *TINY, "model.mask.name=needs_pkg",
                  "--out", str(tmp_path / "run"), extra_path=[typo_site], cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert ("cannot import 'sava_needs_pkg' (ModuleNotFoundError: No module named 'surely_not_installed_pkg')"
            in out.stderr)


@pytest.mark.parametrize("content, message", [
    ("name: r\nname: s\ndata: {name: factor_world}\n", "duplicate key 'name' (first at line 1)"),
    ("name: r\ndata: {name: factor_world}\nalign: {loss: {lam: -.inf}}\n",
     "align.loss.lam: -inf is not a finite number"),
    ("name: r\ndata: {name: factor_world}\nalign: {train: {lr: .inf}}\n", "align.train.lr: inf is not a finite number"),
    ("name: r\ndata: {name: factor_world}\nx: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels deep"),
    # libyaml says "exceeded maximum nesting depth", PyYAML's own parser recurses: both are one line
    ("name: r\ndata: {name: factor_world}\nx: " + "[" * 3000 + "]" * 3000 + "\n", "nest"),
])
def test_a_malformed_recipe_is_one_clear_message_with_exit_2(tmp_path, content, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(content)
    out = run_cli("validate", str(recipe))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_recipe_not_in_utf8_is_a_clear_error(tmp_path, encoding):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes("name: café\ndata: {name: factor_world}\n".encode(encoding))
    out = run_cli("validate", str(recipe))
    assert out.returncode == 2 and "not UTF-8 text" in out.stderr and "Traceback" not in out.stderr


def test_a_recipe_that_is_not_a_regular_file_is_refused_before_reading(tmp_path):
    (tmp_path / "r.yaml").symlink_to("/dev/zero")
    out = run_cli("validate", str(tmp_path / "r.yaml"))
    assert out.returncode == 2 and "is not a regular file (a character device)" in out.stderr
