"""AnimateDiff (Guo et al. 2024) through diffusers and transformers: Stable Diffusion 1.5's image VAE
applied per frame, its CLIP text encoder, and its UNet merged with a motion adapter as SAVA components.

Layouts: video (B, F, 3, H, W) in [0, 1] -> per-frame VAE input (B*F, 3, H, W) in [-1, 1] -> latent
grid (B, F, 4, H/8, W/8), scaled by the VAE's ``scaling_factor``; the UNetMotionModel takes
(B, 4, F, h, w) and text tokens repeated per frame (B*F, N, D). Stage I sees each latent frame pooled
to p x p cells: (B, F, 4 * p * p) (the helper shared with ``cogvideox_vae``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sava_animatediff.params import AnimateDiffParams, CLIPTextParams, SDVAEParams
from sava_cogvideox.shared import build_vae, check_video, frozen, load_pretrained, pool_latent_frames, weights_root
from sava_core.contracts import Backbone, Condition, TextEmbedding, TextEncoder, VideoEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, tiny_tokenizer, torch_dtype

VAE_SETTING = "model.video_vae (or model.video_encoder).params.pretrained"
TEXT_SETTING = "model.video_text_encoder (or model.text_encoder).params.pretrained"
BACKBONE_SETTING = "model.video_backbone.params.pretrained"
ADAPTER_SETTING = "model.video_backbone.params.motion_adapter"

TINY_TEXT_LENGTH = 16
TINY_TEXT_DIM = 32

#: AnimateDiff's noise schedule: the motion modules were trained with linear betas 0.00085 -> 0.012,
#: and diffusers' AnimateDiff examples build ``DDIMScheduler`` with beta_schedule "linear",
#: clip_sample False, timestep_spacing "linspace", steps_offset 1. A pipeline's own scheduler config
#: contributes ``PIPELINE_SCHEDULER_KEYS``.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "timestep_spacing": "linspace", "prediction_type": "epsilon",
}
PIPELINE_SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "prediction_type")

#: Cross-attention projections of the spatial transformers (``...attentions.N.transformer_blocks.N.attn2``);
#: the motion modules' ``attn2`` (temporal self-attention, under ``motion_modules``) do not match.
LORA_TARGETS = [r".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn2\.(to_q|to_k|to_v|to_out\.0)"]


# ----------------------------------------------------------------------------------- tiny builders


def tiny_sd_vae() -> Any:
    """A seeded tiny SD ``AutoencoderKL``: 4 levels (8x spatial), 4 latent channels, scaling 0.18215."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8,
                         layers_per_block=1, scaling_factor=0.18215)


def tiny_clip_text() -> Any:
    """A seeded tiny ``CLIPTextModel`` over the real CLIP BPE vocabulary (49408 tokens)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=TINY_TEXT_DIM, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        max_position_embeddings=TINY_TEXT_LENGTH, bos_token_id=49406,
                                        eos_token_id=49407, pad_token_id=49407))


def tiny_unet(channels: int, text_dim: int) -> Any:
    """A seeded tiny SD-style ``UNet2DConditionModel``: two levels, cross-attention in the first."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=text_dim,
                                attention_head_dim=8, norm_num_groups=8)


def tiny_motion_adapter() -> Any:
    """A seeded tiny ``MotionAdapter`` matching :func:`tiny_unet` (up to 32 frames)."""
    from diffusers import MotionAdapter

    torch.manual_seed(1)
    return MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_norm_num_groups=8,
                         motion_num_attention_heads=2, motion_max_seq_length=32)


# ----------------------------------------------------------------------------------- VAE


