"""OpenCLIP (Cherti et al. 2023; Radford et al. 2021) as SAVA analysis encoders: frame-level CLIP image
embeddings of videos (``openclip``) and CLIP text features (``openclip_text``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sava_cogvideox.shared import frozen
from sava_core.contracts import TextEmbedding, TextEncoder, VideoEncoder
from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate
from sava_openclip.params import OpenCLIPParams, OpenCLIPTextParams, OpenCLIPVideoParams

VIDEO_SETTING = "model.video_encoder.params.pretrained"
TEXT_SETTING = "model.text_encoder.params.pretrained"

#: ``open_clip.CLIP(**TINY_CONFIG)``: a ViT on 32-pixel images and a text transformer over the real
#: CLIP BPE (49408 tokens, 16 positions), embeddings of 16.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def load_model(params: OpenCLIPParams, setting: str) -> Any:
    """The OpenCLIP model of ``params`` (see :class:`OpenCLIPParams`)."""
    import open_clip

    if params.preset == "tiny":
        torch.manual_seed(0)
        return open_clip.CLIP(**TINY_CONFIG)
    path = Path(locate(params.pretrained.removeprefix("hf-hub:"), setting))
    if path.is_file():
        if params.architecture is None:
            raise SavaError(f"{setting}: {path} is a single checkpoint file; set `architecture` to its open_clip "
                            "model name (e.g. ViT-B-32), or point pretrained at a directory with open_clip_config.json")
        name, kwargs = params.architecture, {"pretrained": str(path)}
    else:
        if not (path / "open_clip_config.json").is_file():
            raise SavaError(f"{setting}: {path} has no open_clip_config.json; point it at an OpenCLIP model directory "
                            "(as on the hub), or at a checkpoint file together with `architecture`")
        if not any(any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            raise SavaError(f"{setting}: {path} has no weights (*.safetensors, *.bin or *.pth)")
        name, kwargs = f"local-dir:{path}", {}
    try:
        return open_clip.create_model(name, **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError, AssertionError) as err:  # open_clip checks with assert
        raise SavaError(f"{setting}: cannot load an OpenCLIP model from {path}: {err}") from None


class OpenCLIPVideo(VideoEncoder):
    """f_v = frame-level CLIP image embeddings: video (B, F, 3, H, W) in [0, 1] -> (B, F, embed_dim)
    float32 (see :class:`OpenCLIPVideoParams` for the frame preparation). No latent grid: it cannot
    serve a backbone."""

    Params = OpenCLIPVideoParams

    def __init__(self, params: OpenCLIPVideoParams):
        super().__init__()
        from open_clip.transform import PreprocessCfg

        self.params = params
        self.model = frozen(cast(load_model(params, VIDEO_SETTING), params.dtype))
        visual = self.model.visual
        config = {**vars(PreprocessCfg(size=visual.image_size)), **getattr(visual, "preprocess_cfg", {})}
        size = config["size"]
        if not isinstance(size, int) and size[0] != size[1]:
            raise SavaError(f"{VIDEO_SETTING}: non-square image size {tuple(size)} is not supported")
        self.image_size = size if isinstance(size, int) else int(size[0])
        if config["resize_mode"] != "shortest":
            raise SavaError(f"{VIDEO_SETTING}: the model's resize_mode {config['resize_mode']!r} is not supported "
                            "(only 'shortest': resize the short side, center crop)")
        self.interpolation = "bilinear" if config["interpolation"] == "bilinear" else "bicubic"
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)
        self.latent_dim = int(visual.output_dim)
        self.frame_rate = params.frame_rate

    def preprocess(self, frames: Tensor) -> Tensor:
        """Frames (N, 3, H, W) in [0, 1] -> the model's input (N, 3, S, S): shortest side resized to S
        (antialiased, clamped to [0, 1] as an 8-bit image would be), center crop, mean/std normalised."""
        h, w = frames.shape[-2:]
        s = self.image_size
        size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)  # torchvision's Resize(s)
        x = F.interpolate(frames, size=size, mode=self.interpolation, align_corners=False, antialias=True).clamp(0, 1)
        top, left = round((size[0] - s) / 2), round((size[1] - s) / 2)  # torchvision's CenterCrop(s)
        x = x[..., top : top + s, left : left + s]
        return (x - self.mean) / self.std

    def encode(self, video: Tensor) -> Tensor:
        """(B, F, 3, H, W) in [0, 1] -> (B, F, embed_dim) float32."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise SavaError(f"openclip: expects video (B, F, 3, H, W), got shape {tuple(video.shape)}")
        b, f = video.shape[:2]
        frames = video.flatten(0, 1).to(self.mean.device)
        dtype = next(self.model.parameters()).dtype
        step = self.params.frame_batch_size
        out = [self.model.encode_image(self.preprocess(frames[i : i + step].float()).to(dtype),
                                       normalize=self.params.normalize).float()
               for i in range(0, len(frames), step)]
        return torch.cat(out).reshape(b, f, -1)


class OpenCLIPText(TextEncoder):
    """f_t = CLIP text features (see :class:`OpenCLIPTextParams`): tokens (B, context_length, embed_dim),
    mask (B, context_length), pooled (B, embed_dim) = ``encode_text``. Models with open_clip's own text
    tower (class ``open_clip.CLIP``, pooled at the end-of-text token) and the OpenAI CLIP BPE vocabulary
    (49408 tokens, open_clip's ``SimpleTokenizer``, which ships with open_clip: nothing is fetched) only."""

    Params = OpenCLIPTextParams

    def __init__(self, params: OpenCLIPTextParams):
        super().__init__()
        import open_clip

        self.params = params
        model = load_model(params, TEXT_SETTING)
        if type(model) is not open_clip.CLIP or model.text_pool_type != "argmax" or model.vocab_size != 49408:
            raise SavaError(f"{TEXT_SETTING}: openclip_text needs open_clip's built-in text tower over the CLIP BPE, "
                            "pooled at the end-of-text token (class CLIP); "
                            f"this checkpoint is a {type(model).__name__}")
        self.tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
        self.model = frozen(cast(model, params.dtype))
        self.dim = int(model.visual.output_dim)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        from open_clip.transformer import text_global_pool

        m = self.model
        ids = self.tokenizer(list(prompts)).to(m.positional_embedding.device)
        x = m.token_embedding(ids).to(m.transformer.get_cast_dtype()) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        proj = m.text_projection
        tokens = (proj(x) if isinstance(proj, nn.Linear) else x @ proj).float()
        end = ids.argmax(dim=-1)  # the end-of-text token has the highest id
        mask = torch.arange(ids.shape[1], device=ids.device)[None] <= end[:, None]
        return TextEmbedding(tokens, mask, text_global_pool(tokens, ids, m.text_pool_type))
