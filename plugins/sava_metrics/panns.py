"""PANNs Cnn14 at 16 kHz (Kong et al., 2020) for FD, KL and ISc (av-benchmark, SpecVQGAN).

Architecture and state-dict keys match ``qiuqiangkong/audioset_tagging_cnn`` /
``panns_inference`` (``models.py: Cnn14``, with torchlibrosa's ``Spectrogram`` and
``LogmelFilterBank``): ``spectrogram_extractor.stft.conv_{real,imag}.weight`` (257, 1, 512) (the
DFT times a periodic Hann window, as 1-D convolutions with stride 160 over the reflect-padded
signal), ``logmel_extractor.melW`` (257, 64) (librosa/Slaney mel, 50-8000 Hz),
``bn0`` over mel bins, ``conv_block1..6`` (two 3x3 conv + BN + ReLU, 2x2 average pooling except
the last), ``fc1`` (2048 -> 2048) and ``fc_audioset`` (2048 -> 527). Published file
``Cnn14_16k_mAP=0.438.pth`` (Zenodo record 3987831; a training checkpoint ``{"model": ...}``).

Outputs: the 2048-d embedding (ReLU(fc1)) and the 527 AudioSet logits before the sigmoid.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from sava_core.clips import MediaItem
from sava_core.contracts import Features
from sava_metrics.common import (
    RESAMPLER,
    MediaExtractor,
    build_model,
    load_into,
    load_state_dict_file,
    mono_clip,
    verify_checkpoint,
)
from sava_metrics.params import PANNsParams

SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX, CLASSES = 16000, 512, 160, 64, 50.0, 8000.0, 527
PUBLISHED = "PANNs Cnn14 16 kHz (Cnn14_16k_mAP=0.438.pth, Zenodo 3987831)"


class _STFT(nn.Module):
    """torchlibrosa's STFT as two frozen convolutions: (B, 1, S) -> real, imag (B, n_fft//2+1, T)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_real.weight = nn.Parameter((torch.cos(angle) * window).float()[:, None, :], requires_grad=False)
        self.conv_imag.weight = nn.Parameter((-torch.sin(angle) * window).float()[:, None, :], requires_grad=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return self.conv_real(x), self.conv_imag(x)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = _STFT(n_fft, hop)

    def forward(self, x: Tensor) -> Tensor:
        """(B, S) -> power spectrogram (B, 1, T, n_fft//2+1)."""
        real, imag = self.stft(x[:, None, :])
        return (real**2 + imag**2).transpose(1, 2)[:, None]


class _LogMel(nn.Module):
    def __init__(self, n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float):
        super().__init__()
        fb = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney")
        self.melW = nn.Parameter(fb.float(), requires_grad=False)  # (F, n_mels), librosa's mel filters transposed

    def forward(self, x: Tensor) -> Tensor:
        """Power (B, 1, T, F) -> dB (B, 1, T, n_mels): 10 log10(max(mel, 1e-10)) (ref 1, no top_db)."""
        return 10.0 * torch.log10((x @ self.melW).clamp(min=1e-10))


class ConvBlock(nn.Module):
    """PANNs conv block: (3x3 conv, BN, ReLU) twice, then average pooling (also CAVP's audio encoder)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor, pool: tuple[int, int]) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Cnn14: mono audio (B, S) at ``sample_rate`` -> (embedding (B, widths[-1]), logits (B, classes)).

    Published widths (64, 128, 256, 512, 1024, 2048).
    """

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048), classes: int = CLASSES):
        super().__init__()
        self.spectrogram_extractor = _Spectrogram(N_FFT, HOP)
        self.logmel_extractor = _LogMel(N_FFT, N_MELS, SAMPLE_RATE, F_MIN, F_MAX)
        self.bn0 = nn.BatchNorm2d(N_MELS)
        chans = (1, *widths)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.fc_audioset = nn.Linear(widths[-1], classes)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(audio))  # (B, 1, T, 64)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(3)  # (B, C, T')
        x = x.max(2).values + x.mean(2)
        embedding = F.relu(self.fc1(x))
        return embedding, self.fc_audioset(embedding)


class PANNsCnn14(MediaExtractor):
    """Cnn14 16 kHz: audio (B, C, S) at 16 kHz -> embeddings (B, 2048) and AudioSet logits (B, 527)."""

    Params = PANNsParams
    name: ClassVar[str] = "panns_cnn14"
    modality = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, params: PANNsParams):
        super().__init__()
        self.params = params
        self.checkpoint_sha256: str | None = None
        if params.preset == "tiny":
            self.net = build_model("tiny", params.seed, lambda: Cnn14((4, 4, 8, 8, 16, 16)))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED)
            self.net = build_model("published", 0, Cnn14)
            load_into(self.net, load_state_dict_file(path), self.name, path, PUBLISHED)

    def prepare(self, item: MediaItem) -> Tensor:
        return mono_clip(item, SAMPLE_RATE, self.params.clip_seconds, self.name)

    def extract(self, batch: Tensor) -> Features:
        if batch.shape[-1] < 32 * HOP:
            raise ValueError(f"Cnn14 needs at least {32 * HOP} samples (0.32 s) per clip, got {batch.shape[-1]}")
        embedding, logits = self.net(batch.float().mean(1))
        return Features(embedding, logits)

    def protocol(self) -> dict[str, Any]:
        return self.base_protocol(
            self.params.checkpoint, self.checkpoint_sha256,
            sample_rate=SAMPLE_RATE, channels="mono (mean of channels)", resampler=RESAMPLER,
            clip_seconds=self.params.clip_seconds, clip_fit="crop from start / zero-pad at end",
            frontend="log-mel (dB): window 512, hop 160, 64 Slaney mel 50-8000 Hz, reflect-centred",
            embedding="ReLU(fc1), 2048-d" if self.params.preset == "published" else "16-d (tiny)",
            logits="527 AudioSet logits before the sigmoid",
        )
