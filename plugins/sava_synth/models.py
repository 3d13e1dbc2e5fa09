"""Small pretrained-style components for the media world: video and audio autoencoders, a frozen
text encoder and UNet denoisers built from diffusers model classes.

Latent conventions (frames F, video latent channels C_v, audio latent channels C_a):

* video: frames (B, F, 3, H, W) in [0, 1] -> grid (B, F, C_v, H/4, W/4) -> sequence (B, F, C_v*H*W/16);
* audio: waveform (B, 1, S) in [-1, 1] -> normalised log-mel (B, 1, n_mels, M) -> grid
  (B, C_a, n_mels/4, M/4) -> sequence (B, M/(4*fold), fold*C_a*n_mels/4).

Grids are what the diffusion backbones denoise; sequences (time first) are what Stage I aligns.
Latents are scaled to unit standard deviation (``latent_scale``, fitted after training).
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import torch
import torchaudio
from safetensors.torch import load_file
from torch import Tensor, nn

from sava_core.components.embeddings import sinusoids
from sava_core.contracts import AudioEncoder, Backbone, Condition, TextEmbedding, TextEncoder, VideoEncoder
from sava_core.errors import SavaError
from sava_synth.params import AudioAEParams, HashTextParams, SynthLatteParams, SynthUNetParams, VideoAEParams


def load_weights(module: nn.Module, path: str | None, what: str, skip: tuple[str, ...] = ()) -> None:
    """Load a safetensors state dict into ``module`` (strict but for keys starting with one of
    ``skip``, in the module or the file), with a clear error if missing."""
    if path is None:
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise SavaError(
            f"{what}: pretrained weights {file} not found; run `sava run recipes/synth_pretrain.yaml` "
            "(or a recipe whose stages start with pretrain), or set pretrained: null for random weights"
        )
    try:
        state = {k: v for k, v in load_file(str(file)).items() if not k.startswith(skip)}
        if skip:
            state |= {k: v for k, v in module.state_dict().items() if k.startswith(skip)}
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise SavaError(f"{what}: the weights in {file} were trained for other parameters ({first}); use the "
                        "parameters they were made with (see pretrain.json beside them) or pretrain again") from None


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(cin, cout))


class _ConvAE(nn.Module):
    """Images (N, c_in, h, w) <-> latent grids (N, c_lat, h/4, w/4)."""

    def __init__(self, c_in: int, c_lat: int, hidden: int, out_act: nn.Module):
        super().__init__()
        self.enc = nn.Sequential(_conv_block(c_in, hidden), _conv_block(hidden, hidden, 2),
                                 _conv_block(hidden, 2 * hidden, 2), nn.Conv2d(2 * hidden, c_lat, 1))
        self.dec = nn.Sequential(nn.Conv2d(c_lat, 2 * hidden, 3, padding=1), nn.SiLU(), _up_block(2 * hidden, hidden),
                                 _up_block(hidden, hidden), nn.Conv2d(hidden, c_in, 3, padding=1), out_act)


class SynthVideoAE(VideoEncoder):
    """f_v for the media world: a per-frame conv autoencoder (see the module docstring for shapes)."""

    Params = VideoAEParams
    pretrain_stage = True  # trained by the `pretrain` stage, which supplies `pretrained`

    def __init__(self, params: VideoAEParams):
        super().__init__()
        self.params = params
        self.ae = _ConvAE(3, params.latent_channels, params.hidden, nn.Sigmoid())
        self.register_buffer("latent_scale", torch.ones(()))
        self.frame_rate = params.frame_rate
        self.grid = (params.latent_channels, params.height // 4, params.width // 4)
        self.latent_dim = math.prod(self.grid)
        load_weights(self, params.pretrained, "synth_video_ae")
        self.requires_grad_(params.pretrained is None)

    def encode_grid(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1] -> (B, F, C, H/4, W/4), unit scale."""
        b, f = video.shape[:2]
        z = self.ae.enc(video.flatten(0, 1) * 2 - 1) * self.latent_scale
        return z.reshape(b, f, *z.shape[1:])

    def decode_grid(self, grid: Tensor) -> Tensor:
        """(B, F, C, h, w) -> (B, F, 3, 4h, 4w) in [0, 1]."""
        b, f = grid.shape[:2]
        x = self.ae.dec(grid.flatten(0, 1) / self.latent_scale)
        return x.reshape(b, f, *x.shape[1:])

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, F, C, h, w) -> (B, F, C*h*w)."""
        return grid.flatten(2)

    def sequence_to_grid(self, seq: Tensor) -> Tensor:
        return seq.reshape(*seq.shape[:2], *self.grid)

    def encode(self, video: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(video))

    def decode(self, latent: Tensor) -> Tensor:
        return self.decode_grid(self.sequence_to_grid(latent))

    def autoencoder_loss(self, video: Tensor) -> Tensor:
        """Pixel mean squared error of a reconstruction, (B, F, 3, H, W) -> scalar."""
        return (self.decode_grid(self.encode_grid(video)) - video).pow(2).mean()

    @torch.no_grad()
    def fit_statistics(self, video: Tensor) -> None:
        """Set ``latent_scale`` so that latents of ``video`` have unit standard deviation."""
        self.latent_scale.fill_(1.0)
        self.latent_scale.fill_(1.0 / float(self.encode_grid(video).std().clamp_min(1e-6)))


class SynthAudioAE(AudioEncoder):
    """f_a for the media world: log-mel conv autoencoder + Griffin-Lim (see the module docstring)."""

    Params = AudioAEParams
    pretrain_stage = True  # trained by the `pretrain` stage, which supplies `pretrained`

    def __init__(self, params: AudioAEParams):
        super().__init__()
        p = self.params = params
        self.sample_rate = p.sample_rate
        self.mel = torchaudio.transforms.MelSpectrogram(p.sample_rate, n_fft=p.n_fft, hop_length=p.hop, n_mels=p.n_mels,
                                                        power=1.0)
        self.inverse_mel = torchaudio.transforms.InverseMelScale(p.n_fft // 2 + 1, n_mels=p.n_mels,
                                                                 sample_rate=p.sample_rate)
        self.griffin_lim = torchaudio.transforms.GriffinLim(n_fft=p.n_fft, hop_length=p.hop, power=1.0,
                                                            n_iter=p.griffin_lim_iters)
        self.ae = _ConvAE(1, p.latent_channels, p.hidden, nn.Identity())
        self.register_buffer("mel_mean", torch.zeros(()))
        self.register_buffer("mel_std", torch.ones(()))
        self.register_buffer("latent_scale", torch.ones(()))
        self.latent_dim = p.fold * p.latent_channels * p.n_mels // 4
        load_weights(self, p.pretrained, "synth_audio_ae")
        self.requires_grad_(p.pretrained is None)

    def mel_frames(self, samples: int) -> int:
        """Mel frames used for ``samples`` samples: a multiple of 4 * fold."""
        unit = 4 * self.params.fold
        return (samples // self.params.hop) // unit * unit

    def log_mel(self, audio: Tensor) -> Tensor:
        """(B, 1, S) -> normalised log-mel (B, 1, n_mels, M)."""
        m = self.mel(audio.mean(1))[..., : self.mel_frames(audio.shape[-1])]
        return ((torch.log(m + 1e-4) - self.mel_mean) / self.mel_std).unsqueeze(1)

    def encode_grid(self, audio: Tensor) -> Tensor:
        """(B, 1, S) in [-1, 1] -> (B, C, n_mels/4, M/4), unit scale."""
        return self.ae.enc(self.log_mel(audio)) * self.latent_scale

    def decode_mel(self, grid: Tensor) -> Tensor:
        """(B, C, n_mels/4, M/4) -> normalised log-mel (B, 1, n_mels, M)."""
        return self.ae.dec(grid / self.latent_scale)

    def vocode(self, log_mel: Tensor, samples: int) -> Tensor:
        """Normalised log-mel (B, 1, n_mels, M) -> waveform (B, 1, samples) by Griffin-Lim, whose random
        initial phase is drawn from a fixed seed, so the same mel always gives the same waveform (not
        dependent on what used torch's global generator before)."""
        mel = torch.exp(log_mel.squeeze(1) * self.mel_std + self.mel_mean).clamp_min(0)
        spec = self.inverse_mel(mel)
        devices = [spec.device] if spec.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # Griffin-Lim's random initial phase: the same every call
            torch.manual_seed(0)
            wave = self.griffin_lim(spec)
        wave = torch.nn.functional.pad(wave, (0, max(samples - wave.shape[-1], 0)))[..., :samples]
        return (wave / wave.abs().amax(-1, keepdim=True).clamp_min(1e-3) * 0.9).unsqueeze(1)

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, C, m, t) -> (B, t/fold, fold*C*m): time first, ``fold`` steps per sequence step."""
        b, c, m, t = grid.shape
        f = self.params.fold
        return grid.permute(0, 3, 1, 2).reshape(b, t // f, f * c * m)

    def sequence_to_grid(self, seq: Tensor) -> Tensor:
        b, t, _ = seq.shape
        c, f = self.params.latent_channels, self.params.fold
        return seq.reshape(b, t * f, c, -1).permute(0, 2, 3, 1)

    def encode(self, audio: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(audio))

    def decode_grid(self, grid: Tensor) -> Tensor:
        """(B, C, m, t) -> waveform (B, 1, 4 * t * hop)."""
        return self.vocode(self.decode_mel(grid), grid.shape[-1] * 4 * self.params.hop)

    def autoencoder_loss(self, audio: Tensor) -> Tensor:
        """Mean squared error of the normalised log-mel reconstruction, (B, 1, S) -> scalar."""
        target = self.log_mel(audio)
        return (self.decode_mel(self.encode_grid(audio)) - target).pow(2).mean()

    @torch.no_grad()
    def fit_mel_statistics(self, audio: Tensor) -> None:
        """Normalise log-mels with the mean and std of ``audio`` (B, 1, S); call before training."""
        self.mel_mean.fill_(0.0)
        self.mel_std.fill_(1.0)
        m = self.log_mel(audio)
        self.mel_mean.fill_(float(m.mean()))
        self.mel_std.fill_(float(m.std().clamp_min(1e-6)))

    @torch.no_grad()
    def fit_statistics(self, audio: Tensor) -> None:
        """Set ``latent_scale`` so that latents of ``audio`` have unit standard deviation."""
        self.latent_scale.fill_(1.0)
        self.latent_scale.fill_(1.0 / float(self.encode_grid(audio).std().clamp_min(1e-6)))

    def decode(self, latent: Tensor) -> Tensor:
        return self.decode_grid(self.sequence_to_grid(latent))


class HashTextEncoder(TextEncoder):
    """f_t: lower-cased words hashed (crc32) into a frozen seeded embedding table, plus sinusoidal
    positions. prompts -> tokens (B, N, dim), mask (B, N), pooled (B, dim) = mean of real tokens, on
    the encoder's device. The empty prompt is one reserved "null" token (for classifier-free guidance)."""

    Params = HashTextParams

    def __init__(self, params: HashTextParams):
        super().__init__()
        self.params = params
        self.dim = params.dim
        g = torch.Generator().manual_seed(params.seed)
        self.register_buffer("table", torch.randn(params.buckets + 1, params.dim, generator=g))
        self.register_buffer("positions", sinusoids(params.max_tokens, params.dim) * 0.5)

    @property
    def max_tokens(self) -> int:  # type: ignore[override]
        return self.params.max_tokens

    def token_count(self, prompt: str) -> int:
        """Words of ``prompt`` (the encoder's tokens), before the cut at ``max_tokens``."""
        return len(re.findall(r"[a-z]+", prompt.lower()))

    def token_ids(self, prompt: str) -> list[int]:
        words = re.findall(r"[a-z]+", prompt.lower())[: self.params.max_tokens]
        return [1 + zlib.crc32(w.encode()) % self.params.buckets for w in words] or [0]

    def encode(self, prompts: list[str]) -> TextEmbedding:
        ids = [self.token_ids(p) for p in prompts]
        n = max(len(i) for i in ids)
        mask = torch.zeros(len(ids), n, dtype=torch.bool)
        index = torch.zeros(len(ids), n, dtype=torch.long)
        for row, seq in enumerate(ids):
            index[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        index, mask = index.to(self.table.device), mask.to(self.table.device)
        tokens = (self.table[index] + self.positions[:n]) * mask.unsqueeze(-1)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True)
        return TextEmbedding(tokens, mask, pooled)