class SDVAE(VideoEncoder):
    """f_v / the T2V latent space: SD's ``AutoencoderKL`` on every frame (module docstring for layouts).
    Frozen; encodes to the posterior mean."""

    Params = SDVAEParams

    def __init__(self, params: SDVAEParams):
        super().__init__()
        from diffusers import AutoencoderKL

        self.params = params
        self.vae = vae = build_vae(AutoencoderKL, tiny_sd_vae, params, VAE_SETTING)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)
        self.spatial_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self.latent_dim = self.latent_channels * params.sequence_pool ** 2
        self.frame_rate = params.frame_rate

    def encode_grid(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1] -> (B, F, 4, H/8, W/8) float32, scaled."""
        check_video(video, "sd_vae", multiple=self.spatial_factor, frames=lambda f: f >= 1, frames_rule="at least 1")
        b, f = video.shape[:2]
        x = (video.flatten(0, 1) * 2 - 1).to(self.vae.device, self.vae.dtype)
        z = (self.vae.encode(x).latent_dist.mode().float() - self.shift_factor) * self.scaling_factor
        return z.reshape(b, f, *z.shape[1:])

    def decode_grid(self, grid: Tensor) -> Tensor:
        """(B, F, 4, h, w) -> (B, F, 3, 8h, 8w) float32 in [0, 1]."""
        b, f = grid.shape[:2]
        z = (grid.flatten(0, 1) / self.scaling_factor + self.shift_factor).to(self.vae.device, self.vae.dtype)
        x = ((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1)
        return x.reshape(b, f, *x.shape[1:])

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, F, C, h, w) -> (B, F, C * p * p), p = ``sequence_pool``."""
        return pool_latent_frames(grid, self.params.sequence_pool)

    def encode(self, video: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(video))


# ----------------------------------------------------------------------------------- CLIP text


class CLIPText(TextEncoder):
    """f_t for AnimateDiff: SD's CLIP text encoder (see :class:`CLIPTextParams`). As in SD pipelines the
    model sees no padding mask (its causal attention keeps real tokens independent of padding), and
    the backbone attends to all ``max_length`` tokens."""

    Params = CLIPTextParams

    def __init__(self, params: CLIPTextParams):
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer

        self.params = params
        if params.preset == "tiny":
            self.model = cast(tiny_clip_text(), params.dtype)
            self.tokenizer = tiny_tokenizer("clip", model_max_length=TINY_TEXT_LENGTH)
        else:
            root = weights_root(params.pretrained, TEXT_SETTING, params.subfolder, params.tokenizer_subfolder)
            self.model = load_pretrained(CLIPTextModel.from_pretrained, root / params.subfolder, TEXT_SETTING,
                                         dtype=torch_dtype(params.dtype))
            self.tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, root / params.tokenizer_subfolder,
                                             TEXT_SETTING)
        self.max_length = params.max_length or int(self.tokenizer.model_max_length)
        positions = int(self.model.config.max_position_embeddings)
        if self.max_length > positions:
            raise SavaError(f"{TEXT_SETTING.rsplit('.', 1)[0]}.max_length: {self.max_length} tokens, the model has "
                            f"{positions} positions: set max_length <= {positions}")
        self.dim = int(self.model.config.hidden_size)
        frozen(self)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        device = self.model.device
        batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        out = self.model(input_ids=batch.input_ids.to(device))
        mask = batch.attention_mask.to(device).bool()
        return TextEmbedding(out.last_hidden_state.float(), mask, out.pooler_output.float())


# ----------------------------------------------------------------------------------- UNet + motion adapter


class KeyMaskProcessor:
    """Attention processor of the spatial transformers' ``attn1`` / ``attn2``: diffusers'
    ``AttnProcessor2_0`` plus a ``key_bias`` argument (from ``cross_attention_kwargs``; (B*F, 1, N+M),
    0 for kept tokens, -inf for dropped ones) that the cross-attention (``cross=True``) adds to its
    scores; self-attention ignores it. The UNetMotionModel has no encoder attention mask of its own."""

    def __init__(self, cross: bool):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.cross = cross
        self.inner = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None,
                 key_bias: Tensor | None = None) -> Tensor:
        if self.cross and key_bias is not None:
            attention_mask = key_bias.to(hidden_states.dtype)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)



def merged_unet(unet: Any, adapter: Any) -> Any:
    """``UNetMotionModel.from_unet2d(unet, adapter)`` without its spurious warning (diffusers 0.42 warns
    about float32 modules on its own ``to(unet.dtype)`` even when there are none)."""
    from diffusers import UNetMotionModel
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return UNetMotionModel.from_unet2d(unet, adapter)
    finally:
        diffusers_logging.set_verbosity(level)

