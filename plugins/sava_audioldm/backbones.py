"""AudioLDM (v1) and AudioLDM2 denoisers as SAVA backbones.

Both denoise the ``audioldm_vae`` grid (B, C, T / r, n_mels / r) (the pipelines' latents
(B, C, height / r, model_in_dim / r)), predict epsilon, and use AudioLDM's DDIM schedule
(scaled_linear betas 0.0015 -> 0.0195, 1000 steps; the pipeline directory's
``scheduler/scheduler_config.json`` when there is one).

``audioldm`` (v1): a ``UNet2DConditionModel`` whose only text input is the pooled, L2-normalised
CLAP text embedding, passed as ``class_labels`` through a ``simple_projection`` class embedding
concatenated with the time embedding (the paper's FiLM path; the ``attn2`` layers see no text).
``Condition.text`` is that embedding as one token (B, 1, D) (``clap_text`` with ``output: pooled``).
Stage II's extra tokens (B, M, D) take the same path: their masked mean (B, D) (zeros for a row
whose mask is all False) is concatenated to the CLAP vector, and the class-embedding projection is
widened with zero-initialised input columns, so the pretrained model's output is unchanged until
training moves them. These columns are frozen base weights: LoRA on the class-embedding projection
(whose A matrix spans the new columns) and on the FiLM consumers (every resnet's ``time_emb_proj``)
adapts the conditioning.

``audioldm2``: an ``AudioLDM2UNet2DConditionModel`` with two cross-attention streams, conditioned
on ``audioldm2_text``'s packed tokens: the first ``GENERATED_TOKENS`` (8) tokens, channels
[0, d_gpt2), feed the GPT-2 stream (``encoder_hidden_states``), the rest, channels [0, d_t5), the
T5 stream (``encoder_hidden_states_1``, with the text mask). Extra tokens (channels [0, d_gpt2)) are
appended to the GPT-2 stream with an attention mask. LoRA adapts the cross-attention projections of
both streams (not the ``attn2`` of the self-attention-only transformers the UNet also has).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sava_audioldm.params import AudioLDM2Params, AudioLDMParams
from sava_audioldm.text import GENERATED_TOKENS, TINY_GPT2_DIM, TINY_T5_DIM
from sava_core.components.embeddings import masked_mean
from sava_core.contracts import Backbone, Condition
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, torch_dtype

SETTING = "model.audio_backbone.params.pretrained"

#: AudioLDM's schedule (diffusers' conversion scripts for AudioLDM and AudioLDM2).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
    "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "prediction_type": "epsilon",
}
_TINY_BLOCKS = dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, norm_num_groups=8,
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))


def tiny_audioldm_unet(channels: int, clap_dim: int) -> Any:
    """A seeded tiny AudioLDM v1 UNet: FiLM class embedding from ``clap_dim``, self-attention only."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(in_channels=channels, out_channels=channels, cross_attention_dim=(32, 64),
                                class_embed_type="simple_projection", projection_class_embeddings_input_dim=clap_dim,
                                class_embeddings_concat=True, **_TINY_BLOCKS)


def tiny_audioldm2_unet(channels: int) -> Any:
    """A seeded tiny AudioLDM2 UNet: per attention layer a self-attention transformer, a GPT-2 and a T5
    cross-attention transformer, as in the released model ([None, 768, 1024] there)."""
    from diffusers import AudioLDM2UNet2DConditionModel

    torch.manual_seed(0)
    dims = [None, TINY_GPT2_DIM, TINY_T5_DIM]
    return AudioLDM2UNet2DConditionModel(in_channels=channels, out_channels=channels, cross_attention_dim=(dims, dims),
                                         **_TINY_BLOCKS)


def _load_unet(cls: Any, params: AudioLDMParams | AudioLDM2Params) -> tuple[Any, Path]:
    root = Path(locate(params.pretrained, SETTING, must_contain=params.subfolder))
    try:
        return cls.from_pretrained(root / params.subfolder, dtype=torch_dtype(params.dtype)), root
    except (OSError, ValueError, TypeError) as err:
        raise SavaError(f"{SETTING}: cannot load a {cls.__name__} from {root / params.subfolder}: {err}") from None


def _scheduler_config(root: Path | None) -> dict[str, Any]:
    """The pipeline's scheduler config (private ``_`` keys dropped), else AudioLDM's."""
    file = root / "scheduler" / "scheduler_config.json" if root is not None else None
    if file is None or not file.is_file():
        return dict(SCHEDULER_CONFIG)
    return {k: v for k, v in json.loads(file.read_text()).items() if not k.startswith("_")}


