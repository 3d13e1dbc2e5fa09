"""Several processes (`accelerate launch`, two CPU processes over gloo): the generate stage, the
latent cache and `sava generate` share their work out and give exactly what one process gives.

Each pair of runs differs only in the launcher: the same tiny models (the media world's generators
from the `tiny_quickstart` run, so nothing is pretrained here), the same settings, one torch
thread per process, the CPU. Training under two processes shards the batches and may differ from
one process; so the generate stage is compared on a cell without training (two-stream: the
pretrained T2V and T2A) and the latent cache on a cell that only aligns (the cache is built before
training; the audit's agreement is tests/test_scale.py's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
from safetensors import safe_open

from conftest import REPO, TINY_T2AV, run_cli
from sava_core.media_io import read_mp4

#: 5 prompts in batches of 2: batches of 2, 2 and 1 prompts, two to the main process, one to the other.
OVERRIDES = [
    *TINY_T2AV, "generate.prompts=5", "generate.batch_size=2", "generate.save_media=3", "generate.sensitivity=true",
    "variants={cache: ['stages=[pretrain, align]'], stage: ['stages=[pretrain, generate]', generate.mode=two_stream]}",
]
CPU = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # two CPU processes also on a machine with a GPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``sava ARGS`` under ``accelerate launch`` with two CPU processes (accelerate 1.x: ``--multi_gpu``
    without a visible GPU starts them over gloo; ``--cpu`` would need mpirun)."""
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), "-m", "sava_cli.main", *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **CPU, **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights_of(run: Path) -> str:
    """The media world's pretrained weights a finished run's cell used."""
    return json.loads((run / "runs" / "sava" / "seed-0" / "pretrained.json").read_text())["weights"]


@pytest.fixture(scope="module")
def runs(tiny_quickstart: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The same recipe run by one process and by two: {processes: folder holding run/ and cache/}."""
    base = tmp_path_factory.mktemp("distributed")
    args = ["run", "quickstart", *OVERRIDES, f"pretrain.weights={weights_of(tiny_quickstart)}"]
    one = run_cli(*args, "--out", str(base / "1" / "run"), cwd=REPO,
                  env={**CPU, "SAVA_CACHE": str(base / "1" / "cache")})
    assert one.returncode == 0, one.stderr[-3000:]
    launch_two(*args, "--out", str(base / "2" / "run"), env={"SAVA_CACHE": str(base / "2" / "cache")})
    assert json.loads((base / "2" / "run" / "environment.json").read_text())["processes"] == 2
    return {1: base / "1", 2: base / "2"}


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def assert_same_clips(a: Path, b: Path, names: list[str]) -> None:
    """The clips (mp4 video and audio, wav, captions) under ``a`` and ``b`` are equal, bit for bit."""
    for name in names:
        if name.endswith(".mp4"):
            for x, y in zip(read_mp4(a / name), read_mp4(b / name)):
                assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y), name
        elif name.endswith(".wav"):
            assert (soundfile.read(a / name)[0] == soundfile.read(b / name)[0]).all(), name
        elif name.endswith((".txt", ".json", ".jsonl")):
            assert (a / name).read_text() == (b / name).read_text(), name


# Exact comparisons: each batch is sampled (each cache batch encoded) with the same code, inputs,
# seed and kernels (one thread, the CPU) whichever process does it, and gathering moves tensors
# between processes unchanged, so two processes give the bits one process gives.


def test_the_generate_stage_under_two_processes_gives_the_samples_and_metrics_of_one(runs):
    cells = {n: runs[n] / "run" / "runs" / "stage" / "seed-0" for n in runs}
    metrics = {n: json.loads((cells[n] / "metrics.json").read_text()) for n in cells}
    timed = [k for k in metrics[1] if k.startswith("seconds_per_clip")]
    assert {"fd_video_ae", "audio_change_audible", "sync_error_ms", "av_align"} <= metrics[1].keys()
    assert {k: v for k, v in metrics[2].items() if k not in timed} == \
        {k: v for k, v in metrics[1].items() if k not in timed}
    names = files(cells[1] / "samples")
    assert names == files(cells[2] / "samples") and "sample-002.wav" in names  # from the second process's batch
    assert_same_clips(cells[1] / "samples", cells[2] / "samples", names)
    clips = files(cells[1] / "eval" / "clips")
    assert clips == files(cells[2] / "eval" / "clips") and len(clips) == 10  # 5 clips and their captions
    assert_same_clips(cells[1] / "eval" / "clips", cells[2] / "eval" / "clips", clips)


def test_the_latent_cache_built_by_two_processes_is_the_one_one_process_builds(runs):
    roots = {n: runs[n] / "cache" / "latents" for n in runs}
    entries = {n: files(roots[n]) for n in roots}
    assert entries[1] == entries[2] and len([e for e in entries[1] if e.endswith("index.json")]) == 3
    for name in entries[1]:
        a, b = roots[1] / name, roots[2] / name
        if name.endswith(".safetensors"):
            with safe_open(str(a), framework="pt") as x, safe_open(str(b), framework="pt") as y:
                assert x.metadata() == y.metadata() and sorted(x.keys()) == sorted(y.keys()), name
                for key in x.keys():
                    assert torch.equal(x.get_tensor(key), y.get_tensor(key)), (name, key)
        else:
            stamps = {"created", "updated"}
            first, second = (json.loads(p.read_text()) for p in (a, b))
            assert {k: v for k, v in first.items() if k not in stamps} == \
                {k: v for k, v in second.items() if k not in stamps}, name
    train = json.loads(next(p for p in roots[2].glob("*/index.json")
                            if json.loads(p.read_text())["split"] == "train").read_text())
    assert train["complete"] and train["shards"][0]["rows"] == 48  # 6 batches of 8, 3 encoded by each process


def test_sava_generate_under_two_processes_writes_the_clips_of_one(tiny_quickstart, tmp_path):
    prompts = ["a red ball bounces twice in front of a green wall", "something bounces once",
               "a yellow cube bounces three times"]
    args = ["--quiet", "generate", str(tiny_quickstart), *(a for p in prompts for a in ("--prompt", p)),
            "--batch-size", "1"]  # three batches: two to the main process, one to the other
    one = run_cli(*args, "--out", str(tmp_path / "1"), cwd=REPO, env=CPU)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch_two(*args, "--out", str(tmp_path / "2"), env={})
    assert two.stdout.count("3 clip(s) written") == 1  # printed by the main process only
    names = files(tmp_path / "1")
    assert names == files(tmp_path / "2") and len(names) == 2 + 4 * len(prompts)
    assert_same_clips(tmp_path / "1", tmp_path / "2", names)  # generated.jsonl too: the same rows in the same order
