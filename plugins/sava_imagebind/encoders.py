"""ImageBind encoders for SAVA: frame embeddings (video) and sliding 2 s window embeddings (audio).

Licence: ImageBind's code and weights are CC-BY-NC 4.0 (non-commercial use only); see
:mod:`sava_imagebind.model`.

* ``imagebind_vision``: video (B, F, 3, H, W) in [0, 1] at ``frame_rate`` -> every frame resized
  (short side to ``size``, bicubic with antialias), centre-cropped, CLIP-normalised -> unit-norm
  ImageBind vision embeddings (B, F, 1024).
* ``imagebind_audio``: audio (B, C, S) in [-1, 1] at 16 kHz -> mono (channel mean) -> 2 s windows
  every ``hop_seconds`` (one window, as long as the clip, when the clip is shorter) -> each window's
  kaldi fbank as ImageBind prepares a clip -> unit-norm ImageBind audio embeddings (B, T, 1024) with
  T = 1 + (S - 32000) // hop.

Both are analysis encoders: no latent grid, no decoder. Embeddings are the heads' outputs
L2-normalised (the audio tower's fixed logit scale 20 is left out). ``preset: tiny`` builds the same
classes with width 32, two blocks and 16-d embeddings (56 x 56 position grid, resized as upstream
for other sizes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sava_core.contracts import AudioEncoder, VideoEncoder
from sava_core.pretrained import torch_dtype
from sava_imagebind.model import (
    AUDIO,
    CLIP_SECONDS,
    SAMPLE_RATE,
    TINY,
    VISION,
    ImageBindTowers,
    clip_fbank,
    load_towers,
    normalize_frames,
    resize_center_crop,
)
from sava_imagebind.params import ImageBindAudioParams, ImageBindVisionParams, ImageBindWeightsParams


def _towers(params: ImageBindWeightsParams, modality: str, setting: str) -> ImageBindTowers:
    """Frozen towers of one modality: tiny (seed 0) or the published checkpoint, in ``params.dtype``."""
    if params.preset == "tiny":
        torch.manual_seed(0)
        towers = ImageBindTowers(TINY, (modality,))
    else:
        towers = load_towers(params.checkpoint, params.sha256, (modality,), setting)
    return towers.to(torch_dtype(params.dtype)).requires_grad_(False).eval()


class ImageBindVision(VideoEncoder):
    """f_v = ImageBind vision embedding of each frame: (B, F, 3, H, W) in [0, 1] -> (B, F, latent_dim)."""

    Params = ImageBindVisionParams

    def __init__(self, params: ImageBindVisionParams):
        super().__init__()
        self.params = params
        self.towers = _towers(params, VISION, "model.video_encoder.params.checkpoint")
        self.latent_dim = self.towers.config.out_dim
        self.frame_rate = params.frame_rate
        self.requires_grad_(False).eval()

    def encode(self, video: Tensor) -> Tensor:
        b, f = video.shape[:2]
        frames = video.reshape(b * f, *video.shape[2:]).float()
        weight = self.towers.modality_heads[VISION][2].weight
        out = []
        for i in range(0, len(frames), self.params.frame_batch_size):
            chunk = normalize_frames(resize_center_crop(frames[i:i + self.params.frame_batch_size], self.params.size))
            out.append(self.towers.embed(VISION, chunk.to(weight)).float())
        return torch.cat(out).reshape(b, f, -1).to(video.device)


class ImageBindAudio(AudioEncoder):
    """f_a = ImageBind audio embedding of 2 s windows: (B, C, S) at 16 kHz -> (B, T, latent_dim)."""

    Params = ImageBindAudioParams

    def __init__(self, params: ImageBindAudioParams):
        super().__init__()
        self.params = params
        self.towers = _towers(params, AUDIO, "model.audio_encoder.params.checkpoint")
        self.latent_dim = self.towers.config.out_dim
        self.sample_rate = SAMPLE_RATE
        self.window = CLIP_SECONDS * SAMPLE_RATE
        self.hop = round(params.hop_seconds * SAMPLE_RATE)
        self.requires_grad_(False).eval()

    def encode(self, audio: Tensor) -> Tensor:
        mono = audio.float().mean(1).cpu()
        windows = mono[:, None] if mono.shape[-1] <= self.window else mono.unfold(-1, self.window, self.hop)
        b, t = windows.shape[:2]
        fbanks = torch.stack([clip_fbank(w) for w in windows.reshape(b * t, -1)])  # (B*T, 1, 128, 204)
        weight = self.towers.modality_heads[AUDIO][2].weight
        size = self.params.window_batch_size
        out = [self.towers.embed(AUDIO, fbanks[i:i + size].to(weight)).float() for i in range(0, len(fbanks), size)]
        return torch.cat(out).reshape(b, t, -1).to(audio.device)