class AnimateDiff(Backbone):
    """The T2V denoiser: a ``UNetMotionModel`` (SD 1.5 UNet + motion adapter) on grids (B, F, 4, h, w),
    predicting epsilon.

    Text tokens (B, N, D) are repeated per frame (B*F, N, D) for the spatial cross-attention. Stage
    II's extra tokens (B, M, D) are appended after them, [text ; extra], with a key mask: a dropped
    extra token (``extra_mask`` False) gets a -inf attention bias, so it has zero weight and a row
    whose mask is all False gives the output without extra (up to float rounding of the attention
    kernel). Text padding is attended, as in SD pipelines. ``lora_targets``: the spatial
    cross-attention projections (to_q, to_k, to_v, to_out.0 of ``attn2``), not the motion modules.
    """

    Params = AnimateDiffParams

    def __init__(self, params: AnimateDiffParams, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        from diffusers import MotionAdapter, UNet2DConditionModel

        self.params = params
        self.latent_shape = tuple(latent_shape)
        self.condition_dim = condition_dim
        if len(self.latent_shape) != 4:
            raise SavaError(f"{VAE_SETTING}: animatediff denoises per-frame grids (F, C, h, w); the video VAE gives "
                            f"{self.latent_shape}: use sd_vae")
        if params.preset == "tiny":
            unet, adapter = tiny_unet(self.latent_shape[1], condition_dim), tiny_motion_adapter()
            self.scheduler_config = dict(SCHEDULER_CONFIG)
        else:
            root = weights_root(params.pretrained, BACKBONE_SETTING, params.subfolder)
            unet = load_pretrained(UNet2DConditionModel.from_pretrained, root / params.subfolder, BACKBONE_SETTING)
            adapter_dir = Path(locate(params.motion_adapter, ADAPTER_SETTING))
            adapter = load_pretrained(MotionAdapter.from_pretrained, adapter_dir, ADAPTER_SETTING)
            self.scheduler_config = _scheduler_config(root / params.scheduler_subfolder / "scheduler_config.json")
        self.unet = cast(merged_unet(unet, adapter), params.dtype)
        self._check_runtime()
        for name, module in self.unet.named_modules():
            if ".attentions." in name and name.endswith(("attn1", "attn2")):
                module.set_processor(KeyMaskProcessor(cross=name.endswith("attn2")))
        self.prediction_type = self.scheduler_config["prediction_type"]
        self.lora_targets = list(LORA_TARGETS)
        if params.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def _check_runtime(self) -> None:
        cfg = self.unet.config
        f, c, h, w = self.latent_shape
        if c != cfg.in_channels:
            raise SavaError(f"{VAE_SETTING}: the video VAE gives {c} latent channels, "
                            f"this UNet takes {cfg.in_channels}: use sd_vae from the same pipeline")
        if self.condition_dim != cfg.cross_attention_dim:
            raise SavaError(f"{TEXT_SETTING}: text tokens of width {self.condition_dim}, this UNet cross-attends to "
                            f"{cfg.cross_attention_dim}: use clip_text from the same pipeline")
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if h % factor or w % factor:
            raise SavaError(f"data: latent frames of {h}x{w} do not go through the UNet's {factor}x downsampling: use "
                            f"frame sizes that are multiples of {8 * factor} pixels")
        if f > cfg.motion_max_seq_length:
            raise SavaError(f"data: clips of {f} frames, the motion adapter handles at most "
                            f"{cfg.motion_max_seq_length}: shorten the clips (duration / fps or the segment length)")

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        """(B, F, C, h, w), timestep (B,) -> epsilon (B, F, C, h, w) in ``noisy``'s dtype."""
        frames = noisy.shape[1]
        tokens, kwargs = condition.text, None
        if condition.extra is not None:
            keep = condition.extra_mask
            if keep is None:
                keep = torch.ones(condition.extra.shape[:2], dtype=torch.bool, device=tokens.device)
            tokens = torch.cat([tokens, condition.extra.to(tokens.dtype)], dim=1)
            kept = torch.cat([torch.ones(condition.text.shape[:2], dtype=torch.bool, device=keep.device), keep], dim=1)
            bias = torch.zeros(kept.shape, device=kept.device).masked_fill(~kept, float("-inf"))
            kwargs = {"key_bias": bias[:, None].repeat_interleave(frames, dim=0)}
        dtype = self.unet.dtype
        out = self.unet(noisy.permute(0, 2, 1, 3, 4).to(dtype), timestep,
                        encoder_hidden_states=tokens.repeat_interleave(frames, dim=0).to(dtype),
                        cross_attention_kwargs=kwargs).sample
        return out.permute(0, 2, 1, 3, 4).to(noisy.dtype)


def _scheduler_config(file: Path) -> dict[str, Any]:
    """AnimateDiff's schedule, with the betas and prediction type of the pipeline's scheduler when present."""
    pipeline = json.loads(file.read_text()) if file.is_file() else {}
    return {**SCHEDULER_CONFIG, **{k: pipeline[k] for k in PIPELINE_SCHEDULER_KEYS if k in pipeline}}
