"""CLAP (LAION, Wu et al. 2023) text and audio towers through transformers' ``ClapModel`` classes.

* ``clap_text``: prompts -> RoBERTa last hidden states (B, N, hidden) and the projected, L2-normalised
  text embedding (B, projection_dim); with ``output: pooled`` the embedding alone, as one token
  (B, 1, projection_dim): exactly what AudioLDM v1 feeds its UNet (``text_embeds``, L2-normalised,
  as ``class_labels``).
* ``clap``: audio (B, C, S) at the feature extractor's rate (48 kHz for LAION CLAP) -> mono -> windows
  of ``window_seconds`` every ``hop_seconds`` -> one L2-normalised CLAP audio embedding per window:
  (B, T_windows, projection_dim). The ``ClapFeatureExtractor`` (numpy) prepares each window as the
  checkpoint's preprocessor config says (windows shorter than the clip length are repeat-padded).
  Original laion-clap checkpoints load through the optional ``laion-clap`` package.

Tiny presets build the same classes: a one-layer RoBERTa of width 24, a two-stage HTSAT of width 16
(its Swin input is 64 x 64, so the tiny feature extractor runs at 16 kHz with a 320-sample hop:
51 frames per 1 s window), projections of width 16, and ``tiny_tokenizer("roberta")`` keeping 128 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sava_clap.params import ClapAudioParams, ClapTextParams
from sava_core.contracts import AudioEncoder, TextEmbedding, TextEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, tiny_tokenizer, torch_dtype

TEXT_SETTING = "model.audio_text_encoder.params.pretrained"
AUDIO_SETTING = "model.audio_encoder.params.pretrained"

#: Tokens the tiny presets' tokenizers keep (a media-world caption is about 100 tiny-BPE tokens).
TINY_MAX_TOKENS = 128
TINY_TEXT_CONFIG = dict(vocab_size=300, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=TINY_MAX_TOKENS + 2, projection_dim=16)
TINY_AUDIO_CONFIG = dict(spec_size=64, window_size=4, num_mel_bins=64, patch_size=4, patch_stride=(4, 4),
                         hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2],
                         projection_dim=16, enable_fusion=False)


def tiny_clap_text_model() -> Any:
    """A seeded tiny ``ClapTextModelWithProjection`` (the class AudioLDM v1 ships)."""
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    torch.manual_seed(0)
    return ClapTextModelWithProjection(ClapTextConfig(**TINY_TEXT_CONFIG))


def tiny_clap_tokenizer() -> Any:
    """The tiny presets' RoBERTa tokenizer (``tiny_tokenizer``), keeping ``TINY_MAX_TOKENS`` tokens."""
    return tiny_tokenizer("roberta", model_max_length=TINY_MAX_TOKENS)


def tiny_clap_model() -> Any:
    """A seeded tiny ``ClapModel`` (text and audio towers; the class AudioLDM2 ships)."""
    from transformers import ClapConfig, ClapModel

    torch.manual_seed(0)
    return ClapModel(ClapConfig(text_config=TINY_TEXT_CONFIG, audio_config=TINY_AUDIO_CONFIG,
                                projection_dim=TINY_TEXT_CONFIG["projection_dim"]))


