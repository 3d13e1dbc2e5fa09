"""mp4 / wav round trips and the audio-visual figure."""

from __future__ import annotations

import math

import av
import pytest
import soundfile
import torch

from sava_core.media_io import read_mp4, save_av_figure, write_mp4, write_wav


def tone_clip(frames: int, fps: float, sample_rate: int, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A moving white square on grey (F, 3, 32, 48) and a 440 Hz tone (C, S) of the same duration."""
    video = torch.full((frames, 3, 32, 48), 0.3)
    for k in range(frames):
        video[k, :, 10:18, 2 * k:2 * k + 8] = 0.9
    t = torch.arange(round(frames / fps * sample_rate)) / sample_rate
    audio = 0.5 * torch.sin(2 * math.pi * 440 * t).repeat(channels, 1)
    return video, audio


@pytest.mark.parametrize("fps, sample_rate, channels", [(8.0, 8000, 1), (7.5, 16000, 2)])
def test_mp4_round_trip(tmp_path, fps, sample_rate, channels):
    video, audio = tone_clip(15, fps, sample_rate, channels)
    path = tmp_path / "clip.mp4"
    write_mp4(path, video, fps, audio, sample_rate)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary file left

    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.video[0].codec_context.name in ("h264", "mpeg4")
        assert container.streams.audio[0].codec_context.name == "aac"

    back, sound, fps_back, rate_back = read_mp4(path)
    assert back.shape == video.shape and fps_back == pytest.approx(fps) and rate_back == sample_rate
    assert sound.shape[0] == channels
    assert abs(sound.shape[1] / rate_back - back.shape[0] / fps_back) < 1 / fps
    assert (back - video).abs().mean() < 0.02
    n = min(sound.shape[1], audio.shape[1])
    assert torch.corrcoef(torch.stack([sound[0, :n], audio[0, :n]]))[0, 1] > 0.95


def test_mp4_rejects_odd_frame_sizes(tmp_path):
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "odd.mp4", torch.zeros(4, 3, 31, 32), 8.0, torch.zeros(1, 4000), 8000)


def test_wav_round_trip(tmp_path):
    _, audio = tone_clip(8, 8.0, 8000, channels=2)
    write_wav(tmp_path / "a.wav", audio, 8000)
    data, rate = soundfile.read(tmp_path / "a.wav", always_2d=True)
    assert rate == 8000 and data.shape == (audio.shape[1], 2)
    assert abs(data.T - audio.numpy()).max() < 1e-3


def test_av_figure_is_written(tmp_path):
    video, audio = tone_clip(12, 8.0, 8000)
    save_av_figure(tmp_path / "fig.png", video, audio, 8.0, 8000, events=[0.5, 1.0], title="a tone")
    save_av_figure(tmp_path / "two.png", video, audio, 8.0, 8000, events={"seen": [0.5], "heard": [0.52]})
    for name in ("fig.png", "two.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
