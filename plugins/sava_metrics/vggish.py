"""VGGish (Hershey et al., ICASSP 2017) for FAD (Kilgour et al., 2019), as the torchvggish port.

Architecture and state-dict keys match ``harritaylor/torchvggish`` (``torchvggish/torchvggish.py``,
release v0.1 file ``vggish-10086976.pth``): ``features.{0,3,6,8,11,13}`` (3x3 convolutions 64, 128,
256, 256, 512, 512 with 2x2 max pools) and ``embeddings.{0,2,4}`` (12288 -> 4096 -> 4096 -> 128).
As in fadtk, the final ReLU and the PCA/quantisation post-processing are dropped. The log-mel
front end reproduces ``mel_features.py`` of the TF release exactly: 25 ms periodic-Hann frames,
hop 10 ms, FFT 512, magnitude, HTK-mel triangles linear in mel (125-7500 Hz, 64 bands, DC bin
zeroed), log(mel + 0.01), non-overlapping 96-frame examples. Resampling is torchaudio's (the TF
release used resampy), which the protocol records.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
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
from sava_metrics.params import VGGishParams

SAMPLE_RATE = 16000
WINDOW, HOP, N_FFT, N_MELS = 400, 160, 512, 64
EXAMPLE_FRAMES = 96
PUBLISHED = "VGGish (torchvggish release v0.1, vggish-10086976.pth)"
PUBLISHED_PREFIX = "10086976"  # torch.hub file names carry the first 8 hex digits of the sha256


def vggish_mel_matrix(n_bins: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE,
                      low: float = 125.0, high: float = 7500.0) -> Tensor:
    """(n_bins, n_mels) weights of VGGish's ``spectrogram_to_mel_matrix`` (float64)."""

    def mel(hz: Tensor) -> Tensor:
        return 1127.0 * torch.log1p(hz / 700.0)

    bins_mel = mel(torch.linspace(0.0, sample_rate / 2, n_bins, dtype=torch.float64))
    edges = torch.linspace(float(mel(torch.tensor(low, dtype=torch.float64))),
                           float(mel(torch.tensor(high, dtype=torch.float64))), n_mels + 2, dtype=torch.float64)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = torch.minimum(lower, upper).clamp(min=0.0)
    weights[0] = 0.0
    return weights


def log_mel_examples(audio: Tensor, mel_matrix: Tensor) -> Tensor:
    """Mono 16 kHz audio (B, S) -> examples (B, n, 96, 64) of log-mel (n = whole 0.96 s windows)."""
    window = 0.5 - 0.5 * torch.cos(2 * math.pi / WINDOW * torch.arange(WINDOW, dtype=audio.dtype))
    frames = audio.unfold(-1, WINDOW, HOP) * window  # (B, T, 400)
    magnitude = torch.fft.rfft(frames, n=N_FFT).abs()  # (B, T, 257)
    log_mel = torch.log(magnitude @ mel_matrix.to(audio.dtype) + 0.01)  # (B, T, 64)
    n = log_mel.shape[1] // EXAMPLE_FRAMES
    return log_mel[:, : n * EXAMPLE_FRAMES].reshape(audio.shape[0], n, EXAMPLE_FRAMES, N_MELS)


class VGGishNet(nn.Module):
    """The VGGish network: examples (B, 1, 96, 64) -> embeddings (B, ``embedding``).

    ``widths`` are the six convolution widths and ``hidden`` the two fully connected widths
    (published: (64, 128, 256, 256, 512, 512), 4096, 128).
    """

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512), hidden: int = 4096,
                 embedding: int = 128):
        super().__init__()
        plan: list[int | str] = [widths[0], "M", widths[1], "M", widths[2], widths[3], "M", widths[4], widths[5], "M"]
        layers: list[nn.Module] = []
        c = 1
        for v in plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(c * 4 * 6, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
            nn.Linear(hidden, embedding),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (B, C, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flattening order
        return self.embeddings(x)


class VGGish(MediaExtractor):
    """VGGish embeddings of 0.96 s windows: audio (B, C, S) at 16 kHz -> (B * n_windows, 128)."""

    Params = VGGishParams
    name: ClassVar[str] = "vggish"
    modality = "audio"
    rows: ClassVar[str] = "window"
    sample_rate = SAMPLE_RATE

    def __init__(self, params: VGGishParams):
        super().__init__()
        self.params = params
        self.checkpoint_sha256: str | None = None
        self.register_buffer("mel_matrix", vggish_mel_matrix(), persistent=False)
        if params.preset == "tiny":
            self.net = build_model("tiny", params.seed, lambda: VGGishNet((4, 8, 8, 8, 16, 16), 32, 16))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED,
                                                             PUBLISHED_PREFIX)
            self.net = build_model("published", 0, VGGishNet)
            load_into(self.net, load_state_dict_file(path), self.name, path, PUBLISHED)

    def prepare(self, item: MediaItem) -> Tensor:
        return mono_clip(item, SAMPLE_RATE, self.params.clip_seconds, self.name)

    def extract(self, batch: Tensor) -> Features:
        examples = log_mel_examples(batch.double().mean(1), self.mel_matrix).float()  # float64 like the TF front end
        b, n = examples.shape[:2]
        if n == 0:
            raise ValueError(f"VGGish needs at least {(EXAMPLE_FRAMES - 1) * HOP + WINDOW} samples "
                             f"({((EXAMPLE_FRAMES - 1) * HOP + WINDOW) / SAMPLE_RATE} s) per clip, "
                             f"got {batch.shape[-1]}")
        return Features(self.net(examples.reshape(b * n, 1, EXAMPLE_FRAMES, N_MELS)))

    def protocol(self) -> dict[str, Any]:
        return self.base_protocol(
            self.params.checkpoint, self.checkpoint_sha256,
            sample_rate=SAMPLE_RATE, channels="mono (mean of channels)", resampler=RESAMPLER,
            clip_seconds=self.params.clip_seconds, clip_fit="crop from start / zero-pad at end",
            window_seconds=0.96, window_hop_seconds=0.96, partial_window="dropped",
            frontend="log(mel + 0.01): 25 ms periodic Hann, hop 10 ms, FFT 512, 64 HTK-mel 125-7500 Hz",
            embedding="128-d, no PCA, no final ReLU" if self.params.preset == "published" else "16-d (tiny)",
        )