def _check_latents(latent_shape: tuple[int, ...], in_channels: int, root: Path | None) -> None:
    """The grid must be (C, T, W) with the UNet's C and, when the pipeline's VAE and vocoder configs are
    there, W = mel bins / r."""
    if len(latent_shape) != 3 or latent_shape[0] != in_channels:
        raise SavaError(f"model.audio_vae: the audio backbone denoises grids (C={in_channels}, T, W); the encoder "
                        f"gives {tuple(latent_shape)}; use audioldm_vae from the same pipeline directory")
    if root is None or not (root / "vae" / "config.json").is_file() or not (root / "vocoder" / "config.json").is_file():
        return
    vae = json.loads((root / "vae" / "config.json").read_text())
    mels = json.loads((root / "vocoder" / "config.json").read_text())["model_in_dim"]
    width = mels // 2 ** (len(vae["block_out_channels"]) - 1)
    if latent_shape[2] != width:
        raise SavaError(f"model.audio_vae: grid width {latent_shape[2]} != {width} ({mels} mel bins / VAE factor) "
                        "of the backbone's pipeline; use audioldm_vae with the same pretrained directory")


class AudioLDM(Backbone):
    """eps_theta = AudioLDM v1's UNet; FiLM conditioning on [CLAP ; pooled extra] (module docstring).
    Runtime: ``latent_shape`` (C, T/r, n_mels/r), ``condition_dim`` = the CLAP projection width."""

    Params = AudioLDMParams

    def __init__(self, params: AudioLDMParams, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        self.params = params
        self.latent_shape, self.condition_dim = tuple(latent_shape), condition_dim
        if params.preset == "tiny":
            unet, root = cast(tiny_audioldm_unet(latent_shape[0], condition_dim), params.dtype), None
        else:
            from diffusers import UNet2DConditionModel

            unet, root = _load_unet(UNet2DConditionModel, params)
            if unet.config.class_embed_type != "simple_projection":
                raise SavaError(f"{SETTING}: {root} is not an AudioLDM v1 UNet (no simple_projection class "
                                "embedding); for AudioLDM2 use backbone audioldm2")
            clap_dim = unet.config.projection_class_embeddings_input_dim
            if condition_dim != clap_dim:
                raise SavaError(f"model.audio_text_encoder: the audioldm backbone is conditioned on a {clap_dim}-d "
                                f"CLAP text embedding, the text encoder gives {condition_dim}-d tokens; use clap_text "
                                "with output: pooled and the same pretrained directory")
        _check_latents(self.latent_shape, unet.config.in_channels, root)
        self.unet = unet
        self._widen_class_embedding(condition_dim)
        if params.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.scheduler_config = _scheduler_config(root)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.lora_targets = [r".*unet\.class_embedding", r".*resnets\.\d+\.time_emb_proj"]

    def _widen_class_embedding(self, extra_dim: int) -> None:
        """class_embedding Linear(clap, E) -> Linear(clap + extra_dim, E), new input columns zero."""
        old: nn.Linear = self.unet.class_embedding
        wide = nn.Linear(old.in_features + extra_dim, old.out_features, device=old.weight.device,
                         dtype=old.weight.dtype)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : old.in_features] = old.weight
            wide.bias.copy_(old.bias)
        self.unet.class_embedding = wide

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        text = condition.text
        if text.shape[1] != 1:
            raise SavaError("model.audio_text_encoder: the audioldm backbone takes the pooled CLAP embedding as one "
                            f"token, got {text.shape[1]} tokens; set the text encoder's output: pooled")
        dtype = self.unet.dtype
        film = (torch.zeros_like(text[:, 0]) if condition.extra is None
                else masked_mean(condition.extra, condition.extra_mask))
        labels = torch.cat([text[:, 0], film], dim=-1).to(dtype)
        return self.unet(noisy.to(dtype), timestep, encoder_hidden_states=None, class_labels=labels).sample


def _stream_widths(cross_attention_dim: Any) -> tuple[int, int | None]:
    """(GPT-2 stream width, T5 stream width or None) from an AudioLDM2 UNet's ``cross_attention_dim``:
    per block, entries 0-1 read ``encoder_hidden_states``, entries 2+ ``encoder_hidden_states_1``."""
    blocks = cross_attention_dim if isinstance(cross_attention_dim, (list, tuple)) else [cross_attention_dim]
    first: set[int] = set()
    second: set[int] = set()
    for block in blocks:
        for index, width in enumerate(block if isinstance(block, (list, tuple)) else [block]):
            if width is not None:
                (first if index <= 1 else second).add(int(width))
    if len(first) != 1 or len(second) > 1:
        raise SavaError(f"{SETTING}: unsupported AudioLDM2 UNet cross_attention_dim {cross_attention_dim}: need one "
                        "width per conditioning stream")
    return first.pop(), (second.pop() if second else None)


