"""The media world: the plug-in contract, clip shapes and determinism, the causal factor groups, and
the ground-truth checkers (event detectors, class classifiers) on rendered clips."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
from pydantic import ValidationError

from sava_core.contracts import Clip
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests
from sava_synth.events import (
    classify_audio,
    classify_video,
    detect_audio_events,
    detect_visual_events,
    match_events,
)
from sava_synth.media_world import CLASSES, MediaFactors, MediaWorld
from sava_synth.params import MediaWorldParams

TINY = {"n_train": 3, "n_val": 2, "n_test": 4, "duration": 1.0}
NOISY = {"p_wind": 1.0, "p_hum": 1.0, "p_offscreen": 1.0}


class TestMediaWorldKit(ComponentTests):
    """The plug-in test kit's checks on the first test clip."""

    kind, name = "dataset", "media_world"
    params = TINY
    expected_shape = (8, 3, 32, 32)

    def inputs(self):
        return ("test",)


def world(**params) -> MediaWorld:
    return get_registries()["dataset"].build("media_world", {**TINY, **params})


def test_clips_have_the_requested_shapes_rates_and_ranges():
    w = world(height=24, width=40, fps=10, duration=1.5, sample_rate=11025, n_test=3)
    split = w.media("test")
    assert len(split) == 3 and len(w.media("train")) == 3 and len(w.media("val")) == 2
    clip = split[-1]
    assert isinstance(clip, Clip) and clip.meta["index"] == 2 and clip.meta["split"] == "test"
    assert clip.video.shape == (15, 3, 24, 40) and clip.video.dtype == torch.float32
    assert clip.audio.shape == (1, round(1.5 * 11025))
    assert clip.fps == 10 and clip.sample_rate == 11025 and clip.duration == pytest.approx(1.5)
    assert 0 <= clip.video.min() and clip.video.max() <= 1 and clip.audio.abs().max() <= 1
    with pytest.raises(IndexError):
        split[3]
    with pytest.raises(KeyError):
        w.media("holdout")


def test_clips_are_deterministic_functions_of_seed_split_and_index():
    a, b = world(**NOISY).media("train"), world(**NOISY).media("train")
    clip = a[1]
    assert torch.equal(clip.video, b[1].video) and torch.equal(clip.audio, b[1].audio)
    assert clip.caption == b[1].caption and clip.meta == b[1].meta
    assert not torch.equal(clip.audio, a[0].audio)
    assert not torch.equal(clip.audio, world(**NOISY).media("val")[1].audio)
    assert not torch.equal(clip.audio, world(**NOISY, seed=1).media("train")[1].audio)
    again = pickle.loads(pickle.dumps(a))  # DataLoader workers receive the split pickled
    assert torch.equal(again[1].video, clip.video)


def test_meta_holds_the_ground_truth_and_renders_back():
    w = world(max_events=3, **NOISY)
    clip = w.media("test")[0]
    m = clip.meta
    times = m["event_times"]
    assert 1 <= m["n_events"] == len(times) <= 3 and times == sorted(times)
    assert all(b - a >= 0.3 - 1e-9 for a, b in zip(times, times[1:]))
    assert 1 / 8 <= times[0] and times[-1] <= (8 - 2) / 8
    assert m["class_name"] == f"{CLASSES[m['class_id']].colour_name} {CLASSES[m['class_id']].noun}"
    assert m["wind"] and m["hum"] and m["offscreen"] and m["offscreen_times"]
    assert clip.caption.split(" ", 1)[1].startswith(f"{m['class_name']} bounces ")
    assert f"{m['background']} wall" in clip.caption
    assert "wind blowing" in clip.caption and "a low hum" in clip.caption and "off-screen" in clip.caption
    rendered = w.render(MediaFactors(**m["factors"]))
    assert torch.equal(rendered.video, clip.video) and torch.equal(rendered.audio, clip.audio)


def test_prompt_factors_change_one_attribute_under_a_seed():
    """Changing a video-only factor leaves the audio untouched, an audio-only factor the video, and
    the class (shared) changes both; everything else stays as drawn from the seed."""
    w = world(n_classes=4, p_static=1.0)
    base = w.sample_factors(7, class_id=0, background=0, wind=False, n_events=2)
    assert base.class_id == 0 and base.background == 0 and not base.wind and base.n_events == 2
    clip = w.render(base)
    for change, video_same, audio_same in (
        ({"background": 1}, False, True),
        ({"static_object": None}, False, True),
        ({"wind": True}, True, False),
        ({"class_id": 2}, False, False),
    ):
        other = w.sample_factors(7, **{"class_id": 0, "background": 0, "wind": False, "n_events": 2, **change})
        assert dataclasses.replace(base, **change) == other
        pair = w.render(other)
        assert torch.equal(pair.video, clip.video) == video_same
        assert torch.equal(pair.audio, clip.audio) == audio_same
        assert pair.caption != clip.caption
    with pytest.raises(ValueError):
        w.sample_factors(7, colour="red")
    with pytest.raises(ValueError):
        w.sample_factors(7, class_id=4)


