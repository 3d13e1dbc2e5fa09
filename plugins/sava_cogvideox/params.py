"""Parameters of the CogVideoX components (torch-free). :class:`LatentPoolParams` is shared by the
video plug-ins (``sava_animatediff`` imports it)."""

from __future__ import annotations

from pydantic import Field

from sava_core.config import StrictModel, WeightsParams


class LatentPoolParams(StrictModel):
    """How a video VAE's latent grid becomes the time-first sequence Stage I aligns."""

    sequence_pool: int = Field(
        2, ge=1, description="grid_to_sequence averages each latent frame over p x p spatial cells (adaptive average "
        "pooling) and flattens them: sequence width = latent channels * p * p")


class CogVideoXVAEParams(WeightsParams, LatentPoolParams):
    """CogVideoX's causal 3D VAE (``AutoencoderKLCogVideoX``, subfolder ``vae`` of a CogVideoX pipeline).

    Video (B, F, 3, H, W) with F = 8k + 1 frames and H, W multiples of 16 -> latent grid
    (B, F_lat, 16, H/8, W/8), F_lat = (F - 1)/4 + 1, times the VAE's ``scaling_factor`` (1.15258426):
    the layout CogVideoX's transformer denoises.
    """

    subfolder: str = Field("vae", description="folder of the VAE inside the pipeline directory")
    frame_rate: float = Field(
        8.0, gt=0, description="frames per second of the clips (the dataset's fps must match): the released models "
        "were trained at 8 fps (CogVideoX 1.0: 49 frames = 6 s) and 16 fps (CogVideoX 1.5: 81 frames = 5 s)")
    enable_slicing: bool = Field(False, description="encode and decode one clip of the batch at a time (less memory)")
    enable_tiling: bool = Field(
        False, description="encode and decode in overlapping spatial tiles (less memory for large frames)")


class T5Params(WeightsParams):
    """A T5 encoder (``T5EncoderModel`` + its tokenizer) as in CogVideoX's pipeline: prompts are padded
    to ``max_length`` tokens; tokens (B, max_length, d_model), mask (B, max_length) True on real
    tokens (the closing ``</s>`` included), pooled = mean of the real tokens."""

    subfolder: str = Field("text_encoder", description="folder of the T5 encoder inside the pipeline directory")
    tokenizer_subfolder: str = Field("tokenizer", description="folder of the tokenizer inside the pipeline directory")
    max_length: int | None = Field(
        None, ge=1, description="tokens per prompt (padded / truncated); None: 226 for pretrained weights (CogVideoX's "
        "max_text_seq_length), 16 for the tiny preset. Must equal the backbone's text length")
    mask_padding: bool = Field(
        False, description="pass the padding mask to T5's self-attention; False as in CogVideoX's pipeline and "
        "training (padding tokens attend to the prompt), which its transformer expects")


class CogVideoXParams(WeightsParams):
    """CogVideoX's transformer (``CogVideoXTransformer3DModel``, subfolder ``transformer``) denoising
    latent grids (B, F_lat, C, h, w) from ``cogvideox_vae``, conditioned on ``t5`` tokens (joint
    attention over [text ; video]). The tiny preset is built for the runtime latent shape."""

    subfolder: str = Field("transformer", description="folder of the transformer inside the pipeline directory")
    scheduler_subfolder: str = Field(
        "scheduler",
        description="folder of the scheduler config (noise schedule, prediction type) in the pipeline directory")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")