def tiny_feature_extractor() -> Any:
    """A ``ClapFeatureExtractor`` whose frames fit the tiny Swin input: 16 kHz, 1 s clips, hop 320."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=320, max_length_s=1,
                                fft_window_size=512, frequency_min=0, frequency_max=8000,
                                truncation="rand_trunc", padding="repeatpad")


def model_folder(root: Path, subfolder: str | None, setting: str) -> Path:
    """``root/subfolder`` when it holds a config.json, else ``root`` itself when it does."""
    for folder in ([root / subfolder] if subfolder else []) + [root]:
        if (folder / "config.json").is_file():
            return folder
    where = f"{root}/{subfolder} or {root}" if subfolder else str(root)
    raise SavaError(f"{setting}: no config.json in {where}; point it at a pipeline directory (with {subfolder}/) "
                    "or a model directory written by save_pretrained")


def _load(what: str, setting: str, loader: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a ``from_pretrained``; a malformed directory becomes a SavaError naming the setting."""
    try:
        return loader(*args, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise SavaError(f"{setting}: cannot load the {what} from {args[0]}: {err}") from None


class ClapText(TextEncoder):
    """f_t = CLAP's text tower. prompts -> tokens (B, N, dim), mask (B, N), pooled (B, pooled_dim) =
    the projected, L2-normalised CLAP text embedding. ``dim`` is the token width (hidden size; the
    projection width with ``output: pooled``), ``pooled_dim`` the projection width."""

    Params = ClapTextParams

    def __init__(self, params: ClapTextParams):
        super().__init__()
        from transformers import AutoTokenizer, ClapModel, ClapTextModelWithProjection

        self.params = params
        if params.preset == "tiny":
            self.model = cast(tiny_clap_text_model(), params.dtype)
            self.tokenizer = tiny_clap_tokenizer()
        else:
            root = Path(locate(params.pretrained, TEXT_SETTING))
            folder = model_folder(root, params.subfolder, TEXT_SETTING)
            full = json.loads((folder / "config.json").read_text()).get("model_type") == "clap"
            cls = ClapModel if full else ClapTextModelWithProjection
            self.model = _load("CLAP text model", TEXT_SETTING, cls.from_pretrained, folder,
                               dtype=torch_dtype(params.dtype))
            tokenizer_folder = root / params.tokenizer_subfolder
            self.tokenizer = _load("CLAP tokenizer", TEXT_SETTING, AutoTokenizer.from_pretrained,
                                   tokenizer_folder if tokenizer_folder.is_dir() else folder)
        self.pooled_dim = int(self.model.text_projection.linear2.out_features)
        self.dim = self.pooled_dim if params.output == "pooled" else int(self.model.text_model.config.hidden_size)
        self.requires_grad_(False).eval()

    def encode(self, prompts: list[str]) -> TextEmbedding:
        device = self.model.text_projection.linear1.weight.device
        batch = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(device)
        out = self.model.text_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        pooled = F.normalize(self.model.text_projection(out.pooler_output), dim=-1)
        if self.params.output == "pooled":
            return TextEmbedding(pooled[:, None], torch.ones(len(prompts), 1, dtype=torch.bool, device=device), pooled)
        return TextEmbedding(out.last_hidden_state, batch.attention_mask.bool(), pooled)


class _TransformersTower(nn.Module):
    """Windows (N, W) at ``sample_rate`` -> ``ClapModel.get_audio_features`` (N, D), unit norm."""

    def __init__(self, params: ClapAudioParams):
        super().__init__()
        from transformers import ClapFeatureExtractor, ClapModel

        if params.preset == "tiny":
            self.model = cast(tiny_clap_model(), params.dtype)
            self.feature_extractor = tiny_feature_extractor()
        else:
            root = Path(locate(params.pretrained, AUDIO_SETTING))
            folder = model_folder(root, params.subfolder, AUDIO_SETTING)
            extractor = folder if (folder / "preprocessor_config.json").is_file() else root / "feature_extractor"
            self.model = _load("ClapModel", AUDIO_SETTING, ClapModel.from_pretrained, folder,
                               dtype=torch_dtype(params.dtype))
            self.feature_extractor = _load("CLAP feature extractor", AUDIO_SETTING,
                                           ClapFeatureExtractor.from_pretrained, extractor)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.max_seconds = float(self.feature_extractor.max_length_s)
        self.dim = int(self.model.config.projection_dim)

    def forward(self, windows: Tensor) -> Tensor:
        param = self.model.audio_projection.linear1.weight
        inputs = self.feature_extractor([w.numpy() for w in windows.float().cpu()], sampling_rate=self.sample_rate,
                                        return_tensors="pt")
        features = self.model.get_audio_features(input_features=inputs.input_features.to(param),
                                                 is_longer=inputs.is_longer.to(param.device))
        return features.pooler_output


class _LaionTower(nn.Module):
    """The audio branch and projection of an original laion-clap checkpoint (``laion_clap``'s
    ``CLAP_Module.load_ckpt`` + ``get_audio_embedding_from_data`` without the text branch, whose
    construction would download roberta-base). Windows (N, W) at 48 kHz -> (N, 512), unit norm."""

    def __init__(self, params: ClapAudioParams):
        super().__init__()
        try:
            from laion_clap.clap_module.factory import _MODEL_CONFIGS
            from laion_clap.clap_module.htsat import create_htsat_model
            from laion_clap.clap_module.model import CLAPAudioCfp
        except ImportError:
            raise SavaError('model.audio_encoder.params.checkpoint_format: laion needs the optional laion-clap '
                            'package; pip install "sava[laion-clap]" (it needs numpy<2), or use a transformers '
                            "ClapModel directory with checkpoint_format: transformers") from None
        path = Path(params.pretrained).expanduser()
        if not path.is_file():
            raise SavaError(f"{AUDIO_SETTING}: {path} is not a file; with checkpoint_format laion point it at a "
                            "laion-clap checkpoint (.pt or .ckpt, e.g. 630k-audioset-best.pt)")
        if params.laion_audio_model not in _MODEL_CONFIGS:
            raise SavaError(f"model.audio_encoder.params.laion_audio_model: unknown {params.laion_audio_model!r}; "
                            f"laion-clap knows {', '.join(sorted(_MODEL_CONFIGS))}")
        config = _MODEL_CONFIGS[params.laion_audio_model]
        self.audio_cfg = dict(config["audio_cfg"])
        fusion = "aff_2d" if params.laion_fusion else "None"
        self.audio_branch = create_htsat_model(CLAPAudioCfp(**self.audio_cfg), params.laion_fusion, fusion)
        joint = 512  # laion-clap's joint_embed_shape
        self.audio_projection = nn.Sequential(nn.Linear(config["embed_dim"], joint), nn.ReLU(), nn.Linear(joint, joint))
        self.load_state_dict(_laion_audio_state(path), strict=True)
        self.to(torch_dtype(params.dtype))
        self.truncation = "fusion" if params.laion_fusion else "rand_trunc"
        self.sample_rate = int(self.audio_cfg["sample_rate"])
        self.max_seconds = self.audio_cfg["clip_samples"] / self.sample_rate
        self.dim = joint

    def forward(self, windows: Tensor) -> Tensor:
        from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

        device = self.audio_projection[0].weight.device
        items = []
        for w in windows.float().cpu().numpy():
            wave = torch.from_numpy(int16_to_float32(float32_to_int16(w))).float()
            items.append(get_audio_features({}, wave, self.audio_cfg["clip_samples"], data_truncating=self.truncation,
                                            data_filling="repeatpad", audio_cfg=self.audio_cfg))
        batch = {k: torch.stack([item[k] for item in items]).to(device) for k in items[0]}
        return F.normalize(
            self.audio_projection(self.audio_branch(batch, mixup_lambda=None, device=device)["embedding"]), dim=-1)


def _laion_audio_state(path: Path) -> dict[str, Tensor]:
    """The ``audio_branch.*`` and ``audio_projection.*`` tensors of a laion-clap checkpoint, loaded with
    ``torch.load(weights_only=True)`` (``module.`` prefixes of DDP checkpoints removed)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling refusal ends with the same advice
        raise SavaError(f"{AUDIO_SETTING}: {path} cannot be read with torch.load(weights_only=True) "
                        f"({type(err).__name__}); if you trust the file, re-save its tensors: "
                        "torch.save(torch.load(path, weights_only=False)['state_dict'], new_path)") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.startswith(("audio_branch.", "audio_projection."))}


class ClapAudio(AudioEncoder):
    """f_a = CLAP audio embeddings per window (an analysis encoder: no grid, no decoder).
    audio (B, C, S) in [-1, 1] at ``sample_rate`` -> (B, T, latent_dim) with
    T = 1 + (S - window) // hop windows (one window covering the clip when it is shorter)."""

    Params = ClapAudioParams

    def __init__(self, params: ClapAudioParams):
        super().__init__()
        self.params = params
        self.tower = _LaionTower(params) if params.checkpoint_format == "laion" else _TransformersTower(params)
        self.sample_rate = self.tower.sample_rate
        self.latent_dim = self.tower.dim
        if params.window_seconds > self.tower.max_seconds + 1e-9:
            raise SavaError(f"model.audio_encoder.params.window_seconds: {params.window_seconds} s is longer than "
                            f"the model's {self.tower.max_seconds:g} s clips (longer windows are cropped at random); "
                            "use a shorter window")
        self.window = round(params.window_seconds * self.sample_rate)
        self.hop = round(params.hop_seconds * self.sample_rate)
        self.requires_grad_(False).eval()

    def encode(self, audio: Tensor) -> Tensor:
        mono = audio.mean(1)
        if mono.shape[-1] <= self.window:
            windows = mono[:, None]
        else:
            windows = mono.unfold(-1, self.window, self.hop)
        b, t = windows.shape[:2]
        flat = windows.reshape(b * t, -1)
        size = self.params.window_batch_size
        chunks = [self.tower(flat[i : i + size]) for i in range(0, len(flat), size)]
        return torch.cat(chunks).float().reshape(b, t, -1).to(audio.device)
