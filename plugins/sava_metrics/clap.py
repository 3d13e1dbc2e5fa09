"""CLAP (Wu et al., ICASSP 2023; LAION) through transformers' ``ClapModel``, for FAD with CLAP
embeddings and the CLAP text-audio score.

``checkpoint`` is a local model directory as written by ``save_pretrained`` (e.g. a copy of
``laion/clap-htsat-unfused`` or ``laion/larger_clap_general``): ``config.json``, the weights
(``model.safetensors`` or ``pytorch_model.bin``, whose sha256 is verified), the feature extractor's
and the tokenizer's files. It is opened with ``local_files_only=True``: nothing is downloaded.

Audio: mono, resampled to the feature extractor's rate (48 kHz), cropped from the start to its
``max_length_s`` (10 s) so its random truncation never runs; shorter clips are padded by the
feature extractor (``repeatpad`` in the LAION configs). Embeddings: the L2-normalised projections
(512-d for the LAION models).

The tiny preset builds a ``ClapModel`` of the same classes with a 2-stage HTSAT of width 16, a
one-layer RoBERTa of width 16 and random weights, a default ``ClapFeatureExtractor`` and, since no
tokenizer files exist offline, a byte-level tokenizer (UTF-8 bytes as token ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from sava_core.clips import MediaItem
from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_metrics.common import RESAMPLER, MediaExtractor, build_model, mono_at, verify_checkpoint
from sava_metrics.params import CLAPParams

PUBLISHED = "a CLAP model directory saved by transformers (e.g. laion/clap-htsat-unfused)"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TINY_VOCAB, _TINY_MAX_TOKENS = 300, 64


def _tiny_model() -> Any:
    from transformers import ClapConfig, ClapModel

    text = dict(vocab_size=_TINY_VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=_TINY_MAX_TOKENS + 4, projection_dim=16)
    audio = dict(spec_size=256, window_size=8, num_mel_bins=64, patch_size=16, patch_stride=(16, 16), hidden_size=16,
                 patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2], projection_dim=16,
                 enable_fusion=False)
    return ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16))


def _pooled(out: Any) -> Tensor:
    """transformers >= 5 returns an output object whose ``pooler_output`` is the embedding."""
    return out if isinstance(out, Tensor) else out.pooler_output


class CLAP(MediaExtractor):
    """CLAP embeddings: audio (B, C, S) at 48 kHz, or a list of captions -> (B, projection_dim), unit norm."""

    Params = CLAPParams
    name: ClassVar[str] = "clap"

    def __init__(self, params: CLAPParams):
        super().__init__()
        from transformers import ClapFeatureExtractor

        self.params = params
        self.modality = params.tower
        self.checkpoint_sha256: str | None = None
        if params.preset == "tiny":
            self.model = build_model("tiny", params.seed, _tiny_model)
            self.feature_extractor = ClapFeatureExtractor(truncation="rand_trunc")
            self.tokenizer = None
        else:
            from transformers import ClapModel, ClapProcessor

            folder = Path(params.checkpoint).expanduser() if params.checkpoint else None
            if folder is not None and not folder.is_dir():
                raise SavaError(f"extractor clap: checkpoint {folder} is not a directory; set `checkpoint` "
                                f"(extractor_params.checkpoint=DIR) to {PUBLISHED}")
            weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None) if folder else None
            if folder is not None and weights is None:
                raise SavaError(f"extractor clap: {folder} holds none of {', '.join(WEIGHT_FILES)}; "
                                f"set `checkpoint` to {PUBLISHED}")
            _, self.checkpoint_sha256 = verify_checkpoint(self.name, str(weights) if weights else None,
                                                          params.sha256, PUBLISHED)
            try:
                model = ClapModel.from_pretrained(folder, local_files_only=True)
                processor = ClapProcessor.from_pretrained(folder, local_files_only=True)
            except OSError as err:
                raise SavaError(f"extractor clap: cannot open {folder} as {PUBLISHED}: {err}") from None
            self.model = build_model("published", 0, lambda: model)
            self.feature_extractor = processor.feature_extractor
            self.tokenizer = processor.tokenizer
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.max_seconds = float(self.feature_extractor.max_length_s)

    def prepare(self, item: MediaItem) -> Tensor | str:
        if self.params.tower == "text":
            if not item.caption:
                raise SavaError(f"extractor clap (text): clip {item.id} has no caption; give captions in a manifest "
                                f"(column caption) or in {item.id}.txt beside the clip")
            return item.caption
        audio = mono_at(item, self.sample_rate, self.name)
        return audio[: round(self.max_seconds * self.sample_rate)][None]

    def _tokens(self, captions: list[str]) -> dict[str, Tensor]:
        if self.tokenizer is not None:
            return dict(self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt"))
        ids = [[0] + [3 + b % (_TINY_VOCAB - 3) for b in c.encode()[:_TINY_MAX_TOKENS]] + [2] for c in captions]
        n = max(map(len, ids))
        return {"input_ids": torch.tensor([i + [1] * (n - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])}

    def extract(self, batch: Tensor | list[str]) -> Features:
        if self.params.tower == "text":
            return Features(_pooled(self.model.get_text_features(**self._tokens(list(batch)))))
        mono = batch.float().mean(1)
        inputs = self.feature_extractor([a.numpy() for a in mono], sampling_rate=self.sample_rate, return_tensors="pt")
        return Features(_pooled(self.model.get_audio_features(**inputs)))

    def protocol(self) -> dict[str, Any]:
        fe = self.feature_extractor
        common = self.base_protocol(self.params.checkpoint, self.checkpoint_sha256, tower=self.params.tower,
                                    embedding=f"{self.model.config.projection_dim}-d projection, L2-normalised")
        if self.params.tower == "text":
            return {**common,
                    "tokenizer": "byte-level (tiny)" if self.tokenizer is None else type(self.tokenizer).__name__}
        return {**common, "sample_rate": self.sample_rate, "channels": "mono (mean of channels)",
                "resampler": RESAMPLER, "clip_seconds": self.max_seconds,
                "clip_fit": f"crop from start; shorter: {fe.padding}",
                "frontend": f"ClapFeatureExtractor: {fe.feature_size} mel, n_fft {fe.fft_window_size}, "
                            f"hop {fe.hop_length}, truncation {fe.truncation}",
                "fusion": bool(self.model.config.audio_config.enable_fusion)}
