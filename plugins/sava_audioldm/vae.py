"""AudioLDM's latent space: log-mel spectrogram -> ``AutoencoderKL`` -> latent grid, and back through
the VAE decoder and the ``SpeechT5HifiGan`` vocoder. AudioLDM and AudioLDM2 share these classes and
their layout (``vae/``, ``vocoder/`` in the pipeline directory).

Shapes (r = the VAE's downsampling factor, 4 in the released models; C its latent channels, 8):

* audio (B, C_audio, S) at 16 kHz -> mono, clamped to [-1, 1], optionally mean-removed and peak-scaled
  to 0.5 (AudioLDM's loader), zero-padded to a multiple of ``hop * r`` samples S';
* log-mel image (B, 1, T, n_mels) with T = S' / hop frames (the pipeline's layout: time is the image
  height, mel bins its width);
* grid (B, C, T / r, n_mels / r) = VAE posterior mean * ``scaling_factor``: exactly the latents the
  AudioLDM UNets denoise (the pipelines' ``prepare_latents``: (B, C, height / r, model_in_dim / r));
* sequence (B, T / r, C * n_mels / r): time first, one step per 10 ms * r (40 ms).

The mel front end follows AudioLDM's ``audioldm/audio/stft.py`` (``TacotronSTFT.mel_spectrogram``)
and ``audioldm/audio/tools.py`` (``wav_to_fbank``, ``normalize_wav``): |STFT| with a periodic Hann
window, reflect padding of n_fft / 2 on both sides, librosa's Slaney mel filterbank, log(clamp(x, 1e-5)).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor

from sava_audioldm.params import AudioLDMVAEParams
from sava_core.contracts import AudioEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, torch_dtype

SETTING = "model.audio_vae.params.pretrained (or model.audio_encoder's)"


def tiny_vae() -> Any:
    """A seeded tiny ``AutoencoderKL`` for one-channel mel images: r = 2, 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         layers_per_block=1, norm_num_groups=8, sample_size=64)


def tiny_vocoder(params: AudioLDMVAEParams) -> Any:
    """A seeded tiny ``SpeechT5HifiGan``: one upsampling stage of ``hop`` from ``n_mels`` bins."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(0)
    return SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=params.n_mels, sampling_rate=params.sample_rate, upsample_initial_channel=8,
        upsample_rates=[params.hop], upsample_kernel_sizes=[2 * params.hop], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]], normalize_before=False))


class AudioLDMVAE(AudioEncoder):
    """f_a = AudioLDM's mel VAE (+ HiFi-GAN vocoder to decode); see the module docstring for shapes."""

    Params = AudioLDMVAEParams

    def __init__(self, params: AudioLDMVAEParams):
        super().__init__()
        from diffusers import AutoencoderKL
        from transformers import SpeechT5HifiGan

        p = self.params = params
        if p.preset == "tiny":
            self.vae, self.vocoder = cast(tiny_vae(), p.dtype), cast(tiny_vocoder(p), p.dtype)
        else:
            root = Path(locate(p.pretrained, SETTING, must_contain=p.subfolder))
            if not (root / p.vocoder_subfolder).is_dir():
                raise SavaError(f"{SETTING}: {root} has no {p.vocoder_subfolder}/; point it at an AudioLDM or "
                                "AudioLDM2 pipeline directory (vae/ and vocoder/)")
            try:
                self.vae = AutoencoderKL.from_pretrained(root / p.subfolder, dtype=torch_dtype(p.dtype))
                self.vocoder = SpeechT5HifiGan.from_pretrained(root / p.vocoder_subfolder, dtype=torch_dtype(p.dtype))
            except (OSError, ValueError) as err:
                raise SavaError(f"{SETTING}: cannot load the VAE or vocoder from {root}: {err}") from None
        self._check_vocoder(self.vocoder.config)
        if p.slicing:
            self.vae.enable_slicing()
        if p.tiling:
            self.vae.enable_tiling()
        self.ratio = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if p.n_mels % self.ratio:
            raise SavaError(f"model.audio_vae.params.n_mels: {p.n_mels} is not a multiple of the VAE's "
                            f"downsampling factor {self.ratio}")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=p.sample_rate, n_fft=p.n_fft, win_length=p.n_fft, hop_length=p.hop, f_min=p.fmin, f_max=p.fmax,
            n_mels=p.n_mels, power=1.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        self.sample_rate = p.sample_rate
        self.latent_channels = int(self.vae.config.latent_channels)
        self.latent_dim = self.latent_channels * p.n_mels // self.ratio
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.requires_grad_(False).eval()

    def _check_vocoder(self, config: Any) -> None:
        p = self.params
        expected = {"sample_rate": (p.sample_rate, config.sampling_rate), "n_mels": (p.n_mels, config.model_in_dim),
                    "hop": (p.hop, math.prod(config.upsample_rates))}
        wrong = {k: v for k, v in expected.items() if v[0] != v[1]}
        if wrong:
            said = ", ".join(f"{k}={mine} (vocoder: {theirs})" for k, (mine, theirs) in wrong.items())
            raise SavaError(f"model.audio_vae.params (or model.audio_encoder's): {said}; "
                            "set them to the vocoder's values")

    def log_mel(self, audio: Tensor) -> Tensor:
        """Audio (B, C, S) in [-1, 1] -> AudioLDM log-mel image (B, 1, T, n_mels), T = S' / hop (see module doc)."""
        wave = audio.float().mean(1).clamp(-1, 1)
        if self.params.normalize:
            wave = wave - wave.mean(-1, keepdim=True)
            wave = wave / (wave.abs().amax(-1, keepdim=True) + 1e-8) * 0.5
        unit = self.params.hop * self.ratio
        padded = max(1, math.ceil(wave.shape[-1] / unit)) * unit
        wave = torch.nn.functional.pad(wave, (0, padded - wave.shape[-1]))
        mel = self.mel(wave)[..., :-1]  # (B, n_mels, S'/hop + 1) -> drop the last frame
        return torch.log(mel.clamp_min(1e-5)).transpose(1, 2).unsqueeze(1)

    def encode_grid(self, audio: Tensor) -> Tensor:
        """Audio (B, C, S) in [-1, 1] at ``sample_rate`` -> grid (B, C_lat, T / r, n_mels / r), float32."""
        mel = self.log_mel(audio).to(self.vae.dtype)
        return (self.vae.encode(mel).latent_dist.mode() * self.scaling_factor).float()

    def decode_mel(self, grid: Tensor) -> Tensor:
        """Grid (B, C_lat, t, m) -> log-mel image (B, 1, t * r, m * r)."""
        return self.vae.decode(grid.to(self.vae.dtype) / self.scaling_factor).sample

    def decode_grid(self, grid: Tensor) -> Tensor:
        """Grid (B, C_lat, t, m) -> waveform (B, 1, t * r * hop) at ``sample_rate`` (the vocoder's)."""
        mel = self.decode_mel(grid)
        wave = self.vocoder(mel.squeeze(1).to(self.vocoder.dtype)).float()
        samples = mel.shape[2] * self.params.hop
        return torch.nn.functional.pad(wave, (0, max(0, samples - wave.shape[-1])))[:, None, :samples]

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """Grid (B, C, t, m) -> sequence (B, t, C * m): time first."""
        return grid.permute(0, 2, 1, 3).flatten(2).float()

    def encode(self, audio: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(audio))
