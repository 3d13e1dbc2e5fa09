"""AV-Align (no learned weights): the reference implementation's protocol, run by `sava eval`, and
falling as the audio of real media-world clips is shifted against their video."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO, run_cli
from sava_core.evaluation import evaluate
from sava_core.media_io import write_mp4
from sava_core.registry import get_registries
from sava_metrics.avalign import peak_iou

SHIFTS = (0.0, 0.25, 0.5)
N_CLIPS = 64


def test_peak_iou_matches_each_peak_once_within_one_frame():
    assert peak_iou([0.5, 0.52], [0.5], fps=8) == pytest.approx(1 / 2)  # one peak, two onsets: one match
    assert peak_iou([0.5], [0.5 + 1 / 8], fps=8) == 0.0  # exactly one frame away: not within
    assert peak_iou([0.1, 1.0], [0.12, 1.05, 1.6], fps=8) == pytest.approx(2 / 3)
    assert peak_iou([], [], fps=8) is None


@pytest.fixture(scope="module")
def shifted_sets(tmp_path_factory):
    """64 media-world test clips, and the same with their audio delayed by 0.25 s and 0.5 s."""
    world = get_registries()["dataset"].build("media_world", {"n_train": 8, "n_val": 8, "n_test": N_CLIPS})
    root = tmp_path_factory.mktemp("av_align")
    clips = [world.media("test")[i] for i in range(N_CLIPS)]
    truth = [world.factors("test", i) for i in range(N_CLIPS)]
    sync = {}
    for shift in SHIFTS:
        audios = []
        for i, c in enumerate(clips):
            n = round(shift * c.sample_rate)
            audio = torch.cat([torch.zeros(c.audio.shape[0], n), c.audio[:, : c.audio.shape[1] - n]], 1)
            audios.append(audio)
            write_mp4(root / f"shift{shift}" / f"clip{i:03d}.mp4", c.video, c.fps, audio, c.sample_rate)
        sync[shift] = world.ground_truth_metrics(torch.stack([c.video for c in clips]), torch.stack(audios), truth,
                                                 0.1)["sync_error_ms"]
    return root, sync


def test_av_align_falls_as_the_audio_is_shifted_and_agrees_with_the_worlds_sync_error(shifted_sets):
    root, sync = shifted_sets
    scores = [evaluate(root / f"shift{s}", ["av_align"]).scores[0] for s in SHIFTS]
    values = [s["values"]["av_align"] for s in scores]
    assert values[0] > values[1] > values[2], values
    assert sync[SHIFTS[0]] < sync[SHIFTS[1]] < sync[SHIFTS[2]], sync
    protocol = scores[0]["protocol"]
    assert protocol["n_generated"] == N_CLIPS and "TempoTokens" in protocol["reference"]
    assert len({s["protocol_id"] for s in scores}) == 1  # the three sets are comparable


def test_sava_eval_lists_and_runs_av_align(shifted_sets, tmp_path):
    listed = run_cli("list", "metric", "--json")
    assert "av_align" in {row["name"] for row in json.loads(listed.stdout)}
    out = tmp_path / "scores.json"
    done = run_cli("eval", str(shifted_sets[0] / "shift0.0"), "--metric", "av_align", "--out", str(out), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert 0 < json.loads(out.read_text())["scores"][0]["values"]["av_align"] <= 1
