"""Parameters of the synthetic worlds (torch-free)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from sava_core.config import StrictModel


class FactorWorldParams(StrictModel):
    """The paper's causal model (section 2, Eq. 1-2) with known factors.

    Factors follow a linear Gaussian process over ``length`` steps: each group keeps
    ``persistence`` of its own past and is pushed by the past of the other groups with strength
    ``coupling`` (Eq. 1). Observations (the frozen "pretrained encoder outputs", Eq. 2) are random
    ``depth``-layer tanh networks of [Z_C; Z_V] (video) and [Z_C; Z_A] (audio), of width ``d``, plus
    Gaussian noise of std ``noise``; ``strength`` scales the pre-activations (0 = linear mixing).
    """

    n_shared: int = Field(4, ge=1, description="shared factors Z_C (seen and heard)")
    n_video: int = Field(6, ge=0, description="video-only factors Z_V")
    n_audio: int = Field(6, ge=0, description="audio-only factors Z_A")
    d: int = Field(32, ge=2, description="width of each frozen encoder output")
    length: int = Field(8, ge=1, description="time steps L per clip")
    depth: int = Field(2, ge=1, description="layers of the entangling map")
    strength: float = Field(1.5, ge=0, description="gain of the entangling nonlinearity")
    noise: float = Field(0.05, ge=0, description="observation noise std (observations have unit scale)")
    persistence: float = Field(0.8, ge=0, lt=1, description="weight of a group's own past")
    coupling: float = Field(0.1, ge=0, lt=1, description="weight of the other groups' past (Eq. 1)")
    n_train: int = Field(2000, ge=10)
    n_val: int = Field(250, ge=10)
    n_test: int = Field(500, ge=10)
    seed: int = Field(0, description="the world's seed (maps and clips); independent of the run seed")


class MediaWorldParams(StrictModel):
    """A procedural audio-visual world rendered on demand (the paper's causal model, section 2).

    Shared factors (seen and heard): the moving object's class (its colour and shape, and the pitch
    and timbre of its impact sound) and the impacts themselves (the object touches the floor, with
    an optional flash, at the instants a percussive tone starts). Video-only: background colour and
    texture, a silent static object. Audio-only: wind (band-limited noise), hum (a low sine) and
    off-screen bird chirps (2.6-3.5 kHz) at random times. Clips are deterministic functions of
    (``seed``, split, index).
    """

    height: int = Field(32, ge=8, multiple_of=2, description="frame height in pixels (even, for H.264)")
    width: int = Field(32, ge=8, multiple_of=2, description="frame width in pixels (even, for H.264)")
    fps: float = Field(8.0, gt=0, description="video frame rate (frames per second)")
    duration: float = Field(2.0, gt=0, description="clip length in seconds")
    sample_rate: int = Field(8000, ge=8000, description="audio sample rate in Hz (mono); >= 8000 so chirps fit")
    n_classes: int = Field(4, ge=1, le=6, description="object classes used (from a fixed list of 6)")
    object_radius: float = Field(0.1, gt=0, le=0.25, description="moving object's radius, fraction of frame height")
    min_events: int = Field(1, ge=1, description="fewest impacts per clip")
    max_events: int = Field(3, ge=1, description="most impacts per clip")
    min_gap: float = Field(
        0.3, gt=0, description="shortest time between impacts in seconds; keep >= 2 frames so each impact is seen"
    )
    flash: bool = Field(True, description="brighten the object in the frame nearest each impact")
    p_static: float = Field(0.7, ge=0, le=1, description="probability of a silent static object")
    p_wind: float = Field(0.5, ge=0, le=1, description="probability of wind (audio-only)")
    p_hum: float = Field(0.5, ge=0, le=1, description="probability of a low hum (audio-only)")
    p_offscreen: float = Field(0.5, ge=0, le=1, description="probability of off-screen chirps (audio-only)")
    max_offscreen: int = Field(2, ge=1, description="most off-screen chirps in a clip that has them")
    wind_level: float = Field(
        0.05, ge=0, le=0.3, description="wind RMS (full scale 1); louder wind makes audio onsets harder to detect"
    )
    hum_level: float = Field(0.1, ge=0, le=0.5, description="hum amplitude (full scale 1)")
    chirp_level: float = Field(0.3, ge=0, le=0.8, description="chirp amplitude (full scale 1)")
    p_object_named: float = Field(
        1.0, ge=0, le=1,
        description="probability that a caption names the moving object (else 'something bounces ...', so that "
        "only the picture tells what is heard)",
    )
    n_train: int = Field(1000, ge=1, description="clips in the train split")
    n_val: int = Field(100, ge=1, description="clips in the val split")
    n_test: int = Field(200, ge=1, description="clips in the test split")
    seed: int = Field(0, description="the world's seed (all clips); independent of the run seed")

    @model_validator(mode="after")
    def _events_fit(self) -> MediaWorldParams:
        frames = round(self.duration * self.fps)
        if frames < 4:
            raise ValueError(f"duration * fps = {frames} frames; need at least 4")
        if self.min_events > self.max_events:
            raise ValueError(f"min_events {self.min_events} > max_events {self.max_events}")
        window = (frames - 3) / self.fps  # impacts lie in [1 / fps, (frames - 2) / fps]
        if (self.max_events - 1) * self.min_gap > window:
            raise ValueError(
                f"{self.max_events} impacts {self.min_gap} s apart do not fit in {window:.3f} s "
                "(impacts keep one frame from the start and two from the end)"
            )
        return self


class VideoAEParams(StrictModel):
    """A per-frame convolutional autoencoder: frames (3, H, W) -> latent grid (C, H/4, W/4)."""

    frame_rate: float = Field(8.0, gt=0, description="frames per second of the clips it encodes (the world's fps)")
    height: int = Field(32, ge=8, multiple_of=4, description="frame height the decoder produces")
    width: int = Field(32, ge=8, multiple_of=4, description="frame width the decoder produces")
    latent_channels: int = Field(4, ge=1)
    hidden: int = Field(16, ge=4, description="channels of the hidden convolutions")
    pretrained: str | None = Field(
        None, description="safetensors file of trained weights (written by the pretrain stage)")


class AudioAEParams(StrictModel):
    """A log-mel convolutional autoencoder with a Griffin-Lim vocoder.

    Mel frames (hop ``hop`` samples) are downsampled 4x in time and mel bins; ``fold`` latent steps
    are folded into one feature vector so the audio latent sequence has the video's number of steps
    (default: 2 s at 8 kHz -> 128 mel frames -> 32 latent steps -> 16 steps of 2 x 32 features).
    """

    sample_rate: int = Field(8000, ge=4000)
    n_fft: int = Field(512, ge=64)
    hop: int = Field(125, ge=16, description="samples between mel frames")
    n_mels: int = Field(32, ge=8, multiple_of=4)
    latent_channels: int = Field(4, ge=1)
    hidden: int = Field(16, ge=4)
    fold: int = Field(2, ge=1, description="latent time steps folded into one sequence step")
    griffin_lim_iters: int = Field(48, ge=1)
    pretrained: str | None = Field(
        None, description="safetensors file of trained weights (written by the pretrain stage)")


class HashTextParams(StrictModel):
    """A frozen text encoder: words hashed into a seeded random embedding table, plus positions."""

    dim: int = Field(32, ge=4)
    buckets: int = Field(1024, ge=16, description="hash buckets for words")
    max_tokens: int = Field(32, ge=1)
    seed: int = Field(0, description="seed of the embedding table")


class SynthUNetParams(StrictModel):
    """A diffusers UNet2DConditionModel denoiser with text cross-attention, for the synthetic world.

    ``modality`` video: input (B, F*C, h, w), frames stacked as channels; audio: input (B, C, m, t)
    with ``time_channels`` fixed sinusoidal channels of the time axis concatenated to the input, so
    that cross-attention queries know their instant, and time-aligned extra condition tokens
    (``condition_window``): text tokens are seen by every query, the k-th of T extra tokens only by
    queries at instants within ``condition_window`` / T of its own, (k + 1/2) / T of the clip.
    """

    after_pretraining: ClassVar[tuple[str, ...]] = (  # left out of the pretrain key
        "condition_window", "clip_sample", "frame_condition_channels")

    modality: str = Field(..., pattern="^(video|audio)$")
    block_out_channels: tuple[int, ...] | None = Field(
        None, description="channels per resolution level; default (128, 128) for video (its input has F*C channels), "
        "(32, 64) for audio"
    )
    layers_per_block: int = Field(1, ge=1)
    attention_head_dim: int = Field(8, ge=1)
    time_channels: int = Field(8, ge=0, multiple_of=2, description="sinusoidal channels of the time axis (audio)")
    attention_levels: int | None = Field(
        None, ge=0, description="cross-attention in the lowest this many resolution levels (and the middle); default 2 "
        "for video (text cross-attention at the full 8 x 8 latent too), 1 for audio"
    )
    condition_window: float = Field(
        1.0, ge=0, description="audio: extra condition tokens (a per-time-step sequence spanning the clip, "
        "e.g. TV2A's phi tokens) are seen only by cross-attention queries within this many token spacings of "
        "their instant; 0 = every query sees every token"
    )
    frame_condition_channels: int = Field(
        0, ge=0, description="video: extra condition tokens (TA2V's phi of the audio, a sequence spanning the clip) "
        "are also resampled to one per frame, projected to this many channels each and set beside that frame's "
        "stacked latent channels, entering through a zero-initialised convolution that Stage II trains; "
        "0 = they reach the video only through cross-attention, which has no time axis"
    )
    clip_sample: float | None = Field(
        None, gt=0, description="clip the predicted clean latent to [-r, r] at every sampling step; "
        "null = no clipping. Unset: null for video (the object lies in the latents' tails; clipping at 1 erased "
        "it) and 1 for audio (its samples' Fréchet distance on the media world: 18, against 47 unclipped; "
        "docs/generation.md)"
    )
    pretrained: str | None = Field(
        None, description="safetensors file of trained weights (written by the pretrain stage)")

    @model_validator(mode="before")
    @classmethod
    def _clip_by_modality(cls, data: object) -> object:
        if isinstance(data, dict) and "clip_sample" not in data:
            return {**data, "clip_sample": 1.0 if data.get("modality") == "audio" else None}
        return data


class SynthLatteParams(StrictModel):
    """A video denoiser with a time axis for the media world: diffusers' ``LatteTransformer3DModel``
    (Latte, Ma et al. 2024), spatial transformer blocks (self-attention within a frame, cross-attention
    to the condition) alternating with temporal ones (self-attention across frames at each patch).
    Extra condition tokens (TA2V's phi tokens, a sequence spanning the clip) are time-aligned: frame f
    sees the k-th of T tokens only if their instants lie within ``condition_window`` token spacings."""

    after_pretraining: ClassVar[tuple[str, ...]] = ("condition_window", "clip_sample")  # left out of the pretrain key

    layers: int = Field(4, ge=1, description="spatial + temporal block pairs")
    heads: int = Field(4, ge=1)
    head_dim: int = Field(32, ge=1, description="width per head; the model width is heads * head_dim")
    patch_size: int = Field(4, ge=1, description="latent pixels per patch side (the latent grid must divide by it); "
                            "4 on the 8 x 8 grid: 4 patches per frame; 2 is about 3x slower per step")
    condition_window: float = Field(
        1.0, ge=0, description="extra condition tokens are seen only by frames within this many token spacings of "
        "their instant; 0 = every frame sees every token")
    clip_sample: float | None = Field(
        None, gt=0, description="clip the predicted clean latent to [-r, r] at every sampling step; null = no clipping")
    pretrained: str | None = Field(
        None, description="safetensors file of trained weights (written by the pretrain stage)")
