"""Scale-out and recovery: several processes, SIGKILL and resume, shards and `sava report`,
interrupted checkpoint writes, experiment tracking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_cli
from sava_core.errors import SavaError
from sava_core.recipe import plan
from sava_core.runner import merge_runs, run_plan

QUICKSTART = REPO / "recipes" / "align_quickstart.yaml"
#: Audit metrics of a 2-process run agree with a 1-process run to this absolute tolerance: the
#: gradients are the same up to the order of floating-point reductions.
PROCESS_TOLERANCE = 1e-3


def metrics_of(out: Path) -> dict[str, dict[str, float]]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in sorted(out.glob("runs/*/seed-*/metrics.json"))}


def test_two_cpu_processes_reach_the_same_audit_as_one(tmp_path):
    cpu_only = {"CUDA_VISIBLE_DEVICES": ""}  # two CPU processes also on a machine with a GPU
    one = run_cli("run", "align_quickstart", *TINY, "--out", str(tmp_path / "one"), cwd=REPO, env=cpu_only)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1", **cpu_only}
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sava_cli.main",
         "run", "align_quickstart", *TINY, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["processes"] == 2
    a, b = metrics_of(tmp_path / "one"), metrics_of(tmp_path / "two")
    assert a.keys() == b.keys() and a
    for cell in a:
        for name, value in a[cell].items():
            assert b[cell][name] == pytest.approx(value, abs=PROCESS_TOLERANCE), (cell, name)


LONG = [*TINY, "align.train.steps=600", "align.train.checkpoint_every=50", "align.train.val_every=300"]


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path):
    whole = run_cli("run", "align_quickstart", *LONG, "--out", str(tmp_path / "whole"), cwd=REPO)
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sava_cli.main", "run", "align_quickstart", *LONG,
                             "--out", str(cut)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = cut / "runs" / "none" / "seed-0" / "checkpoints" / "align" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not (cut / "runs" / "none" / "seed-0" / "metrics.json").exists(), "killed too late"
    resumed = run_cli("run", "align_quickstart", *LONG, "--out", str(cut), "--resume", cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_of(cut) == metrics_of(tmp_path / "whole")  # exactly, on the CPU


def test_a_checkpoint_interrupted_while_written_leaves_the_previous_one_usable(tmp_path, monkeypatch):
    from accelerate import Accelerator

    whole = run_plan(plan(QUICKSTART, TINY), tmp_path / "whole").cells
    original = Accelerator.save_state
    calls = {"n": 0}

    def crash_midway(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint of the first phase: write half of it, then die
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
            raise OSError("killed while writing")
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", crash_midway)
    with pytest.raises(OSError):
        run_plan(plan(QUICKSTART, TINY), tmp_path / "cut")
    ckpt = tmp_path / "cut" / "runs" / "none" / "seed-0" / "checkpoints" / "align"
    assert (ckpt / "latest").read_text().strip() == "step-00000010"
    monkeypatch.setattr(Accelerator, "save_state", original)
    assert run_plan(plan(QUICKSTART, TINY), tmp_path / "cut", resume=True).cells == whole


def test_two_shards_merged_by_report_give_the_whole_table(tmp_path):
    overrides = [*TINY, "seeds=[0, 1]"]
    whole = run_plan(plan(QUICKSTART, overrides), tmp_path / "whole")
    for i in (1, 2):
        run_plan(plan(QUICKSTART, overrides), tmp_path / f"shard{i}", shard=(i, 2))
    rows = [(tmp_path / f"shard{i}" / "results.csv").read_text().count("\n") - 1 for i in (1, 2)]
    assert rows == [2, 2]  # each shard ran and tabled its own half of the 2 x 2 grid
    out = run_cli("report", str(tmp_path / "shard1"), str(tmp_path / "shard2"), "--out", str(tmp_path / "merged"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "merged" / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()
    assert (tmp_path / "merged" / "results.csv").read_text() == (tmp_path / "whole" / "results.csv").read_text()
    assert whole.table in out.stdout
    with pytest.raises(SavaError, match="missing runs"):
        merge_runs([tmp_path / "shard1"], tmp_path / "partial")


def test_report_refuses_runs_of_different_recipes(tmp_path):
    run_plan(plan(QUICKSTART, [*TINY, "seeds=[1]"]), tmp_path / "a")
    run_plan(plan(QUICKSTART, [*TINY, "align.width=16"]), tmp_path / "b")
    out = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"))
    assert out.returncode == 2 and "differ outside the grid at align.width" in out.stderr


def test_tensorboard_tracking_writes_event_files(tmp_path):
    run_plan(plan(QUICKSTART, [*TINY, "tracking.backend=tensorboard", "variants={one: []}"]), tmp_path / "run")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracking = tmp_path / "run" / "runs" / "one" / "seed-0" / "tracking"
    for phase in ("align", "projector"):
        scalars = EventAccumulator(str(tracking / phase)).Reload().Tags()["scalars"]
        assert {"train/loss", "val/loss"} <= set(scalars), (phase, scalars)