class AudioLDM2(Backbone):
    """eps_theta = AudioLDM2's UNet over the two streams of ``audioldm2_text``'s packed tokens
    (module docstring). Runtime: ``latent_shape`` (C, T/r, n_mels/r), ``condition_dim`` = the packed
    width max(d_gpt2, d_t5)."""

    Params = AudioLDM2Params

    def __init__(self, params: AudioLDM2Params, *, latent_shape: tuple[int, ...], condition_dim: int):
        super().__init__()
        self.params = params
        self.latent_shape, self.condition_dim = tuple(latent_shape), condition_dim
        if params.preset == "tiny":
            unet, root = cast(tiny_audioldm2_unet(latent_shape[0]), params.dtype), None
        else:
            from diffusers import AudioLDM2UNet2DConditionModel

            unet, root = _load_unet(AudioLDM2UNet2DConditionModel, params)
        self.gpt2_dim, self.t5_dim = _stream_widths(unet.config.cross_attention_dim)
        packed = max(self.gpt2_dim, self.t5_dim or 0)
        if condition_dim != packed:
            raise SavaError(f"model.audio_text_encoder: the audioldm2 backbone needs audioldm2_text's packed tokens of "
                            f"width {packed} (GPT-2 {self.gpt2_dim}, T5 {self.t5_dim}), got {condition_dim}; use "
                            "audioldm2_text with the same pretrained directory (or preset)")
        _check_latents(self.latent_shape, unet.config.in_channels, root)
        self.unet = unet
        if params.gradient_checkpointing:
            self._checkpoint_inside_blocks()
        self.scheduler_config = _scheduler_config(root)
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.lora_targets = [self._cross_attention_targets()]

    def _checkpoint_inside_blocks(self) -> None:
        """Gradient checkpointing in the transformers and plain blocks only: when AudioLDM2's own
        cross-attention blocks checkpoint, they pass the text masks in the self-attention mask's place
        (diffusers 0.42; see huggingface/diffusers#13602), which fails for any masked text."""
        from diffusers.pipelines.audioldm2 import modeling_audioldm2 as upstream

        self.unet.enable_gradient_checkpointing()
        for module in self.unet.modules():
            if isinstance(module, (upstream.CrossAttnDownBlock2D, upstream.UNetMidBlock2DCrossAttn,
                                   upstream.CrossAttnUpBlock2D)):
                module.gradient_checkpointing = False

    def _cross_attention_targets(self) -> str:
        r"""One regex for to_q/to_k/to_v/to_out.0 of the ``attn2`` layers that attend to a text stream,
        e.g. ``.*unet\.(down_blocks\.1\.attentions\.(1|2)|...)\.transformer_blocks\.\d+\.attn2\.(to_q|...)``."""
        from diffusers.models.attention_processor import Attention

        groups: dict[str, set[int]] = {}
        for name, module in self.unet.named_modules():
            found = re.fullmatch(r"(.+\.attentions)\.(\d+)\.transformer_blocks\.\d+\.attn2", name)
            if found and isinstance(module, Attention) and module.is_cross_attention:
                groups.setdefault(found[1], set()).add(int(found[2]))
        layers = "|".join(rf"{re.escape(k)}\.({'|'.join(map(str, sorted(v)))})" for k, v in groups.items())
        return rf".*unet\.({layers})\.transformer_blocks\.\d+\.attn2\.(to_q|to_k|to_v|to_out\.0)"

    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor:
        text, mask, n = condition.text, condition.text_mask, GENERATED_TOKENS
        if text.shape[1] <= n:
            raise SavaError(f"model.audio_text_encoder: the audioldm2 backbone needs {n} GPT-2 tokens followed by T5 "
                            f"tokens, got {text.shape[1]} tokens; use the audioldm2_text encoder")
        dtype = self.unet.dtype
        generated = text[:, :n, : self.gpt2_dim]
        t5 = text[:, n:, : self.t5_dim] if self.t5_dim else None
        generated_mask = None
        if condition.extra is not None:
            b, m = condition.extra.shape[:2]
            ones = torch.ones(b, n, dtype=torch.bool, device=text.device)
            extra_mask = condition.extra_mask if condition.extra_mask is not None else ones.new_ones(b, m)
            generated_mask = torch.cat([ones if mask is None else mask[:, :n].bool(), extra_mask.bool()], dim=1)
            generated = torch.cat([generated, condition.extra[..., : self.gpt2_dim]], dim=1)
        return self.unet(noisy.to(dtype), timestep, encoder_hidden_states=generated.to(dtype),
                         encoder_hidden_states_1=None if t5 is None else t5.to(dtype),
                         encoder_attention_mask=generated_mask,
                         encoder_attention_mask_1=None if mask is None or t5 is None else mask[:, n:]).sample
