"""Parameters of the LTX-2 components (torch-free).

LTX-2 (Lightricks) generates video and audio together in one transformer; diffusers ships it as
``LTX2Pipeline``. ``pretrained`` is a hub id (e.g. ``Lightricks/LTX-2``) or a local directory in the
diffusers pipeline layout (the one with ``model_index.json``); ``preset: tiny`` builds the same
classes from small configs with random weights, offline.
"""

from __future__ import annotations

from pydantic import Field

from sava_core.config import WeightsParams


class LTX2Params(WeightsParams):
    """The joint generator: ``LTX2Pipeline`` called once per batch of prompts.

    Sizes left unset take the model's defaults: 121 frames of 512 x 768 (``preset: tiny``: 9 frames
    of 32 x 32, 2 steps, 16 text tokens). Guidance settings left unset keep ``LTX2Pipeline``'s own
    defaults (which follow LTX-2.3); for LTX-2.0 checkpoints (``Lightricks/LTX-2``) set
    ``use_cross_timestep: false`` and ``spatio_temporal_guidance_blocks: [29]``.
    """

    num_frames: int | None = Field(
        None, ge=1, description="frames per clip; must be k * (VAE temporal ratio) + 1 (LTX-2: 8k + 1, e.g. 49, 121)")
    height: int | None = Field(None, ge=32, multiple_of=32, description="frame height in pixels (multiple of 32)")
    width: int | None = Field(None, ge=32, multiple_of=32, description="frame width in pixels (multiple of 32)")
    frame_rate: float = Field(24.0, gt=0, description="frames per second of the output video; the audio lasts as long")
    num_inference_steps: int | None = Field(
        None, ge=1, description="denoising steps (default: the pipeline's 30; tiny: 2)")
    guidance_scale: float | None = Field(
        None, ge=0, description="video classifier-free guidance (pipeline default 3.0)")
    audio_guidance_scale: float | None = Field(
        None, ge=0, description="audio classifier-free guidance (pipeline default 7.0)")
    stg_scale: float | None = Field(
        None, ge=0, description="video spatio-temporal guidance (pipeline default 1.0; 0 = off)")
    audio_stg_scale: float | None = Field(
        None, ge=0, description="audio spatio-temporal guidance (pipeline default 1.0)")
    modality_scale: float | None = Field(
        None, ge=0,
        description="video modality-isolation guidance, away from a pass without audio<->video attention (default 3.0)")
    audio_modality_scale: float | None = Field(
        None, ge=0, description="audio modality-isolation guidance (default 3.0)")
    guidance_rescale: float | None = Field(
        None, ge=0, le=1, description="video guidance rescale (pipeline default 0.7)")
    audio_guidance_rescale: float | None = Field(
        None, ge=0, le=1, description="audio guidance rescale (pipeline default 0.7)")
    spatio_temporal_guidance_blocks: list[int] | None = Field(
        None, description="transformer blocks perturbed by STG (pipeline default [28] for LTX-2.3; LTX-2.0: [29])")
    use_cross_timestep: bool | None = Field(
        None, description="cross-modal attention modulated by the other stream's noise level "
        "(default true, LTX-2.3; LTX-2.0: false)")
    negative_prompt: str | None = Field(None, description="negative prompt for guidance (pipeline default: empty)")
    max_sequence_length: int | None = Field(None, ge=1, description="text tokens per prompt (default 1024; tiny: 16)")
    enable_model_cpu_offload: bool = Field(
        False,
        description="keep each sub-model on the CPU until it runs (needs a GPU; the model then ignores .to(device))")
    vae_tiling: bool = Field(False, description="decode video in spatial tiles (less memory for large frames)")
    vae_slicing: bool = Field(False, description="decode one clip of the batch at a time (video and audio VAEs)")


class LTX2VideoVAEParams(WeightsParams):
    """LTX-2's video VAE as a frozen encoder: frames -> latent grid (B, C, F', H/32, W/32), F' = (F - 1)/8 + 1.

    Latents are normalised with the VAE's per-channel statistics (the space LTX-2's transformer
    denoises). The Stage I sequence averages each latent frame over a ``pool`` x ``pool`` grid of cells.
    """

    subfolder: str = Field("vae", description="folder of the video VAE inside the pipeline directory")
    frame_rate: float = Field(24.0, gt=0, description="frames per second of the clips it encodes (the data's fps)")
    pool: int = Field(
        2, ge=1, description="cells per side each latent frame is averaged to: sequence width = C * pool^2")
    vae_tiling: bool = Field(False, description="encode and decode in spatial tiles (less memory for large frames)")
    vae_slicing: bool = Field(False, description="encode and decode one clip of the batch at a time")


class LTX2AudioVAEParams(WeightsParams):
    """LTX-2's audio VAE (+ vocoder) as a frozen encoder: waveform -> log-mel -> latent grid
    (B, C, T', mel_bins/4), about 25 latent steps per second.

    The log-mel front end is LTX-2's (ltx-core ``AudioProcessor``: Slaney mel of magnitude, Hann
    window of ``n_fft``, the VAE's hop and bins, natural log clamped at 1e-5). Decoding runs the
    vocoder and resamples its output to the VAE's sample rate.
    """

    subfolder: str = Field("audio_vae", description="folder of the audio VAE inside the pipeline directory")
    vocoder_subfolder: str = Field("vocoder", description="folder of the vocoder inside the pipeline directory")
    n_fft: int = Field(1024, ge=16, description="STFT size of the log-mel front end (LTX-2: 1024)")
    vae_slicing: bool = Field(False, description="encode and decode one clip of the batch at a time")
