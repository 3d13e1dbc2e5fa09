"""CogVideoX (Yang et al. 2024) through diffusers and transformers: its 3D VAE, its T5 text encoder and
its transformer as SAVA components.

Layouts: video (B, F, 3, H, W) in [0, 1] -> VAE (B, 3, F, H, W) in [-1, 1] -> latent grid
(B, F_lat, C, H/8, W/8) (the transformer's and pipelines' layout), scaled by the VAE's
``scaling_factor``; F_lat = (F - 1)/4 + 1. Stage I sees each latent frame pooled to p x p cells:
(B, F_lat, C * p * p).

The transformer has no cross-attention: text tokens and video tokens share one joint attention
(``attn1``), so Stage II's extra condition tokens go INTO the text token sequence (see
:class:`CogVideoX`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sava_cogvideox.params import CogVideoXParams, CogVideoXVAEParams, T5Params
from sava_cogvideox.shared import build_vae, check_video, frozen, load_pretrained, pool_latent_frames, weights_root
from sava_core.components.embeddings import masked_mean
from sava_core.contracts import Backbone, Condition, TextEmbedding, TextEncoder, VideoEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, tiny_tokenizer, torch_dtype

VAE_SETTING = "model.video_vae (or model.video_encoder).params.pretrained"
TEXT_SETTING = "model.video_text_encoder (or model.text_encoder)"
BACKBONE_SETTING = "model.video_backbone.params.pretrained"

#: Text tokens per prompt of the released models (T5 ``max_sequence_length`` = transformer
#: ``max_text_seq_length``) and of the tiny presets.
TEXT_LENGTH = 226
TINY_TEXT_LENGTH = 128  # room for a media-world caption (up to ~80 tiny-T5 tokens) and the extra tokens
TINY_TEXT_DIM = 32

#: ``scheduler/scheduler_config.json`` of THUDM/CogVideoX-2b: zero-SNR v-prediction on scaled-linear
#: betas with trailing timesteps; ``snr_shift_scale`` (3.0 for 2b, 1.0 for 5b) is specific to
#: ``CogVideoXDDIMScheduler``. The tiny preset uses it; pretrained weights read their own.
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "CogVideoXDDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "trained_betas": None, "clip_sample": False, "clip_sample_range": 1.0,
    "sample_max_value": 1.0, "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True, "snr_shift_scale": 3.0, "timestep_spacing": "trailing",
}

#: The projections of every block's joint attention (peft ``target_modules`` regex).
LORA_TARGETS = [r".*transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"]


# ----------------------------------------------------------------------------------- tiny builders


def tiny_vae() -> Any:
    """A seeded tiny ``AutoencoderKLCogVideoX``: 4 levels (8x spatial, 4x temporal), 4 latent channels."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(block_out_channels=(8, 8, 16, 16), latent_channels=4, layers_per_block=1,
                                  norm_num_groups=4)


