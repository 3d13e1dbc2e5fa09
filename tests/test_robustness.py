"""Robustness (issue #22): resume after a kill between a checkpoint's rename and its pointer, one run
per run directory at a time, inputs that are not regular files, and collapsed runs flagged."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, TinyRegression, run_cli
from sava_core.clips import ClipSet
from sava_core.config import TrainConfig
from sava_core.decode import check_media, probe
from sava_core.errors import SavaError
from sava_core.io import not_regular, require_file
from sava_core.recipe import plan
from sava_core.registry import get_registries
from sava_core.rundir import collapse_flags, run_lock
from sava_core.runner import merge_runs, run_plan
from sava_core.training import Trainer

QUICKSTART = REPO / "recipes" / "align_quickstart.yaml"
ONE = [*TINY, "variants={one: []}"]
DEV_ZERO = Path("/dev/zero")
needs_dev_zero = pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero")


# ----------------------------------------------------------------------------------- resume


X = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
Y = X.sum(1, keepdim=True)
CONFIG = TrainConfig(steps=15, batch_size=8, lr=0.1, val_every=5, checkpoint_every=5)


def _fit(folder: Path, resume: bool = False) -> tuple[Trainer, dict[str, float]]:
    trainer = Trainer(TinyRegression(), CONFIG, seed=0, cpu=True, checkpoint_dir=folder)
    last = trainer.fit(lambda i: (X[i], Y[i]), len(X), validate=lambda obj: {"loss": float(obj(X, Y)["loss"])},
                       resume=resume)
    return trainer, last


def _kill_after_rename(folder: Path, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """Train into ``folder`` until the checkpoint of step ``at`` is renamed into place, then leave what
    a SIGKILL there leaves: no ``latest``, the pointer's temporary file, and a later checkpoint's
    temporary directory."""
    original = Trainer.train_step

    def stop(self, batch, n_train):
        if self.step == at:
            raise KeyboardInterrupt
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", stop)
    with pytest.raises(KeyboardInterrupt):
        _fit(folder)
    monkeypatch.setattr(Trainer, "train_step", original)
    (folder / "latest").unlink()
    (folder / ".latest.k1ll3d.tmp").write_text("step-")
    (folder / f".tmp-step-{at + 5:08d}").mkdir()
    (folder / f".tmp-step-{at + 5:08d}" / "model.safetensors").write_bytes(b"half a file")


def test_resume_finds_the_checkpoint_a_kill_left_without_its_pointer_and_tidies_up(tmp_path, monkeypatch):
    whole, whole_val = _fit(tmp_path / "whole")
    cut = tmp_path / "cut"
    _kill_after_rename(cut, monkeypatch, at=10)
    (cut / "step-00000099").mkdir()  # a step directory without trainer.json is not a checkpoint
    steps: list[int] = []
    original = Trainer.train_step

    def record(self, batch, n_train):
        steps.append(self.step)
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", record)
    resumed, resumed_val = _fit(cut, resume=True)
    assert steps == [10, 11, 12, 13, 14]  # from the step-10 checkpoint, not from 0
    assert torch.equal(resumed.objective.linear.weight, whole.objective.linear.weight)
    assert resumed_val == whole_val
    assert not list(cut.glob(".latest.*.tmp")) and not list(cut.glob(".tmp-step-*"))
    assert (cut / "latest").read_text().strip() == "step-00000015"


def test_a_stale_pointer_does_not_hide_a_newer_checkpoint(tmp_path, monkeypatch):
    _kill_after_rename(tmp_path, monkeypatch, at=10)
    (tmp_path / "latest").write_text("step-00000005\n")  # the pointer the kill did not get to replace
    trainer = Trainer(TinyRegression(), CONFIG, seed=0, cpu=True, checkpoint_dir=tmp_path)
    assert trainer.latest_checkpoint() == tmp_path / "step-00000010"
    trainer.tidy_checkpoints()
    assert (tmp_path / "latest").read_text().strip() == "step-00000010"


def test_resuming_a_finished_phase_returns_its_last_validation(tmp_path):
    _, last = _fit(tmp_path)
    _, again = _fit(tmp_path, resume=True)
    assert again == last and math.isfinite(again["loss"])


def test_a_run_resumes_after_a_kill_between_rename_and_pointer(tmp_path, monkeypatch):
    whole = run_plan(plan(QUICKSTART, ONE), tmp_path / "whole").cells
    original = Trainer.train_step

    def stop(self, batch, n_train):
        if self.name == "align" and self.step == 25:
            raise KeyboardInterrupt
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", stop)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan(QUICKSTART, ONE), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    cell = tmp_path / "cut" / "runs" / "one" / "seed-0"
    ckpt = cell / "checkpoints" / "align"
    (ckpt / "latest").unlink()
    (ckpt / ".latest.abcd1234.tmp").write_text("")
    assert run_plan(plan(QUICKSTART, ONE), tmp_path / "cut", resume=True).cells == whole
    events = [json.loads(line) for line in (cell / "log.jsonl").read_text().splitlines()]
    assert {"event": "resumed", "phase": "align", "step": 20} in events
    assert not list(ckpt.glob(".latest.*.tmp"))


# ----------------------------------------------------------------------------------- the run lock


HOLD = """
import sys, time
from pathlib import Path
from sava_core.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_into_a_locked_directory_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(SavaError, match=rf"{out} is in use by pid {holder.pid} on \S+ \(since ") as err:
            run_plan(plan(QUICKSTART, ONE), out)
        assert "released when its process exits, even if killed" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder released the lock: the run starts in the directory holding only the lock file
    assert [p.name for p in out.iterdir()] == [".lock"]
    run_plan(plan(QUICKSTART, ONE), out)
    assert (out / "results.md").is_file()
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()


