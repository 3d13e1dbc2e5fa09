"""Parameters of the CLAP components (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sava_core.config import WeightsParams


class ClapTextParams(WeightsParams):
    """CLAP's text tower (RoBERTa + projection) through transformers.

    ``pretrained``: an AudioLDM pipeline directory (weights in ``subfolder``, a
    ``ClapTextModelWithProjection``; in AudioLDM2 a whole ``ClapModel``) or a CLAP model directory
    (``config.json`` at its root, e.g. laion/clap-htsat-unfused).
    """

    subfolder: str = Field(
        "text_encoder", description="folder of the text weights inside a pipeline directory; not used when "
        "`pretrained` is itself a model directory (config.json at its root)")
    tokenizer_subfolder: str = Field(
        "tokenizer", description="folder of the tokenizer inside a pipeline directory; else the model's own folder")
    output: Literal["tokens", "pooled"] = Field(
        "tokens", description="tokens: last hidden states (B, N, hidden), dim = hidden width; pooled: the projected, "
        "L2-normalised text embedding as one token (B, 1, projection_dim), dim = projection width, what AudioLDM v1 "
        "is conditioned on")


class ClapAudioParams(WeightsParams):
    """CLAP audio embeddings of sliding windows: an analysis encoder (no latent grid).

    ``checkpoint_format: transformers`` reads a ``ClapModel`` directory (with its feature extractor's
    ``preprocessor_config.json``); ``laion`` reads an original LAION-CLAP checkpoint file
    (``.pt``/``.ckpt``) with the optional ``laion-clap`` package (``pip install "sava[laion-clap]"``).
    """

    checkpoint_format: Literal["transformers", "laion"] = Field(
        "transformers", description="transformers: a ClapModel directory; laion: an original laion-clap .pt/.ckpt file")
    subfolder: str | None = Field(
        None, description="folder of the ClapModel inside `pretrained` (text_encoder in an AudioLDM2 pipeline, whose "
        "feature_extractor folder is then used); None: `pretrained` itself")
    window_seconds: float = Field(1.0, gt=0, description="length of each embedded window in seconds (at most the "
                                  "model's clip length, 10 s for LAION CLAP; shorter windows are repeat-padded)")
    hop_seconds: float = Field(0.5, gt=0, description="seconds between window starts: the latent frame period")
    window_batch_size: int = Field(64, ge=1, description="windows embedded per forward pass (memory)")
    laion_audio_model: str = Field("HTSAT-tiny", description="laion only: the audio tower's laion-clap config "
                                   "(HTSAT-tiny for 630k-*.pt, HTSAT-base for music_* / larger_clap_* checkpoints)")
    laion_fusion: bool = Field(False, description="laion only: the checkpoint is a fusion model (*-fusion-*.pt)")

    @model_validator(mode="after")
    def _laion_needs_a_file(self) -> ClapAudioParams:
        if self.checkpoint_format == "laion" and self.preset is not None:
            raise ValueError("preset tiny builds transformers classes; checkpoint_format laion needs `pretrained` "
                             "set to a laion-clap .pt/.ckpt file")
        return self
