"""Shared fixtures: one torch thread, plug-in distributions made from real entry-point metadata,
a CLI runner, and tiny recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from sava_core.registry import reset_registries

torch.set_num_threads(1)

TESTS = Path(__file__).parent
REPO = TESTS.parent
EXAMPLE_PLUGIN = TESTS / "example_plugin"

#: Overrides that make any factor-world Stage I recipe take about a second.
TINY = [
    "data.params.n_train=200",
    "data.params.n_val=20",
    "data.params.n_test=100",
    "align.train.steps=30",
    "align.train.batch_size=32",
    "align.train.val_every=10",
    "align.train.checkpoint_every=10",
    "align.projector_train.steps=20",
    "align.projector_train.val_every=10",
    "align.probe.max_train_tokens=500",
    "report.plot=false",
    "tracking.backend=none",
]


def make_distribution(site: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    """Write ``<name>-<version>.dist-info`` with METADATA and a ``sava.plugins`` entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[sava.plugins]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the example plug-in's distribution metadata (read from its
    pyproject.toml, exactly what `pip install` would write)."""
    site = tmp_path_factory.mktemp("example_site")
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    make_distribution(site, project["name"], project["version"], project["entry-points"]["sava.plugins"])
    return site


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with a plug-in whose import raises."""
    site = tmp_path_factory.mktemp("broken_site")
    (site / "sava_broken_plugin.py").write_text("raise RuntimeError('this plug-in is broken on purpose')\n")
    make_distribution(site, "sava-broken-plugin", "9.9.9", {"broken": "sava_broken_plugin"})
    return site


@pytest.fixture
def with_example_plugin(example_site: Path, monkeypatch: pytest.MonkeyPatch):
    """Make the example plug-in discoverable in this process."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    monkeypatch.syspath_prepend(str(example_site))
    reset_registries()
    yield
    reset_registries()


@pytest.fixture(autouse=True)
def _fresh_registries():
    reset_registries()
    yield
    reset_registries()


def run_cli(*args: str, extra_path: list[Path] = (), env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``sava ARGS`` in a fresh interpreter; returns the completed process (text output)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), full_env.get("PYTHONPATH", "")])
    full_env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "sava_cli.main", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