def test_the_lock_conflicts_within_one_process_and_is_released_after_the_run(tmp_path):
    out = tmp_path / "run"
    run_plan(plan(QUICKSTART, ONE), out)
    with run_lock(out):
        with pytest.raises(SavaError, match=f"in use by pid {os.getpid()}"):
            run_plan(plan(QUICKSTART, ONE), out, resume=True)
        with pytest.raises(SavaError, match=f"in use by pid {os.getpid()}"):
            merge_runs([out], out)  # `sava report` writes the directory too
    assert run_plan(plan(QUICKSTART, ONE), out, resume=True).cells  # released: finished cells are kept


# ----------------------------------------------------------------------------------- not regular files


def test_not_regular_says_what_a_path_is(tmp_path):
    (tmp_path / "file.csv").write_text("video\n")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere")
    assert not_regular(tmp_path / "file.csv") is None
    assert not_regular(tmp_path) == "a directory"
    assert not_regular(tmp_path / "pipe.csv") == "a named pipe"
    assert not_regular(tmp_path / "dangling.csv") == "missing"
    with pytest.raises(SavaError, match=r"manifest .*pipe.csv is not a regular file \(a named pipe\); give a file"):
        require_file(tmp_path / "pipe.csv", "manifest")
    with pytest.raises(SavaError, match="not found"):
        require_file(tmp_path / "dangling.csv")


def _zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(DEV_ZERO)
    return path


@needs_dev_zero
def test_data_manifests_that_are_devices_are_refused_before_reading(tmp_path):
    datasets = get_registries()["dataset"]
    device = r"is not a regular file \(a character device\); give a file"
    with pytest.raises(SavaError, match=rf"manifest {tmp_path / 'folder.csv'} {device}"):
        datasets.build("folder", {"manifest": str(_zero(tmp_path / "folder.csv"))})
    with pytest.raises(SavaError, match=f"manifest .*vggsound.csv {device}"):
        datasets.build("vggsound", {"manifest": str(_zero(tmp_path / "vggsound.csv"))})
    with pytest.raises(SavaError, match=f"manifest .*train.csv {device}"):
        datasets.build("audiocaps", {"manifest": str(_zero(tmp_path / "audiocaps" / "train.csv").parent)})
    (tmp_path / "ok.csv").write_text("abc,30,dog,train\n")
    with pytest.raises(SavaError, match=f"captions file .*captions.csv {device}"):
        datasets.build("vggsound", {"manifest": str(tmp_path / "ok.csv"),
                                    "captions": str(_zero(tmp_path / "captions.csv"))})