def tiny_t5() -> Any:
    """A seeded tiny ``T5EncoderModel`` (width ``TINY_TEXT_DIM``) sized for ``tiny_tokenizer("t5")``."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    vocab = len(tiny_tokenizer("t5"))
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0))


def tiny_transformer(latent_shape: tuple[int, ...], text_dim: int) -> Any:
    """A seeded tiny ``CogVideoXTransformer3DModel`` (rotary positions, as CogVideoX-5b) whose sample
    sizes are those of ``latent_shape`` (F_lat, C, h, w)."""
    from diffusers import CogVideoXTransformer3DModel

    f, c, h, w = latent_shape
    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=c, out_channels=c, time_embed_dim=16,
        text_embed_dim=text_dim, num_layers=2, sample_frames=(f - 1) * 4 + 1, sample_height=h, sample_width=w,
        max_text_seq_length=TINY_TEXT_LENGTH, use_rotary_positional_embeddings=True)


# ----------------------------------------------------------------------------------- VAE


class CogVideoXVAE(VideoEncoder):
    """f_v / the T2V latent space: CogVideoX's VAE (module docstring for layouts). Frozen; encodes to the
    posterior mean. Video needs F = 8k + 1 frames (the VAE encodes and decodes frame batches of 8 after
    the first frame) and H, W multiples of 16 (8x VAE, 2x2 transformer patches)."""

    Params = CogVideoXVAEParams

    def __init__(self, params: CogVideoXVAEParams):
        super().__init__()
        from diffusers import AutoencoderKLCogVideoX

        self.params = params
        self.vae = vae = build_vae(AutoencoderKLCogVideoX, tiny_vae, params, VAE_SETTING)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.spatial_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self.latent_dim = self.latent_channels * params.sequence_pool ** 2
        self.frame_rate = params.frame_rate

    def encode_grid(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1], F = 8k + 1 -> (B, (F - 1)/4 + 1, C, H/8, W/8) float32, scaled."""
        check_video(video, "cogvideox_vae", multiple=2 * self.spatial_factor, frames=lambda f: f % 8 == 1,
                    frames_rule="8k + 1 (9, 17, ..., 49, ...)")
        x = (video * 2 - 1).permute(0, 2, 1, 3, 4).to(self.vae.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        return (z.float() * self.scaling_factor).permute(0, 2, 1, 3, 4)

    def decode_grid(self, grid: Tensor) -> Tensor:
        """(B, F_lat, C, h, w) -> (B, 4 (F_lat - 1) + 1, 3, 8h, 8w) float32 in [0, 1]."""
        z = (grid / self.scaling_factor).permute(0, 2, 1, 3, 4).to(self.vae.device, self.vae.dtype)
        x = self.vae.decode(z).sample.float()
        return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """(B, F_lat, C, h, w) -> (B, F_lat, C * p * p), p = ``sequence_pool``."""
        return pool_latent_frames(grid, self.params.sequence_pool)

    def encode(self, video: Tensor) -> Tensor:
        return self.grid_to_sequence(self.encode_grid(video))


# ----------------------------------------------------------------------------------- T5


class T5Text(TextEncoder):
    """f_t for CogVideoX: T5 encoder outputs of prompts padded to ``max_length`` (see :class:`T5Params`).
    tokens (B, max_length, d_model) float32, mask (B, max_length), pooled (B, d_model)."""

    Params = T5Params

    def __init__(self, params: T5Params):
        super().__init__()
        from transformers import AutoTokenizer, T5EncoderModel

        self.params = params
        if params.preset == "tiny":
            self.model = cast(tiny_t5(), params.dtype)
            self.tokenizer = tiny_tokenizer("t5")
            self.max_length = params.max_length or TINY_TEXT_LENGTH
        else:
            setting = f"{TEXT_SETTING}.params.pretrained"
            root = weights_root(params.pretrained, setting, params.subfolder, params.tokenizer_subfolder)
            self.model = load_pretrained(T5EncoderModel.from_pretrained, root / params.subfolder, setting,
                                         dtype=torch_dtype(params.dtype))
            self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, _sentencepiece_ready(
                root / params.tokenizer_subfolder, setting), setting)
            self.max_length = params.max_length or TEXT_LENGTH
        self.dim = int(self.model.config.d_model)
        frozen(self)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        device = self.model.device
        batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                               add_special_tokens=True, return_tensors="pt")
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device).bool()
        tokens = self.model(input_ids=ids, attention_mask=mask.long() if self.params.mask_padding else None)
        tokens = tokens.last_hidden_state.float()
        return TextEmbedding(tokens, mask, masked_mean(tokens, mask))


def _sentencepiece_ready(folder: Path, setting: str) -> Path:
    """``folder``, after checking that a SentencePiece-only tokenizer (``spiece.model`` without
    ``tokenizer.json``, as CogVideoX ships) can be read: transformers needs the sentencepiece package."""
    if not (folder / "tokenizer.json").is_file() and importlib.util.find_spec("sentencepiece") is None:
        raise SavaError(f"{setting}: the tokenizer in {folder} is a SentencePiece model (no tokenizer.json); "
                        "reading it needs the sentencepiece package: pip install sentencepiece")
    return folder


# ----------------------------------------------------------------------------------- transformer


