"""Parameters of the AudioLDM components (torch-free)."""

from __future__ import annotations

from pydantic import Field, model_validator

from sava_core.config import WeightsParams


class AudioLDMVAEParams(WeightsParams):
    """AudioLDM's mel VAE (``AutoencoderKL``) and HiFi-GAN vocoder (``SpeechT5HifiGan``), from an
    AudioLDM or AudioLDM2 pipeline directory (``vae/`` and ``vocoder/``).

    The mel front end is AudioLDM's (``TacotronSTFT`` + ``wav_to_fbank``): magnitude STFT (periodic
    Hann window of ``n_fft``, centred with reflect padding), librosa's Slaney mel filterbank from
    ``fmin`` to ``fmax``, natural log of the magnitude clamped at 1e-5. The defaults are those of the
    16 kHz checkpoints (AudioLDM s/m/l, AudioLDM2); ``sample_rate``, ``hop`` and ``n_mels`` are checked
    against the vocoder's config.
    """

    subfolder: str = Field("vae", description="folder of the VAE inside the pipeline directory")
    vocoder_subfolder: str = Field("vocoder", description="folder of the vocoder inside the pipeline directory")
    sample_rate: int = Field(16000, ge=1000, description="Hz; the vocoder's sampling_rate")
    n_fft: int = Field(1024, ge=16, description="STFT size and window length in samples")
    hop: int = Field(160, ge=1, description="samples between mel frames; the vocoder's total upsampling")
    n_mels: int = Field(64, ge=4, description="mel bins; the vocoder's model_in_dim")
    fmin: float = Field(0.0, ge=0, description="lowest mel filter frequency in Hz")
    fmax: float = Field(8000.0, gt=0, description="highest mel filter frequency in Hz")
    normalize: bool = Field(True, description="AudioLDM's data loader: remove the mean and scale the peak to 0.5 "
                            "before the STFT (the VAE and the diffusion model were trained on such audio)")
    slicing: bool = Field(False, description="encode and decode one clip at a time (less memory)")
    tiling: bool = Field(False, description="encode and decode long mel images in overlapping tiles (less memory)")

    @model_validator(mode="after")
    def _band(self) -> AudioLDMVAEParams:
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need fmin < fmax <= sample_rate / 2, got fmin {self.fmin}, fmax {self.fmax}, "
                             f"sample_rate {self.sample_rate}")
        return self


class AudioLDMParams(WeightsParams):
    """AudioLDM v1's UNet (``UNet2DConditionModel``, subfolder ``unet`` of an AudioLDM pipeline
    directory), conditioned on the pooled CLAP text embedding through its FiLM path
    (``class_embed_type: simple_projection``, concatenated to the time embedding)."""

    subfolder: str = Field("unet", description="folder of the UNet inside the pipeline directory")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")


class AudioLDM2Params(WeightsParams):
    """AudioLDM2's UNet (``AudioLDM2UNet2DConditionModel``, subfolder ``unet``) with two cross-attention
    streams: the GPT-2 generated tokens and the T5 tokens of the ``audioldm2_text`` encoder."""

    subfolder: str = Field("unet", description="folder of the UNet inside the pipeline directory")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")


class AudioLDM2TextParams(WeightsParams):
    """AudioLDM2's text conditioning: CLAP + Flan-T5 -> projection -> GPT-2 generating 8 embeddings,
    from an AudioLDM2 pipeline directory (text_encoder, text_encoder_2, projection_model,
    language_model, tokenizer, tokenizer_2)."""