@needs_dev_zero
def test_clip_manifests_clips_and_captions_that_are_devices_are_refused(tmp_path):
    device = r"is not a regular file \(a character device\)"
    with pytest.raises(SavaError, match=f"clip manifest .*clips.jsonl {device}"):
        ClipSet.from_path(_zero(tmp_path / "clips.jsonl"))
    _zero(tmp_path / "folder" / "a.wav")
    with pytest.raises(SavaError, match=f"clip .*a.wav {device}"):
        ClipSet.from_path(tmp_path / "folder")[0]
    _zero(tmp_path / "folder" / "a.txt")
    with pytest.raises(SavaError, match=f"caption file .*a.txt {device}"):
        ClipSet.from_path(tmp_path / "folder")


@needs_dev_zero
def test_media_that_is_a_device_is_a_listed_problem(tmp_path):
    from sava_core.decode import MediaError

    clip = _zero(tmp_path / "clip.mp4")
    with pytest.raises(MediaError, match=r"not a regular file \(a character device\)"):
        probe(clip)
    assert check_media(clip) == ["not a regular file (a character device)"]


@needs_dev_zero
@pytest.mark.parametrize("args", [["data", "check", "{link}"], ["eval", "{link}", "-m", "fad"]])
def test_the_cli_refuses_a_device_manifest_with_one_line_and_exit_2(tmp_path, args):
    link = _zero(tmp_path / "manifest.csv")
    out = run_cli(*[a.format(link=link) for a in args], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{link} is not a regular file (a character device)" in lines[0], out.stderr


# ----------------------------------------------------------------------------------- collapse


def test_collapse_flags_rules():
    healthy = {"shared_r2": 0.66, "leak_r2": -2.5, "proj_r2": -0.4, "density": 0.499, "mask_mean": 0.5,
               "support_jaccard": 1.0, "closed_exact_v": 0.3, "open_exact_a": 1.0, "xrec": 1.7, "fad": 12.0}
    assert collapse_flags(healthy) == []
    assert collapse_flags({"density": 0.0, "mask_mean": 0.2}) == []  # a soft mask shrunk below the threshold
    flags = collapse_flags({"density": 0.0, "mask_mean": 0.0, "closed_exact_a": 1.0, "proj_r2": -3.9e11,
                            "leak_r2_v": float("nan"), "xrec": float("inf"), "mask_mean_a": 1.2, "shared_r2": 1.5,
                            "density_v": -0.1})
    assert [str(f) for f in flags] == [
        "collapsed: density 0.000", "collapsed: closed_exact_a 1.000", "collapsed: proj_r2 -3.9e+11",
        "non-finite: leak_r2_v nan", "non-finite: xrec inf", "impossible: mask_mean_a 1.200",
        "impossible: shared_r2 1.500", "impossible: density_v -0.100",
    ]
    assert "align.loss.lam" in flags[0].hint


def test_a_collapsed_run_is_warned_about_and_flagged_in_the_tables(tmp_path, capsys):
    collapse = [*ONE, "align.loss.lam=1000", "align.train.lr=0.05"]  # the sparsity term closes every gate
    result = run_plan(plan(QUICKSTART, collapse), tmp_path / "run")
    assert result.cells[0][2]["density"] == 0.0
    warning = "one/seed-0: collapsed: density 0.000 after the align stage; every mask entry is closed"
    assert f"warning: {warning}" in capsys.readouterr().err
    assert warning in (tmp_path / "run" / "sava.log").read_text()
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| flags |" in table and "seed 0: collapsed: density 0.000; collapsed: proj_r2 " in table
    assert "collapsed: density 0.000" in (tmp_path / "run" / "results.csv").read_text().splitlines()[1]
    merged = merge_runs([tmp_path / "run"], tmp_path / "merged")  # recomputed from metrics.json
    assert "seed 0: collapsed: density 0.000" in merged.table
    healthy = run_plan(plan(QUICKSTART, ONE), tmp_path / "healthy")
    assert "flags" not in healthy.table and "flags" not in (tmp_path / "healthy" / "results.csv").read_text()
