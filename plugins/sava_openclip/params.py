"""Parameters of the OpenCLIP components (torch-free)."""

from __future__ import annotations

from pydantic import Field

from sava_core.config import WeightsParams


class OpenCLIPParams(WeightsParams):
    """An OpenCLIP model. ``pretrained``: a local directory holding ``open_clip_config.json`` and the
    weights (what ``hf-hub:`` repositories hold; loaded with ``create_model("local-dir:...")``), a
    single checkpoint file (then ``architecture`` names its open_clip config), or a hub id (``org/repo``
    or ``hf-hub:org/repo``; fetched once into the hub cache). ``preset: tiny`` builds
    ``open_clip.CLIP`` from a small config (32-pixel images, width 32, embeddings of 16)."""

    architecture: str | None = Field(
        None, description="open_clip model name (e.g. ViT-B-32) of a single checkpoint file given as `pretrained`; "
        "not used with a directory or hub id (their open_clip_config.json says it)")


class OpenCLIPVideoParams(OpenCLIPParams):
    """Frame-level CLIP image embeddings: video (B, F, 3, H, W) -> (B, F, embed_dim). An analysis encoder
    for Stage I (no latent grid, no decoder). Frames are prepared as the model's preprocess config says,
    with torch ops on the tensor: resize the shortest side to the model's image size (bicubic, or
    bilinear if the config says so, with antialiasing, clamped to [0, 1]), center crop, normalise
    with the config's mean and std."""

    frame_rate: float = Field(8.0, gt=0, description="frames per second of the clips (the dataset's fps must match); "
                              "every frame is embedded, one latent step per frame")
    normalize: bool = Field(True, description="L2-normalise each frame embedding (as CLIP similarity does)")
    frame_batch_size: int = Field(64, ge=1, description="frames embedded per forward pass (memory)")


class OpenCLIPTextParams(OpenCLIPParams):
    """CLIP text features: tokens = the text transformer's per-token outputs (after the final layer norm)
    mapped by the text projection, (B, context_length, embed_dim); mask True up to the end-of-text
    token; pooled = the text embedding (``encode_text``: the projected end-of-text token)."""