class CogVideoX(Backbone):
    """The T2V denoiser: ``CogVideoXTransformer3DModel`` on grids (B, F_lat, C, h, w), predicting
    ``prediction_type`` (v_prediction for the released models) under their zero-SNR schedule.

    **Extra condition tokens.** There is no cross-attention: the text tokens are projected and
    concatenated in front of the video tokens, and every block's joint attention (``attn1``) mixes
    them. The text part has a fixed length ``max_text_seq_length`` (226): CogVideoX-2b's sin-cos
    positions are laid out for exactly that many text tokens before the video ones, and the model was
    trained on T5 outputs padded to it. So Stage II's M extra tokens (B, M, D) replace the LAST M
    text positions, which are T5 padding for any prompt of at most 226 - M tokens: the sequence stays
    [prompt ; padding ; extra], the length and every video position are unchanged. Text tokens carry
    no positional encoding inside the transformer (rotary embeddings apply to video tokens only), so
    the place of the extra tokens in the text part does not matter. A position whose ``extra_mask``
    is False keeps its padding token, so a row whose mask is all False is exactly the input (and the
    output) without extra. A prompt too long to leave M padding positions is a SavaError (shorten
    the captions). Text padding is not masked: CogVideoX attends to its padding tokens, as in its
    pipeline and training; ``Condition.text_mask`` only tells where the padding is.

    **LoRA targets** are the to_q / to_k / to_v / to_out.0 projections of the joint attention. Text
    and video share them, so these are CogVideoX's conditioning layers in the paper's sense (where
    the condition tokens meet the video); they also carry video self-attention.

    CogVideoX 1.5 (``patch_size_t`` 2) packs two latent frames per patch: an odd F_lat is padded in
    front with a copy of the first noisy latent frame, whose prediction is dropped (diffusers'
    training script pads with the first latent frame; the pipeline adds a frame it discards).
    """

    Params = CogVideoXParams

    def __init__(self, params: CogVideoXParams, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        from diffusers import CogVideoXTransformer3DModel

        self.params = params
        self.latent_shape = tuple(latent_shape)
        self.condition_dim = condition_dim
        if len(self.latent_shape) != 4:
            raise SavaError(f"{VAE_SETTING}: cogvideox denoises grids (F_lat, C, h, w); the video VAE gives "
                            f"{self.latent_shape}: use cogvideox_vae")
        if params.preset == "tiny":
            self.transformer = cast(tiny_transformer(self.latent_shape, condition_dim), params.dtype)
            self.scheduler_config = dict(SCHEDULER_CONFIG)
        else:
            root = weights_root(params.pretrained, BACKBONE_SETTING, params.subfolder, params.scheduler_subfolder)
            self.transformer = load_pretrained(CogVideoXTransformer3DModel.from_pretrained, root / params.subfolder,
                                               BACKBONE_SETTING, dtype=torch_dtype(params.dtype))
            self.scheduler_config = _scheduler_config(root / params.scheduler_subfolder)
        self._check_runtime()
        self.prediction_type = self.scheduler_config["prediction_type"]
        self.lora_targets = list(LORA_TARGETS)
        if params.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()

    @property
    def text_length(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def _check_runtime(self) -> None:
        cfg = self.transformer.config
        f, c, h, w = self.latent_shape
        if c != cfg.in_channels:
            raise SavaError(f"{VAE_SETTING}: the video VAE gives {c} latent channels, this transformer takes "
                            f"{cfg.in_channels}: use cogvideox_vae from the same pipeline")
        if self.condition_dim != cfg.text_embed_dim:
            raise SavaError(f"{TEXT_SETTING}: text tokens of width {self.condition_dim}, this transformer takes "
                            f"{cfg.text_embed_dim}: use the t5 text encoder from the same pipeline")
        if h % cfg.patch_size or w % cfg.patch_size:
            raise SavaError(f"data: latent frames of {h}x{w} do not split into {cfg.patch_size}x{cfg.patch_size} "
                            "patches: use frame sizes that are multiples of 16 pixels")
        sliced = cfg.patch_size_t is not None
        if (sliced or cfg.use_learned_positional_embeddings) and (h > cfg.sample_height or w > cfg.sample_width):
            raise SavaError(f"data: latent frames of {h}x{w} exceed this checkpoint's position table "
                            f"({cfg.sample_height}x{cfg.sample_width}, i.e. {8 * cfg.sample_height}x"
                            f"{8 * cfg.sample_width} pixels): use smaller frames")
        if cfg.use_learned_positional_embeddings and (h, w) != (cfg.sample_height, cfg.sample_width):
            raise SavaError(f"data: this checkpoint has learned positions for {8 * cfg.sample_height}x"
                            f"{8 * cfg.sample_width} frames only: use that frame size")

    def _rotary(self, frames: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        """The 3D rotary embedding of the video tokens, as the CogVideoX pipeline computes it."""
        cfg = self.transformer.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        p = cfg.patch_size
        grid, base = (h // p, w // p), (cfg.sample_height // p, cfg.sample_width // p)
        if cfg.patch_size_t is None:
            crops = get_resize_crop_region_for_grid(grid, base[1], base[0])
            return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops, grid_size=grid,
                                           temporal_size=frames, device=device)
        return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=grid,
                                       temporal_size=frames // cfg.patch_size_t, grid_type="slice", max_size=base,
                                       device=device)

    def text_tokens(self, condition: Condition) -> Tensor:
        """The transformer's text input (B, max_text_seq_length, D): ``condition.text`` with the kept
        extra tokens in its last M positions (class docstring)."""
        text, length = condition.text, self.text_length
        if text.shape[1] != length:
            raise SavaError(f"{TEXT_SETTING}: {text.shape[1]} text tokens per prompt, this transformer takes "
                            f"{length}: set max_length: {length} on the t5 text encoder")
        if condition.extra is None:
            return text
        m = condition.extra.shape[1]
        keep = condition.extra_mask
        if keep is None:
            keep = torch.ones(condition.extra.shape[:2], dtype=torch.bool, device=text.device)
        if condition.text_mask is None:
            raise ValueError("cogvideox: extra condition tokens need Condition.text_mask (where the text padding is)")
        padding = (~condition.text_mask.bool()).flip(1).long().cumprod(1).sum(1)  # trailing padding per row
        if m > length:
            raise SavaError(f"cogvideox: {m} extra condition tokens do not fit in the {length} text positions: use "
                            "shorter clips (fewer latent frames)")
        short = keep.any(1) & (padding < m)
        if not short.is_meta and short.any():  # meta tensors (sava validate --build) hold no prompt lengths
            used = length - int(padding[short].min())
            raise SavaError(f"cogvideox: the {m} extra condition tokens replace the last {m} of the {length} text "
                            f"positions, which must be padding, but a prompt uses {used}: shorten captions and "
                            f"prompts to at most {length - m} T5 tokens")
        tail = torch.where(keep[..., None], condition.extra.to(text.dtype), text[:, length - m:])
        return torch.cat([text[:, : length - m], tail], dim=1)

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        """(B, F_lat, C, h, w), timestep (B,) -> prediction (B, F_lat, C, h, w) in ``noisy``'s dtype."""
        model = self.transformer
        text = self.text_tokens(condition)
        pad = (-noisy.shape[1]) % (model.config.patch_size_t or 1)
        x = torch.cat([noisy[:, :1].expand(-1, pad, -1, -1, -1), noisy], dim=1) if pad else noisy
        rotary = self._rotary(x.shape[1], x.shape[3], x.shape[4], x.device)
        out = model(x.to(model.dtype), text.to(model.dtype), timestep, image_rotary_emb=rotary, return_dict=False)[0]
        return out[:, pad:].to(noisy.dtype)


def _scheduler_config(folder: Path) -> dict[str, Any]:
    """The pipeline's ``scheduler_config.json`` (``_class_name`` kept: CogVideoXDDIMScheduler)."""
    file = folder / "scheduler_config.json"
    if not file.is_file():
        raise SavaError(f"{BACKBONE_SETTING}: {file} not found; point it at the CogVideoX pipeline's root directory")
    config = json.loads(file.read_text())
    return {k: v for k, v in config.items() if k == "_class_name" or not k.startswith("_")}
