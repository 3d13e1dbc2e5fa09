"""Parameters of the AnimateDiff components (torch-free)."""

from __future__ import annotations

from pydantic import Field, model_validator

from sava_cogvideox.params import LatentPoolParams
from sava_core.config import WeightsParams


class SDVAEParams(WeightsParams, LatentPoolParams):
    """Stable Diffusion's image VAE (``AutoencoderKL``, subfolder ``vae`` of a SD 1.5 pipeline) applied to
    every frame: video (B, F, 3, H, W), H and W multiples of 8 -> latent grid (B, F, 4, H/8, W/8)
    times the VAE's ``scaling_factor`` (0.18215 for SD 1.5), the layout AnimateDiff denoises."""

    subfolder: str = Field("vae", description="folder of the VAE inside the pipeline directory")
    frame_rate: float = Field(
        8.0, gt=0, description="frames per second of the clips (the dataset's fps must match); AnimateDiff's 16-frame "
        "clips are usually played at 8 fps")
    enable_slicing: bool = Field(False, description="encode and decode one frame at a time (less memory)")
    enable_tiling: bool = Field(
        False, description="encode and decode in overlapping spatial tiles (less memory for large frames)")


class CLIPTextParams(WeightsParams):
    """Stable Diffusion's text encoder (``CLIPTextModel`` + ``CLIPTokenizer``): prompts padded to
    ``max_length``; tokens = last hidden states (B, max_length, hidden), mask True on real tokens
    (start and end included), pooled = the end token's final state (``pooler_output``)."""

    subfolder: str = Field("text_encoder", description="folder of the text encoder inside the pipeline directory")
    tokenizer_subfolder: str = Field("tokenizer", description="folder of the tokenizer inside the pipeline directory")
    max_length: int | None = Field(
        None, ge=2, description="tokens per prompt (padded / truncated); None: the tokenizer's model_max_length "
        "(77 for SD 1.5, 16 for the tiny preset)")


class AnimateDiffParams(WeightsParams):
    """AnimateDiff: a SD 1.5 ``UNet2DConditionModel`` (``pretrained``, subfolder ``unet``) merged with a
    ``MotionAdapter`` (``motion_adapter``) into a ``UNetMotionModel``, denoising ``sd_vae`` grids
    (B, F, 4, h, w) with text cross-attention to ``clip_text`` tokens."""

    subfolder: str = Field("unet", description="folder of the UNet inside the SD pipeline directory")
    motion_adapter: str | None = Field(
        None, description="hub id or local directory of the MotionAdapter "
        "(e.g. guoyww/animatediff-motion-adapter-v1-5-2); required with `pretrained`, not used by the tiny preset")
    scheduler_subfolder: str = Field(
        "scheduler",
        description="folder of the pipeline's scheduler config (its betas and prediction type are used when present)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")

    @model_validator(mode="after")
    def _adapter_with_weights(self) -> AnimateDiffParams:
        if (self.pretrained is None) != (self.motion_adapter is None):
            raise ValueError("`motion_adapter` goes with `pretrained` (a SD 1.5 pipeline): "
                             "set both, or neither with preset: tiny")
        return self