def test_captions_leave_the_object_unnamed_at_the_requested_rate():
    """`p_object_named` < 1: some captions say "something" (only the picture tells the class); the
    clip, its class and every other factor are what the same seed gives with the object named."""
    w = world(n_train=200, p_object_named=0.5)
    named = [w.factors("train", i).object_named for i in range(200)]
    assert 0.35 < sum(named) / len(named) < 0.65
    i = named.index(False)
    clip = w.clip("train", i)
    assert clip.caption.startswith("something bounces ") and clip.meta["caption_factors"]["object"] is None
    assert not any(c.noun in clip.caption for c in CLASSES)
    shown = w.render(dataclasses.replace(w.factors("train", i), object_named=True))
    assert torch.equal(shown.video, clip.video) and torch.equal(shown.audio, clip.audio)
    assert shown.caption.startswith(f"{_article_of(shown.meta['class_name'])} {shown.meta['class_name']} bounces ")
    assert all(world(n_train=200).factors("train", j).object_named for j in range(20))  # default: always named
    edits = w.prompt_edits(8, seed=0)
    assert all(f.object_named for pairs in edits.values() for _, f in pairs)


def _article_of(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def test_class_checks_split_by_whether_the_prompt_names_the_object():
    """Faithfulness to the class is scored only on prompts naming it; consistency is split in two."""
    w = world(duration=2.0, n_classes=4)
    named = w.sample_factors(1, class_id=0, object_named=True)
    unnamed = w.sample_factors(2, class_id=1, object_named=False)
    clips = [w.render(named), w.render(unnamed)]
    video = torch.stack([c.video for c in clips])
    audio = torch.stack([clips[0].audio, w.render(dataclasses.replace(unnamed, class_id=2)).audio])
    m = w.ground_truth_metrics(video, audio, [named, unnamed], tolerance_s=0.25)
    assert m["class_consistency_named"] == 1.0 and m["class_consistency_unnamed"] == 0.0
    assert m["class_consistency"] == 0.5
    assert m["video_class_acc"] == 1.0 and m["audio_class_acc"] == 1.0  # the named prompt only
    only_named = w.ground_truth_metrics(video[:1], audio[:1], [named], tolerance_s=0.25)
    assert "class_consistency_named" not in only_named and "class_consistency_unnamed" not in only_named


def test_sync_error_of_rendered_clips_is_far_below_its_shuffled_chance_level():
    """Each clip's audio against its own video is in sync; against the next clip's video it is not."""
    w = world(n_test=6, duration=2.0, n_classes=4)
    clips = list(w.media("test"))
    video, audio = torch.stack([c.video for c in clips]), torch.stack([c.audio for c in clips])
    m = w.ground_truth_metrics(video, audio, [w.factors("test", i) for i in range(6)], tolerance_s=0.25)
    assert m["sync_error_ms"] < 1000 / w.params.fps
    assert m["sync_error_ms_shuffled"] > 4 * m["sync_error_ms"] + 50


def test_params_reject_impossible_worlds():
    with pytest.raises(ValidationError):
        MediaWorldParams(height=31)
    with pytest.raises(ValidationError):
        MediaWorldParams(duration=1.0, max_events=5)
    with pytest.raises(ValidationError):
        MediaWorldParams(min_events=3, max_events=2)


def test_match_events_counts_and_offsets():
    m = match_events([0.10, 0.52, 0.90], [0.1, 0.5, 1.5], tolerance_s=0.05)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["offset_ms"] == pytest.approx(10.0)
    assert match_events([0.5, 0.51], [0.5], 0.1)["n_matched"] == 1  # one-to-one
    assert match_events([], [], 0.1)["f1"] == 1.0
    empty = match_events([], [0.3], 0.1)
    assert empty["f1"] == 0.0 and math.isnan(empty["offset_ms"])


def test_detectors_and_classifiers_recover_the_ground_truth():
    """20 clips with wind, hum and off-screen chirps: impacts found in each modality within one
    frame, and the class read from the colour and from the pitch."""
    w = world(n_test=20, duration=2.0, max_events=4, n_classes=4, **NOISY)
    frame_ms = 1000 / w.params.fps
    scores = {"video": [], "audio": []}
    for clip in w.media("test"):
        truth = clip.meta["event_times"]
        scores["video"].append(match_events(detect_visual_events(clip.video, clip.fps), truth, 1 / clip.fps))
        scores["audio"].append(match_events(detect_audio_events(clip.audio, clip.sample_rate), truth, 1 / clip.fps))
        assert classify_video(clip.video, n_classes=4) == clip.meta["class_id"]
        assert classify_audio(clip.audio, clip.sample_rate, n_classes=4) == clip.meta["class_id"]
    for modality, results in scores.items():
        f1 = sum(r["f1"] for r in results) / len(results)
        offset = sum(r["offset_ms"] * r["n_matched"] for r in results) / sum(r["n_matched"] for r in results)
        assert f1 >= 0.9, (modality, f1)
        assert offset < frame_ms, (modality, offset)


def test_audio_onsets_ignore_wind_hum_and_off_screen_chirps():
    w = world(duration=2.0, **NOISY)
    factors = w.sample_factors(3, offscreen=True, wind=True, hum=True)
    silent = dataclasses.replace(factors, event_gains=(0.0,) * factors.n_events)
    assert factors.offscreen_times
    assert detect_audio_events(w.render(silent).audio, w.params.sample_rate) == []
