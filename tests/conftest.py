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


def assert_close_f32(actual: torch.Tensor, expected: torch.Tensor, *, depth: int = 1, scale: float | None = None,
                     msg: str | None = None) -> None:
    """Assert that two float32 results of the same maths, computed along different kernel paths,
    agree up to rounding on any CPU.

    Different paths (batched vs one at a time, another padded length, another module wiring, a copy
    built or loaded separately, a diffusers pipeline vs our code) sum in another order, and the BLAS
    blocking, SIMD width and thread count choose that order, so the difference changes from CPU to
    CPU (one comparison gives 1.2e-6 with one set of kernels, 0 with another): ``torch.equal`` or a
    hand-picked ``atol=1e-6`` there is a flaky test.

    Model: one op (matmul, conv, attention, normalisation) leaves a few float32 ulps relative to the
    magnitude of its terms; torch.testing's float32 defaults, rtol=1.3e-6 (about 11 ulps) and
    atol=1e-5, are sized for one op on values of order one. Through ``depth`` blocks (a resnet, a
    transformer layer, an MLP) after the paths part, differences add up at most linearly (residual
    and normalised layers do not amplify them), and absolute rounding follows the values' magnitude::

        rtol = 1.3e-6 * depth,   atol = 1e-5 * depth * scale,   scale = max(1, max|expected|)

    Pass ``scale`` for results much smaller than 1 by construction (tiny random weights), whose
    rounding is that much smaller too. Each call site states its depth. The differences measured
    (with several CPU kernel settings) are 50x or more below these bounds, and the bugs the tests
    guard against (another module, a leaked or missing token, a missing scale, other weights) move
    outputs by 1e-3 relative or more.
    """
    if scale is None:
        scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1.3e-6 * depth, atol=1e-5 * depth * scale, msg=msg)


#: Overrides that make the quickstart (media world, all four stages) take about half a minute.
TINY_T2AV = [
    "data.params.n_train=48", "data.params.n_val=8", "data.params.n_test=8", "data.params.p_object_named=1.0",
    "pretrain.autoencoder.steps=10", "pretrain.video.steps=10", "pretrain.audio.steps=10",
    "pretrain.autoencoder.val_every=10", "pretrain.video.val_every=10", "pretrain.audio.val_every=10",
    "pretrain.weights_dtype=float16",
    "align.train.steps=10", "align.train.val_every=10", "align.projector_train.steps=10",
    "align.projector_train.val_every=10", "align.probe.max_train_tokens=200",
    "finetune.train.steps=4", "finetune.train.val_every=4", "finetune.directions=[tv2a, ta2v]",
    "generate.prompts=3", "generate.batch_size=3", "generate.save_media=2", "model.sampler.params.steps=3",
    "model.video_backbone.params.block_out_channels=[32, 32]",
    "report.plot=false", "tracking.backend=none",
]


@pytest.fixture(scope="session")
def tiny_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny quickstart run directory: variants `two_stream` and `sava` (the unidirectional
    cascade), one seed, two saved samples each, with plots."""
    from sava_core.recipe import plan
    from sava_core.runner import run_plan

    out = tmp_path_factory.mktemp("tiny_quickstart") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SAVA_CACHE", str(out.parent / "cache"))
    try:
        run_plan(plan(REPO / "recipes" / "quickstart.yaml",
                      [*TINY_T2AV, "finetune.directions=[tv2a]", "report.plot=true",
                       "variants={two_stream: ['stages=[pretrain, generate]', generate.mode=two_stream], sava: []}"]),
                 out)
    finally:
        mp.undo()
    return out


class TinyRegression(torch.nn.Module):
    """A seeded linear regression objective, forward(x (B, 3), y (B, 1)) -> {"loss"}: the smallest thing a
    Trainer can fit, checkpoint and resume."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": (self.linear(x) - y).pow(2).mean()}