class _FrameCondition(nn.Module):
    """A per-frame condition for a UNet whose input stacks the F frames as channels: the extra
    tokens (B, M, D), resampled to the frames' instants (linear interpolation: frame f at
    (f + 1/2) / F, token k at (k + 1/2) / M) and projected to k channels each, are set beside the
    stacked latent (B, F*C, h, w) (zero where ``extra_mask`` hides the tokens, as in guidance's
    unconditional row) and mapped by a zero-initialised 3 x 3 convolution to the width
    of the UNet's first block, (B, W, h, w), which is added to its input convolution's output."""

    def __init__(self, frames: int, latent_channels: int, condition_dim: int, channels: int, width: int):
        super().__init__()
        self.frames, self.channels = frames, channels
        self.proj = nn.Linear(condition_dim, channels)
        self.conv = nn.Conv2d(frames * (latent_channels + channels), width, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, stacked: Tensor, extra: Tensor, extra_mask: Tensor | None) -> Tensor:
        """stacked (B, F*C, h, w), extra (B, M, D), extra_mask (B, M) or None -> (B, W, h, w)."""
        seen = torch.ones_like(extra[..., :1]) if extra_mask is None else extra_mask[..., None].to(extra.dtype)
        per_frame = nn.functional.interpolate(torch.cat([extra * seen, seen], dim=2).transpose(1, 2),
                                              size=self.frames, mode="linear", align_corners=False).transpose(1, 2)
        b, _, h, w = stacked.shape
        cond = self.proj(per_frame[..., :-1]) * per_frame[..., -1:]  # (B, F, k); 0 where no token is seen
        cond = cond.reshape(b, self.frames * self.channels, 1, 1).expand(-1, -1, h, w)
        out: Tensor = self.conv(torch.cat([stacked, cond], dim=1))
        return out


