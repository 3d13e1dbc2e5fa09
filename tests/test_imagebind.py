"""sava_imagebind: the ImageBind-Huge towers' state-dict layout, checkpoint loading and its errors,
ImageBind's input preparation, and the two encoders (tiny presets) through the plug-in test kit."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from conftest import assert_close_f32
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests
from sava_imagebind import model as ib
from sava_imagebind.model import AUDIO, HUGE, TINY, VISION, ImageBindTowers

FIXTURE = Path(__file__).parent / "fixtures" / "imagebind_huge_keys.txt"


def _expected(path: Path) -> dict[str, tuple[int, ...]]:
    rows = (line.split(" ", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: tuple(int(n) for n in shape.strip("[] ").split(",") if n.strip()) for key, shape in rows}


class TestImageBindVision(ComponentTests):
    kind, name = "video_encoder", "imagebind_vision"
    params = {"preset": "tiny", "size": 28}
    expected_shape = (2, 3, 16)  # one embedding per frame

    def inputs(self):
        return (torch.rand(2, 3, 3, 36, 48),)


class TestImageBindAudio(ComponentTests):
    kind, name = "audio_encoder", "imagebind_audio"
    params = {"preset": "tiny", "hop_seconds": 0.5}
    expected_shape = (2, 2, 16)  # 2.5 s: windows of 2 s at 0 and 0.5 s

    def inputs(self):
        return (torch.rand(2, 2, 40000) * 2 - 1,)


def test_huge_towers_have_the_published_keys_and_shapes():
    with torch.device("meta"):
        towers = ImageBindTowers(HUGE)
    own = {k: tuple(v.shape) for k, v in towers.state_dict().items()}
    expected = _expected(FIXTURE)
    assert len(expected) == 569
    assert sorted(set(expected) - set(own)) == [] and sorted(set(own) - set(expected)) == []
    assert {k: s for k, s in own.items() if s != expected[k]} == {}
    assert sum(torch.Size(s).numel() for s in own.values()) == 719_065_089


def _tiny_checkpoint(tmp_path: Path) -> tuple[Path, ImageBindTowers]:
    """A file laid out like imagebind_huge.pth (both towers plus a text key) at TINY sizes."""
    torch.manual_seed(3)
    towers = ImageBindTowers(TINY).eval()
    state = {**towers.state_dict(), "modality_trunks.text.blocks.0.norm_1.weight": torch.ones(4)}
    path = tmp_path / "imagebind_huge.pth"
    torch.save(state, path)
    return path, towers


def test_checkpoint_loads_one_modality_and_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(ib, "HUGE", TINY)  # the same loading code, at tiny sizes
    path, towers = _tiny_checkpoint(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    encoder = get_registries()["video_encoder"].build("imagebind_vision", {"checkpoint": str(path), "sha256": digest,
                                                                          "size": 56})
    assert set(encoder.towers.modality_trunks) == {VISION}
    video = torch.rand(1, 2, 3, 56, 56)
    expected = towers.embed(VISION, ib.normalize_frames(video[0]))
    # towers loaded from the checkpoint vs the ones saved: equal up to rounding through the 2-layer
    # vision tower (about 6 blocks)
    assert_close_f32(encoder.encode(video)[0], expected, depth=6)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_checkpoint_errors_name_the_setting(tmp_path, monkeypatch):
    build = get_registries()["audio_encoder"].build
    setting = "model.audio_encoder.params.checkpoint"
    with pytest.raises(SavaError, match=f"{setting}: checkpoint .*nope.pth not found"):
        build("imagebind_audio", {"checkpoint": str(tmp_path / "nope.pth")})
    monkeypatch.setattr(ib, "HUGE", TINY)
    path, _ = _tiny_checkpoint(tmp_path)
    with pytest.raises(SavaError, match=f"{setting}: .* has sha256 .* but sha256 expects {'0' * 64}"):
        build("imagebind_audio", {"checkpoint": str(path), "sha256": "0" * 64})
    monkeypatch.setattr(ib, "HUGE", ib.ImageBindConfig(**{**vars(TINY), "audio_width": 48}))
    with pytest.raises(SavaError, match=f"{setting}: .* does not fit ImageBind-Huge's audio towers: .*shape mism"):
        build("imagebind_audio", {"checkpoint": str(path)})
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(SavaError, match="is not an ImageBind checkpoint"):
        build("imagebind_audio", {"checkpoint": str(other)})
    with pytest.raises(Exception, match="set exactly one of `checkpoint`"):
        build("imagebind_audio", {})


def test_clip_starts_follow_pytorchvideo():
    assert ib.clip_starts(Fraction(5)) == [0, 1, 2]  # k * (5 - 2) / 3
    assert ib.clip_starts(Fraction(5, 2)) == [0, Fraction(1, 6), Fraction(1, 3)]
    assert ib.clip_starts(Fraction(1)) == [0, 0, 0]  # short files: three clips at 0


def test_audio_clips_remove_means_in_place_like_upstream():
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(16000 * 3) + 0.25  # a DC offset makes the in-place mean removal visible
    clips = ib.audio_clips(audio)
    assert clips.shape == (3, 1, 128, 204)
    # exact: the same mean, subtraction and fbank on the same samples (same shapes, same kernels)
    assert torch.equal(clips[0], ib.clip_fbank(audio[:32000]))  # the first clip sees the raw audio
    shifted = audio.clone()
    shifted[:32000] -= shifted[:32000].mean()  # what the second clip (from 1/3 s) overlaps
    start = 16000 // 3
    # the same ops on the same samples (equal in fact); atol = rtol = 1e-5 is about 100 float32 ulps
    # at these |values| ~ 1, and missing the first clip's shift moves the fbank by 0.65
    assert torch.allclose(clips[1], ib.clip_fbank(shifted[start:start + 32000]), atol=1e-5)
    assert not torch.allclose(clips[1], ib.clip_fbank(audio[start:start + 32000]), atol=1e-3)


def test_fbank_frames_and_normalisation():
    fb = ib.clip_fbank(torch.zeros(32000))
    assert fb.shape == (1, 128, 204)
    # 2 s give 198 fbank frames; the 6 padded frames are 0 before normalisation
    assert torch.allclose(fb[0, :, 198:], torch.full((128, 6), 4.268 / 9.138))


def test_audio_postprocessor_scales_by_twenty_and_embeddings_are_unit_norm():
    torch.manual_seed(0)
    towers = ImageBindTowers(TINY).eval()
    fbank = torch.randn(2, 1, 128, 204)
    unit = towers.embed(AUDIO, fbank)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(2))
    assert torch.allclose(towers(AUDIO, fbank), 20 * unit, atol=1e-5)
    frames = torch.randn(3, 3, 28, 28)  # a 2 x 2 patch grid: the 4 x 4 positions are resized
    assert torch.allclose(towers(VISION, frames).norm(dim=-1), torch.ones(3))


def test_audio_windows_slide_by_hop():
    encoder = get_registries()["audio_encoder"].build("imagebind_audio", {"preset": "tiny", "hop_seconds": 1.0})
    assert encoder.encode(torch.zeros(1, 1, 16000 * 5)).shape == (1, 4, 16)  # 1 + (5 - 2) // 1
    assert encoder.encode(torch.zeros(1, 1, 8000)).shape == (1, 1, 16)  # shorter than 2 s: one window
