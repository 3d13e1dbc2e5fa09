"""What the video plug-ins share (``sava_cogvideox``, ``sava_animatediff``, ``sava_openclip`` import it):
loading weights with clear errors, the pooled latent sequence of video VAEs, frozen modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from sava_core.errors import SavaError
from sava_core.pretrained import cast, locate, torch_dtype


def weights_root(pretrained: str, setting: str, *subfolders: str) -> Path:
    """The local directory of ``pretrained`` (a hub id or a path), checked to contain ``subfolders``."""
    root = Path(locate(pretrained, setting))
    for sub in subfolders:
        if not (root / sub).is_dir():
            raise SavaError(f"{setting}: {root} has no {sub}/ folder; point it at the pipeline's root directory "
                            f"(the one with model_index.json), or change the matching subfolder parameter")
    return root


def load_pretrained(loader: Callable[..., Any], folder: Path, setting: str, **kwargs: Any) -> Any:
    """``loader(folder, **kwargs)`` (a ``from_pretrained``); a malformed folder becomes a SavaError."""
    try:
        return loader(folder, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SavaError(f"{setting}: cannot load weights from {folder}: {err}") from None


def build_vae(vae_class: Any, tiny: Callable[[], nn.Module], params: Any, setting: str) -> nn.Module:
    """A frozen diffusers VAE: ``tiny()`` for the tiny preset, else ``vae_class`` from
    ``params.pretrained`` / ``params.subfolder``; in ``params.dtype``, with slicing / tiling as asked."""
    if params.preset == "tiny":
        vae = cast(tiny(), params.dtype)
    else:
        root = weights_root(params.pretrained, setting, params.subfolder)
        vae = load_pretrained(vae_class.from_pretrained, root / params.subfolder, setting,
                              dtype=torch_dtype(params.dtype))
    if params.enable_slicing:
        vae.enable_slicing()
    if params.enable_tiling:
        vae.enable_tiling()
    return frozen(vae)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` without gradients, in eval mode (encoders are frozen)."""
    return module.requires_grad_(False).eval()


def pool_latent_frames(grid: Tensor, cells: int) -> Tensor:
    """Latent grid (B, F, C, h, w) -> sequence (B, F, C * cells * cells): each latent frame averaged
    over a ``cells`` x ``cells`` spatial partition (adaptive average pooling), channels first."""
    b, f = grid.shape[:2]
    pooled = F.adaptive_avg_pool2d(grid.flatten(0, 1), cells)
    return pooled.reshape(b, f, -1)


def check_video(video: Tensor, setting: str, *, multiple: int, frames: Callable[[int], bool], frames_rule: str) -> None:
    """Raise a SavaError unless ``video`` is (B, F, 3, H, W) with H, W multiples of ``multiple`` and
    ``frames(F)`` true (``frames_rule`` says which counts are accepted, e.g. "8k + 1")."""
    if video.dim() != 5 or video.shape[2] != 3:
        raise SavaError(f"{setting}: expects video (B, F, 3, H, W), got shape {tuple(video.shape)}")
    f, h, w = video.shape[1], video.shape[3], video.shape[4]
    if h % multiple or w % multiple:
        raise SavaError(f"{setting}: frames of {h}x{w} pixels; height and width must be multiples of {multiple}: "
                        "change the dataset's frame size (data.params height / width)")
    if not frames(f):
        raise SavaError(f"{setting}: clips of {f} frames; this model needs {frames_rule} frames: change the dataset's "
                        "duration or fps (or the segment length)")
