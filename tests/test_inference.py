"""`sava generate`: a finished run's SAVA on new prompts and on the user's own videos, resumable,
with one clear message (exit 2) for each mistake."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import av
import pytest
import torch

from conftest import REPO, run_cli
from sava_core.errors import SavaError
from sava_core.inference import GenerateOptions, generate_from_prompts, open_run, prompt_items, read_prompts
from sava_core.media_io import read_mp4, write_mp4
from sava_core.registry import get_registries

PROMPT = "a red ball bounces twice in front of a green wall"


@pytest.fixture
def run_dir(tiny_quickstart: Path) -> Path:
    return tiny_quickstart


def test_a_prompt_becomes_a_clip_the_world_can_check(run_dir, tmp_path):
    out = tmp_path / "gen"
    done = run_cli("--quiet", "generate", str(run_dir), "--prompt", PROMPT, "--out", str(out), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["generate.json", "generated.jsonl", "prompt-000.mp4",
                                                     "prompt-000.png", "prompt-000.txt", "prompt-000.wav"]
    assert done.stderr == ""  # --quiet: no progress
    with av.open(str(out / "prompt-000.mp4")) as container:
        assert (len(container.streams.video), len(container.streams.audio)) == (1, 1)
    video, audio, fps, rate = read_mp4(out / "prompt-000.mp4")
    assert (fps, rate, tuple(video.shape)) == (8.0, 8000, (16, 3, 32, 32))  # the world's clips
    world = get_registries()["dataset"].build("media_world", {"n_train": 48, "n_val": 8, "n_test": 8})
    asked = world.sample_factors(0, class_id=0, n_events=2, background=2)  # red ball, twice, green wall
    checks = world.ground_truth_metrics(video[None], audio[None], [asked], 0.1)
    assert {"sync_error_ms", "event_f1", "class_consistency", "video_class_acc", "count_acc"} <= set(checks)
    settings = json.loads((out / "generate.json").read_text())
    assert settings["cell"] == "runs/sava/seed-0" and settings["mode"] == "cascade"


def test_generation_resumes_and_refuses_other_settings_in_the_same_folder(run_dir, tmp_path):
    registries = get_registries()
    pipe, settings = open_run(run_dir, registries, GenerateOptions(batch_size=2))
    items = prompt_items([PROMPT, "something bounces once in front of a blue wall", "a yellow cube bounces twice"],
                         [])
    out = tmp_path / "gen"
    first = generate_from_prompts(pipe, settings, items, out)
    assert first == ["prompt-000", "prompt-001", "prompt-002"]
    whole = {p.name: p.read_bytes() for p in out.glob("prompt-*.wav")}
    (out / "prompt-001.txt").unlink()  # as if killed while writing the first batch
    (out / "prompt-002.png").unlink()
    again = generate_from_prompts(pipe, settings, items, out)
    assert again == ["prompt-001", "prompt-002"]
    assert {p.name: p.read_bytes() for p in out.glob("prompt-*.wav")} == whole  # the same clips as without the kill
    assert generate_from_prompts(pipe, settings, items, out) == []
    other, other_settings = open_run(run_dir, registries, GenerateOptions(batch_size=2, steps=2))
    with pytest.raises(SavaError, match="holds clips made with other settings \\(sampler differ\\)"):
        generate_from_prompts(other, other_settings, items, out)


def test_prompt_files_give_ids_and_seeds_and_bad_rows_are_named(tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text(json.dumps({"prompt": PROMPT, "id": "ball", "seed": 7}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    items = read_prompts(good)
    assert [(i.id, i.seed) for i in items] == [("ball", 7), ("prompts-0002", None)]
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("id,prompt\n../../escape,hello\n")
    with pytest.raises(SavaError, match=r"p.csv, row 1: id '../../escape' contains '/'"):
        read_prompts(csv_file)
    csv_file.write_text("prompt,seed\nhello,seven\n")
    with pytest.raises(SavaError, match="row 1: seed 'seven' is not an integer"):
        read_prompts(csv_file)
    with pytest.raises(SavaError, match="ids repeat"):
        prompt_items([], [good, good])


def test_mistakes_are_one_line_with_exit_2(run_dir, tmp_path):
    too_long = " ".join(["bounce"] * 40)
    cases = [
        (["generate", str(tmp_path), "--prompt", "x"], "holds no finished run cell"),
        (["generate", str(run_dir), "--prompt", too_long],
         "has 40 tokens; the text encoder HashTextEncoder reads at most 32"),
        (["generate", str(run_dir), "--video", str(tmp_path / "none.mp4")], "not found"),
        (["generate", str(run_dir)], "give --prompt TEXT, --prompts FILE or --video CLIP"),
        (["generate", str(run_dir), "--prompt", "x", "--mode", "sideways"], "not a generation mode"),
        (["generate", str(run_dir), "--prompt", "x", "--variant", "nope"], "no finished variant 'nope'"),
    ]
    other_version = tmp_path / "old_run"
    shutil.copytree(run_dir / "runs" / "sava", other_version / "runs" / "sava")
    cell_recipe = other_version / "runs" / "sava" / "seed-0" / "recipe.yaml"
    cell_recipe.write_text(cell_recipe.read_text() + "a_setting_from_another_version: 1\n")
    cases.append((["generate", str(other_version), "--prompt", "x"], "was it made by another version?"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    cases.append((["generate", str(run_dir), "--video", str(tmp_path / "broken.mp4"), "--out", str(tmp_path / "o")],
                  "cannot read"))
    for args, message in cases:
        done = run_cli(*args, cwd=REPO)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_a_video_gets_its_audio_muxed_onto_its_own_stream(run_dir, tmp_path):
    """One of the world's test videos, and the same at another rate and size (3 s, 24 fps, 64 x 48):
    each keeps its frames, rate and size; the new audio lasts as long as the video."""
    world = get_registries()["dataset"].build("media_world", {"n_train": 48, "n_val": 8, "n_test": 8})
    clip = world.media("test")[0]
    write_mp4(tmp_path / "in" / "world.mp4", clip.video, clip.fps, clip.audio, clip.sample_rate)
    (tmp_path / "in" / "world.txt").write_text(clip.caption)
    big = torch.nn.functional.interpolate(clip.video, size=(48, 64), mode="bilinear")
    big = big.repeat_interleave(3, 0).repeat(2, 1, 1, 1)[:72]  # 24 fps, 3 s: longer than one 2 s window
    t = torch.arange(3 * 16000) / 16000
    write_mp4(tmp_path / "in" / "big.mp4", big, 24.0, 0.2 * torch.sin(2 * math.pi * 440 * t)[None], 16000)
    out = tmp_path / "gen"
    done = run_cli("generate", str(run_dir), "--video", str(tmp_path / "in"), "--out", str(out), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "video to audio: 2/2 videos (100%)" in done.stderr  # plain progress lines when not a terminal
    expected = {"world": (16, 8.0, (32, 32), 2.0), "big": (72, 24.0, (48, 64), 3.0)}
    for name, (frames, fps, size, seconds) in expected.items():
        video, audio, got_fps, rate = read_mp4(out / f"{name}.mp4")
        assert (video.shape[0], got_fps, tuple(video.shape[2:])) == (frames, fps, size)
        assert rate == 8000 and audio.shape[-1] == round(seconds * rate)
        assert audio.abs().max() > 0
    original, _, _, _ = read_mp4(tmp_path / "in" / "big.mp4")
    assert torch.equal(read_mp4(out / "big.mp4")[0], original)  # the video stream is copied, not re-encoded
    assert (out / "world.txt").read_text().strip() == clip.caption
    rows = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
    assert {r["id"]: r["windows"] for r in rows} == {"big": 2, "world": 1}
