"""PaSST (Koutini et al., Interspeech 2022) for FD / KL / ISc with PaSST features, through the
optional ``hear21passt`` package (``pip install "sava[passt]"``; it needs ``timm``).

The model is built from ``hear21passt``'s own classes without any pretrained loading:
``AugmentMelSTFT`` as ``get_basic_model`` configures it (32 kHz, pre-emphasis -0.97, n_fft 1024,
800-sample symmetric Hann window, hop 320, 128 kaldi mel banks 0-15000 Hz, log(x + 1e-5), then
(x + 4.5) / 5; eval mode: no augmentation) and ``PaSST`` as ``passt_s_swa_p16_128_ap476``
(PaSST-S: 16x16 patches, stride 10x10, input 128 x 998, width 768, 12 blocks, 12 heads, CLS and
distillation tokens, 527 classes). ``hear21passt``'s ``get_model`` / ``get_basic_model`` download the
weights from GitHub, so they are never called: ``checkpoint`` is the local release file
(``passt-s-f128-p16-s10-ap.476-swa.pt``), read with ``torch.load(weights_only=True)``, converted by
hear21passt's ``checkpoint_filter_fn`` and loaded strictly.

Audio: mono, 32 kHz (torchaudio resampler), cropped from the start or zero-padded to
``clip_seconds`` when set, then zero-padded (or cropped) to the model's 10 s window. av-benchmark
(MMAudio's evaluation code) loads each file at ``audio_length`` (8 s by default) and zero-pads or
crops it to 320,000 samples before ``get_basic_model(mode="all")``, so ``clip_seconds: 8`` follows
it (its loader's resampler and length handling are not verified here). Outputs: the 768-d
embedding (the mean of the final CLS and distillation tokens, hear21passt's ``embed_only`` output)
and the 527 AudioSet logits (before the sigmoid, hear21passt's ``logits`` output).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from sava_core.clips import MediaItem
from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_metrics.common import (
    RESAMPLER,
    MediaExtractor,
    build_model,
    fit_length,
    load_into,
    load_state_dict_file,
    mono_clip,
    verify_checkpoint,
)
from sava_metrics.params import PaSSTParams

SAMPLE_RATE, CLASSES, WINDOW_SECONDS = 32000, 527, 10
PUBLISHED = "PaSST-S SWA (passt-s-f128-p16-s10-ap.476-swa.pt, github.com/kkoutini/PaSST releases v0.0.1-audioset)"
ARCH = dict(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, num_classes=CLASSES, distilled=True)
PUBLISHED_SIZE = dict(embed_dim=768, depth=12, num_heads=12)
TINY_SIZE = dict(embed_dim=16, depth=1, num_heads=2)


def _hear21passt() -> Any:
    """hear21passt's PaSST module, or a SavaError naming the extra that installs it."""
    try:
        import hear21passt.models.passt as passt
    except ImportError:
        raise SavaError('extractor passt needs the optional hear21passt package: pip install "sava[passt]" '
                        "(hear21passt and timm)") from None
    passt.first_RUN = False  # hear21passt prints tensor shapes on the first forward unless this flag is off
    return passt


class PaSSTNet(nn.Module):
    """hear21passt's mel front end and PaSST: audio (B, S) at 32 kHz -> (logits (B, 527), embedding (B, D))."""

    def __init__(self, size: dict[str, int]):
        super().__init__()
        passt = _hear21passt()  # first: without the extra, a clear message rather than an ImportError below
        from hear21passt.models.preprocess import AugmentMelSTFT

        self.mel = AugmentMelSTFT(n_mels=128, sr=SAMPLE_RATE, win_length=800, hopsize=320, n_fft=1024, freqm=48,
                                  timem=192, htk=False, fmin=0.0, fmax=15000, norm=1, fmin_aug_range=10,
                                  fmax_aug_range=2000)
        self.net = passt.PaSST(**ARCH, **size)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(self.mel(audio)[:, None])


class PaSST(MediaExtractor):
    """PaSST: audio (B, C, S) at 32 kHz (zero-padded or cropped to 10 s) -> embeddings (B, 768) and
    AudioSet logits (B, 527)."""

    Params = PaSSTParams
    name: ClassVar[str] = "passt"
    modality = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, params: PaSSTParams):
        super().__init__()
        self.params = params
        self.checkpoint_sha256: str | None = None
        if params.preset == "tiny":
            self.model = build_model("tiny", params.seed, lambda: PaSSTNet(TINY_SIZE))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED)
            self.model = build_model("published", 0, lambda: PaSSTNet(PUBLISHED_SIZE))
            try:
                state = _hear21passt().checkpoint_filter_fn(load_state_dict_file(path), self.model.net)
            except (KeyError, RuntimeError) as err:
                raise SavaError(f"extractor passt: checkpoint {path} is not a PaSST AudioSet state dict ({err}); "
                                f"point `checkpoint` at {PUBLISHED}") from None
            load_into(self.model.net, state, self.name, path, PUBLISHED)

    def prepare(self, item: MediaItem) -> Tensor:
        return mono_clip(item, SAMPLE_RATE, self.params.clip_seconds, self.name)

    def extract(self, batch: Tensor) -> Features:
        logits, embedding = self.model(fit_length(batch.float().mean(1), WINDOW_SECONDS * SAMPLE_RATE))
        return Features(embedding, logits)

    def protocol(self) -> dict[str, Any]:
        return self.base_protocol(
            self.params.checkpoint, self.checkpoint_sha256,
            sample_rate=SAMPLE_RATE, channels="mono (mean of channels)", resampler=RESAMPLER,
            clip_seconds=self.params.clip_seconds, window_seconds=WINDOW_SECONDS,
            clip_fit="crop from start / zero-pad at end to clip_seconds, then to the 10 s window",
            frontend="hear21passt AugmentMelSTFT (eval): pre-emphasis 0.97, n_fft 1024, win 800 (symmetric Hann), "
                     "hop 320, 128 kaldi mel 0-15000 Hz, (log(x + 1e-5) + 4.5) / 5",
            architecture="PaSST-S p16 s10 128x998 (hear21passt passt_s_swa_p16_128_ap476)",
            embedding=f"{self.model.net.embed_dim}-d mean of CLS and distillation tokens",
            logits="527 AudioSet logits (before the sigmoid)",
        )