class SynthUNet(Backbone):
    """eps_theta for the media world: a diffusers ``UNet2DConditionModel`` with cross-attention over
    [text tokens ; extra condition tokens]. Runtime arguments: ``latent_shape`` (the AE's grid; for
    video (F, C, h, w), stacked to (F*C, h, w)) and ``condition_dim`` (the text width). With
    ``frame_condition_channels``, the video also reads the extra tokens frame by frame
    (:class:`_FrameCondition`, a Stage II ``condition_module``)."""

    Params = SynthUNetParams
    pretrain_stage = True  # trained by the `pretrain` stage, which supplies `pretrained`

    def __init__(self, params: SynthUNetParams, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.params = params
        self.modality = params.modality
        self.latent_shape = tuple(latent_shape)
        self.condition_dim = condition_dim
        self.prediction_type = "epsilon"
        self.clip_sample = params.clip_sample
        self.lora_targets = [r".*attn2\.(to_q|to_k|to_v|to_out\.0)"]
        video = params.modality == "video"
        if video:
            f, c, h, w = latent_shape
            channels, size, extra = f * c, (h, w), 0
        else:
            c, m, t = latent_shape
            channels, size, extra = c, (m, t), params.time_channels
        blocks = params.block_out_channels or ((128, 128) if video else (32, 64))
        levels = params.attention_levels if params.attention_levels is not None else (2 if video else 1)
        n, a = len(blocks), min(levels, len(blocks))
        self.unet = UNet2DConditionModel(
            sample_size=size, in_channels=channels + extra, out_channels=channels,
            block_out_channels=blocks, layers_per_block=params.layers_per_block,
            down_block_types=("DownBlock2D",) * (n - a) + ("CrossAttnDownBlock2D",) * a,
            up_block_types=("CrossAttnUpBlock2D",) * a + ("UpBlock2D",) * (n - a),
            mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=condition_dim,
            attention_head_dim=params.attention_head_dim, norm_num_groups=min(32, blocks[0]),
        )
        if extra:
            self.register_buffer("time_embedding",
                                 sinusoids(size[1], extra).T[:, None, :].expand(-1, size[0], -1).clone())
        self._local: list[_TimeAlignedCrossAttention] = []
        if params.modality == "audio" and params.condition_window > 0:
            for name, module in self.unet.named_modules():
                if name.endswith("attn2"):
                    processor = _TimeAlignedCrossAttention(size, params.condition_window)
                    module.set_processor(processor)
                    self._local.append(processor)
        self._frame_input: Tensor | None = None  # the frame condition's output for the running forward
        if video and params.frame_condition_channels:
            self.frame_condition = _FrameCondition(f, c, condition_dim, params.frame_condition_channels, blocks[0])
            self.condition_modules = ("frame_condition",)
            self.unet.conv_in.register_forward_hook(self._add_frame_condition)
        load_weights(self, params.pretrained, f"synth_unet ({params.modality})", skip=("frame_condition.",))

    def _add_frame_condition(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return output if self._frame_input is None else output + self._frame_input

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        x = noisy.flatten(1, 2) if self.modality == "video" else noisy
        if self.modality == "audio" and self.params.time_channels:
            x = torch.cat([x, self.time_embedding.expand(x.shape[0], -1, -1, -1)], dim=1)
        tokens, mask = condition.text, condition.text_mask
        if condition.extra is not None:
            tokens = torch.cat([tokens, condition.extra], dim=1)
            extra_mask = condition.extra_mask
            if extra_mask is None:
                extra_mask = torch.ones(condition.extra.shape[:2], dtype=torch.bool, device=tokens.device)
            if mask is None:
                mask = torch.ones(condition.text.shape[:2], dtype=torch.bool, device=tokens.device)
            mask = torch.cat([mask, extra_mask], dim=1)
        for processor in self._local:
            processor.n_extra = 0 if condition.extra is None else condition.extra.shape[1]
        if self.condition_modules and condition.extra is not None:
            self._frame_input = self.frame_condition(x, condition.extra, condition.extra_mask)
        try:
            out = self.unet(x, timestep, encoder_hidden_states=tokens,
                            encoder_attention_mask=None if mask is None else mask.to(tokens.dtype)).sample
        finally:
            self._frame_input = None
        return out.reshape(noisy.shape)


class SynthLatte(Backbone):
    """eps_theta for the media world's video with a time axis: diffusers' ``LatteTransformer3DModel``
    on the video AE's grid (B, F, C, h, w), patches of ``patch_size``, cross-attention of every frame
    to [text tokens ; extra condition tokens]. The extra tokens (a sequence spanning the clip, TA2V's
    phi of the aligned audio latent) are time-aligned: frame f (instant (f + 1/2) / F) sees token k
    ((k + 1/2) / T) only within ``condition_window`` token spacings, as TV2A's audio queries do in
    :class:`SynthUNet`; text tokens are seen by every frame. Runtime arguments: ``latent_shape``
    (F, C, h, w) and ``condition_dim`` (the text width)."""

    Params = SynthLatteParams
    pretrain_stage = True  # trained by the `pretrain` stage, which supplies `pretrained`

    def __init__(self, params: SynthLatteParams, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        from diffusers import LatteTransformer3DModel

        if len(latent_shape) != 4:
            raise SavaError(f"synth_latte: latent_shape {tuple(latent_shape)} is not a video grid (F, C, h, w)")
        f, c, h, w = latent_shape
        if h != w or h % params.patch_size:
            raise SavaError(f"synth_latte: the latent grid {h} x {w} must be square and divisible by patch_size "
                            f"{params.patch_size}")
        self.params = params
        self.latent_shape = tuple(latent_shape)
        self.condition_dim = condition_dim
        self.prediction_type = "epsilon"
        self.clip_sample = params.clip_sample
        self.lora_targets = [r".*transformer_blocks\.\d+\.attn2\.(to_q|to_k|to_v|to_out\.0)"]
        width = params.heads * params.head_dim
        self.transformer = LatteTransformer3DModel(
            num_attention_heads=params.heads, attention_head_dim=params.head_dim, in_channels=c, out_channels=c,
            num_layers=params.layers, cross_attention_dim=width, sample_size=h, patch_size=params.patch_size,
            activation_fn="gelu-approximate", norm_type="ada_norm_single", norm_elementwise_affine=False,
            norm_eps=1e-6, caption_channels=condition_dim, video_length=f,
        )
        load_weights(self, params.pretrained, "synth_latte")

    def condition_bias(self, condition: Condition, frames: int) -> tuple[Tensor, Tensor]:
        """Tokens (B, N + M, D) and the additive attention bias (B * frames, 1, N + M) of every frame's
        cross-attention (0 = seen, -10000 = not): masked text tokens and, for the M extra tokens, those
        farther than ``condition_window`` token spacings from the frame's instant."""
        tokens, mask = condition.text, condition.text_mask
        b, device = tokens.shape[0], tokens.device
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        seen = mask[:, None, :].expand(b, frames, -1)
        if condition.extra is not None:
            n = condition.extra.shape[1]
            extra_mask = condition.extra_mask
            if extra_mask is None:
                extra_mask = torch.ones(condition.extra.shape[:2], dtype=torch.bool, device=device)
            near = torch.ones(frames, n, dtype=torch.bool, device=device)
            if self.params.condition_window > 0:
                f_time = (torch.arange(frames, device=device) + 0.5) / frames
                near = ~_far_from(f_time, n, self.params.condition_window)
            seen = torch.cat([seen, extra_mask[:, None, :] & near[None]], dim=2)
            tokens = torch.cat([tokens, condition.extra], dim=1)
        bias = (~seen).to(tokens.dtype) * -10000.0
        return tokens, bias.reshape(b * frames, 1, -1)

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        """noisy (B, F, C, h, w), timestep (B,) -> the predicted noise, (B, F, C, h, w)."""
        frames = noisy.shape[1]
        tokens, bias = self.condition_bias(condition, frames)
        out = self.transformer(noisy.transpose(1, 2), timestep, encoder_hidden_states=tokens,
                               encoder_attention_mask=bias).sample
        return out.transpose(1, 2)


def _far_from(times: Tensor, n: int, window: float) -> Tensor:
    """(Q, n) bool: query instant ``times[q]`` (fractions of the clip, (Q,)) lies more than ``window``
    token spacings from the instant (k + 1/2) / n of the k-th of ``n`` tokens spanning the clip."""
    k_time = (torch.arange(n, device=times.device) + 0.5) / n
    return (times[:, None] - k_time[None, :]).abs() * n > window


class _TimeAlignedCrossAttention:
    """Cross-attention (diffusers ``AttnProcessor2_0``) in which the last ``n_extra`` keys are a
    time-aligned condition sequence spanning the clip: the k-th is visible only to queries whose
    instant (their column on the (mel, time) grid of that resolution) lies within ``window`` token
    spacings of (k + 1/2) / n_extra of the clip. Text keys stay visible to every query.

    Why: with global attention, TV2A has to discover from a weak training signal both *which* query
    should read *which* condition token and what the token means; on the media world it never did
    (its validation loss was the same with the true or a shuffled condition, docs/generation.md).
    Making the time routing explicit leaves it only the second."""

    def __init__(self, size: tuple[int, int], window: float):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()
        self.size, self.window = tuple(size), window
        self.n_extra = 0

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,  # type: ignore[no-untyped-def]
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        n = self.n_extra
        if n and encoder_hidden_states is not None and attention_mask is not None and hidden_states.ndim == 3:
            queries, keys = hidden_states.shape[1], attention_mask.shape[-1]
            mel, steps = self.size
            width = round(steps / math.sqrt(mel * steps / queries))  # time columns at this resolution
            q_time = (torch.arange(queries, device=hidden_states.device) % width + 0.5) / width
            far = _far_from(q_time, n, self.window)
            bias = torch.zeros(queries, keys, dtype=attention_mask.dtype, device=attention_mask.device)
            bias[:, keys - n :] = far.to(bias.dtype) * -10000.0
            attention_mask = attention_mask + bias  # (B, 1, K) + (Q, K) -> (B, Q, K)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
