"""LTX-2's VAEs as frozen SAVA encoders, so that Stage I can align LTX-2's own latents.

* video: frames (B, F, 3, H, W) in [0, 1] -> grid (B, C, F', h, w), F' = (F - 1)/r_t + 1, h = H/r_s
  (released VAE: C = 128, r_t = 8, r_s = 32) -> sequence (B, F', C * pool^2), each latent frame
  averaged over pool x pool cells;
* audio: waveform (B, C, S) in [-1, 1] at 16 kHz -> log-mel (B, 2, S/hop + 1, mel_bins) -> grid
  (B, C_a, T', mel_bins/4), T' = ceil(mel frames / 4) (about 25 per second) -> sequence
  (B, T', C_a * mel_bins/4) (released: 8 x 16 = 128), the packing LTX-2's transformer uses.

Grids are normalised with each VAE's latent statistics, as LTX2Pipeline does before denoising (its
``latents=`` / ``audio_latents=`` arguments and ``output_type="latent"`` use un-normalised latents).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from sava_core.contracts import AudioEncoder, VideoEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, torch_dtype
from sava_ltx2 import tiny
from sava_ltx2.loading import class_in, pipeline_dir, subfolder_dir
from sava_ltx2.params import LTX2AudioVAEParams, LTX2VideoVAEParams


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    weight = next(module.parameters())
    return weight.device, weight.dtype


class LTX2VideoVAE(VideoEncoder):
    """f_v: LTX-2's ``AutoencoderKLLTX2Video`` (see the module docstring for shapes). Frame counts
    must be r_t k + 1 and frame sizes multiples of r_s (released model: 8k + 1 frames, multiples of 32)."""

    Params = LTX2VideoVAEParams

    def __init__(self, params: LTX2VideoVAEParams):
        super().__init__()
        from diffusers import AutoencoderKLLTX2Video

        self.params = params
        setting = "model.video_encoder.params"
        dtype = torch_dtype(params.dtype)
        if params.preset == "tiny":
            self.vae = cast(tiny.video_vae(), params.dtype)
        else:
            root = pipeline_dir(params.pretrained, f"{setting}.pretrained")
            folder = subfolder_dir(root, params.subfolder, f"{setting}.subfolder")
            self.vae = AutoencoderKLLTX2Video.from_pretrained(str(folder), dtype=dtype)
        if params.vae_tiling:
            self.vae.enable_tiling()
        if params.vae_slicing:
            self.vae.enable_slicing()
        self.requires_grad_(False).eval()
        self.frame_rate = params.frame_rate
        self.temporal_ratio = self.vae.temporal_compression_ratio
        self.spatial_ratio = self.vae.spatial_compression_ratio
        self.latent_dim = self.vae.config.latent_channels * params.pool**2

    def _check(self, video: Tensor) -> None:
        frames, height, width = video.shape[1], video.shape[-2], video.shape[-1]
        t, s = self.temporal_ratio, self.spatial_ratio
        if (frames - 1) % t or height % s or width % s:
            raise SavaError(
                f"ltx2_video_vae: clips of {frames} frames of {height}x{width}; LTX-2's video VAE needs "
                f"{t}k + 1 frames (e.g. {t + 1}, {2 * t + 1}, {6 * t + 1}) and height and width multiples of {s}: "
                "change the data's fps / segment length and frame size")

    def _statistics(self, like: Tensor) -> tuple[Tensor, Tensor, float]:
        shape = (1, -1, 1, 1, 1)
        mean = self.vae.latents_mean.view(shape).to(like)
        std = self.vae.latents_std.view(shape).to(like)
        return mean, std, self.vae.config.scaling_factor

    @torch.no_grad()
    def encode_grid(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1] -> normalised (B, C, F', h, w), float32 (the posterior mode)."""
        self._check(video)
        device, dtype = _device_dtype(self)
        x = (video.to(device, dtype) * 2 - 1).permute(0, 2, 1, 3, 4)
        z = self.vae.encode(x).latent_dist.mode().float()
        mean, std, scale = self._statistics(z)
        return (z - mean) * scale / std

    @torch.no_grad()
    def decode_grid(self, grid: Tensor) -> Tensor:
        """Normalised (B, C, F', h, w) -> video (B, (F' - 1) r_t + 1, 3, h r_s, w r_s) in [0, 1], float32."""
        device, dtype = _device_dtype(self)
        mean, std, scale = self._statistics(grid.float())
        z = (grid.float() * std / scale + mean).to(device, dtype)
        timestep = (torch.zeros(z.shape[0], device=device, dtype=dtype)
                    if self.vae.config.timestep_conditioning else None)
        x = self.vae.decode(z, timestep).sample.float()
        return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, C, F', h, w) -> (B, F', C * pool^2): each latent frame averaged over pool x pool cells."""
        pool = self.params.pool
        pooled = nn.functional.adaptive_avg_pool3d(grid, (grid.shape[2], pool, pool))
        return pooled.permute(0, 2, 1, 3, 4).flatten(2)

    def encode(self, video: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(video))


class LTX2AudioVAE(AudioEncoder):
    """f_a: LTX-2's log-mel front end, ``AutoencoderKLLTX2Audio`` and vocoder (see the module
    docstring). ``sample_rate`` is the VAE's (16 kHz released). Inputs with another channel count
    than the VAE's (stereo released) are averaged to mono and repeated; decoded audio has the
    vocoder's channels, resampled from its rate (24 kHz released) to ``sample_rate``."""

    Params = LTX2AudioVAEParams

    def __init__(self, params: LTX2AudioVAEParams):
        super().__init__()
        from diffusers import AutoencoderKLLTX2Audio
        from diffusers.pipelines import ltx2

        self.params = params
        setting = "model.audio_encoder.params"
        dtype = torch_dtype(params.dtype)
        if params.preset == "tiny":
            self.vae, self.vocoder = cast(tiny.audio_vae(), params.dtype), cast(tiny.vocoder(), params.dtype)
        else:
            root = pipeline_dir(params.pretrained, f"{setting}.pretrained")
            vae_folder = subfolder_dir(root, params.subfolder, f"{setting}.subfolder")
            self.vae = AutoencoderKLLTX2Audio.from_pretrained(str(vae_folder), dtype=dtype)
            folder = subfolder_dir(root, params.vocoder_subfolder, f"{setting}.vocoder_subfolder")
            self.vocoder = class_in(folder, ltx2, f"{setting}.vocoder_subfolder").from_pretrained(
                str(folder), dtype=dtype)
        if params.vae_slicing:
            self.vae.enable_slicing()
        config = self.vae.config
        self.sample_rate = int(config.sample_rate)
        self.channels = int(config.in_channels)
        self.latent_dim = config.latent_channels * (config.mel_bins // self.vae.mel_compression_ratio)
        self.mel = torchaudio.transforms.MelSpectrogram(
            self.sample_rate, n_fft=params.n_fft, win_length=params.n_fft, hop_length=config.mel_hop_length, f_min=0.0,
            f_max=self.sample_rate / 2, n_mels=config.mel_bins, window_fn=torch.hann_window, center=True,
            pad_mode="reflect", power=1.0, norm="slaney", mel_scale="slaney")
        self.requires_grad_(False).eval()

    def log_mel(self, audio: Tensor) -> Tensor:
        """(B, C, S) in [-1, 1] -> natural-log mel (B, channels, S // hop + 1, mel_bins), float32."""
        if audio.shape[1] != self.channels:
            audio = audio.mean(1, keepdim=True).expand(-1, self.channels, -1)
        mel = self.mel(audio.to(self.mel.spectrogram.window.device, torch.float32))
        return torch.log(mel.clamp_min(1e-5)).transpose(2, 3)

    def _pack(self, grid: Tensor) -> Tensor:
        return grid.transpose(1, 2).flatten(2)

    def _unpack(self, seq: Tensor, channels: int) -> Tensor:
        return seq.unflatten(2, (channels, -1)).transpose(1, 2)

    @torch.no_grad()
    def encode_grid(self, audio: Tensor) -> Tensor:
        """(B, C, S) in [-1, 1] at ``sample_rate`` -> normalised (B, C_a, T', mel_bins/4), float32."""
        device, dtype = _device_dtype(self.vae)
        z = self.vae.encode(self.log_mel(audio).to(device, dtype)).latent_dist.mode().float()
        mean, std = self.vae.latents_mean.to(z), self.vae.latents_std.to(z)
        return self._unpack((self._pack(z) - mean) / std, z.shape[1])

    @torch.no_grad()
    def decode_grid(self, grid: Tensor) -> Tensor:
        """Normalised (B, C_a, T', m) -> waveform (B, vocoder channels, S') in [-1, 1] at ``sample_rate``,
        S' = (4 T' - 3) hop samples."""
        device, dtype = _device_dtype(self.vae)
        mean, std = self.vae.latents_mean.to(grid.float()), self.vae.latents_std.to(grid.float())
        z = self._unpack(self._pack(grid.float()) * std + mean, grid.shape[1]).to(device, dtype)
        mel = self.vae.decode(z).sample
        wave = self.vocoder(mel.to(_device_dtype(self.vocoder)[1])).float()
        rate = int(self.vocoder.config.output_sampling_rate)
        return torchaudio.functional.resample(wave, rate, self.sample_rate).clamp(-1, 1)

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, C_a, T', m) -> (B, T', C_a * m), time first (LTX-2's audio token packing)."""
        return self._pack(grid)

    def encode(self, audio: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(audio))
