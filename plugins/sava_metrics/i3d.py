"""Inception-I3D (Carreira & Zisserman, 2017; Kinetics-400) for FVD (Unterthiner et al., 2018).

Architecture and state-dict keys match ``piergiaj/pytorch-i3d`` (``pytorch_i3d.py: InceptionI3d``,
the TF-Hub/DeepMind model ported with TF "SAME" padding): ``Conv3d_1a_7x7``, ``Conv3d_2b_1x1``,
``Conv3d_2c_3x3``, ``Mixed_3b`` ... ``Mixed_5c`` (branches ``b0``, ``b1a``, ``b1b``, ``b2a``, ``b2b``,
``b3b``, each ``conv3d`` + ``bn`` with eps 1e-3) and ``logits.conv3d`` (1024 -> 400, with bias).
Published files with these keys: ``rgb_imagenet.pt`` (piergiaj) and ``i3d_pretrained_400.pt``
(VideoGPT / common FVD code). StyleGAN-V's ``i3d_torchscript.pt`` is a TorchScript archive, which
the weights-only loader refuses; :func:`convert_torchscript` turns it into a safetensors file once
(its tensors placed on this architecture and checked by running both networks; docs/metrics.md).

FVD features: the 400 logits, averaged over the remaining time steps, of ``frames`` frames resized
bilinearly to ``size`` x ``size`` without crop and scaled to [-1, 1] (the StyleGAN-V protocol's
preparation). The final average pool is [2, 7, 7] as published; inputs smaller than 16 x 224 x 224
pool over what is left, which is identical at the published size.

``preprocessing: javisbench`` prepares frames as JavisBench's FVD does (github.com/JavisDiT/JavisDiT
@ 6af1a7a, ``eval/javisbench/src/dataset.py`` ``FVDFADDataset``, ``utils.py`` ``ResizeAndPad``,
``fvd/fvd.py`` ``preprocess``): ``frames`` frames at ``linspace(0, n - 1, frames).round()`` over the
clip's n frames, the long side resized to ``size`` (torchvision ``Resize``, bilinear, antialiased;
the short side int(size x short / long)) and centred on black to ``size`` x ``size``, then
JavisBench's ``((x + 1) * 127.5).clamp(0, 255).to(uint8)``, ``/ 255 - 0.5``, ``* 2``: frames that
ToTensor already put in [0, 1] reach I3D in [0, 1] (about x), not [-1, 1]. Kept as JavisBench
computes it, since its published FVDs are made so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sava_core.clips import ClipRequest, MediaItem
from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_core.io import atomic_path
from sava_metrics.common import (
    MediaExtractor,
    build_model,
    load_into,
    load_state_dict_file,
    requested_frames,
    resize_frames,
    verify_checkpoint,
)
from sava_metrics.params import I3DParams

PUBLISHED = "Inception-I3D Kinetics-400 RGB (piergiaj rgb_imagenet.pt or i3d_pretrained_400.pt)"


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) of one axis."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad3d(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad3d(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d with TF SAME padding, then BatchNorm (eps 1e-3) and ReLU (or a biased conv alone)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad3d(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class InceptionModule(nn.Module):
    def __init__(self, cin: int, out: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(cin, out[0])
        self.b1a = Unit3D(cin, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(cin, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_POOL_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
                "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


class InceptionI3d(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] -> logits (B, classes) averaged over time.

    ``divisor`` divides every channel width (1 = published; larger for the tiny preset).
    """

    def __init__(self, classes: int = 400, divisor: int = 1):
        super().__init__()

        def w(c: int) -> int:
            return max(1, c // divisor)

        self.Conv3d_1a_7x7 = Unit3D(3, w(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(w(64), w(64))
        self.Conv3d_2c_3x3 = Unit3D(w(64), w(192), (3, 3, 3))
        c = w(192)
        self.order: list[str] = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
        for name, out in _MIXED.items():
            if name in _POOL_BEFORE:
                pool = "MaxPool3d_" + {"Mixed_3b": "3a_3x3", "Mixed_4b": "4a_3x3", "Mixed_5b": "5a_2x2"}[name]
                setattr(self, pool, MaxPool3dSame(*_POOL_BEFORE[name]))
                self.order.append(pool)
            module = InceptionModule(c, tuple(w(o) for o in out))
            setattr(self, name, module)
            self.order.append(name)
            c = module.out_channels
        self.logits = Unit3D(c, classes, logits=True)

    def forward(self, x: Tensor) -> Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        t, h, wd = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, wd)), stride=1)
        return self.logits(x).mean((2, 3, 4))


class I3D(MediaExtractor):
    """I3D logits for FVD: frames (B, F, 3, size, size) in [0, 1] -> (B, 400)."""

    Params = I3DParams
    name: ClassVar[str] = "i3d"
    modality = "video"

    def __init__(self, params: I3DParams):
        super().__init__()
        if params.preprocessing == "javisbench" and (params.fps is not None or params.frame_stride != 1):
            raise SavaError("extractor i3d: preprocessing=javisbench spreads `frames` over the whole clip; "
                            "leave fps and frame_stride unset")
        self.params = params
        self.fps = params.fps
        self.checkpoint_sha256: str | None = None
        if params.preset == "tiny":
            self.net = build_model("tiny", params.seed, lambda: InceptionI3d(400, divisor=16))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED)
            self.net = build_model("published", 0, InceptionI3d)
            load_into(self.net, load_state_dict_file(path), self.name, path, PUBLISHED)

    def reads(self) -> ClipRequest:
        p = self.params
        if p.preprocessing == "javisbench":  # every frame (resized as decoded): which are kept depends on the count
            return ClipRequest(video=True, audio=False, frame_transform=self.transform_frames,
                               by=f"extractor {self.name} (JavisBench frames)")
        return ClipRequest(video=True, audio=False, fps=p.fps, frame_stride=p.frame_stride, frames=p.frames,
                           frame_transform=self.transform_frames, by=f"extractor {self.name}")

    def transform_frames(self, frames: Tensor) -> Tensor:
        """(F, 3, H, W) in [0, 1] -> (F, 3, size, size): bilinear, align_corners=False, no antialias, no crop
        (stylegan-v), or letterboxed (javisbench)."""
        if self.params.preprocessing == "javisbench":
            return letterbox(frames, self.params.size)
        return resize_frames(frames, self.params.size, "bilinear")

    def prepare(self, item: MediaItem) -> Tensor:
        """(frames, 3, size, size) in [0, 1], which :meth:`extract` maps by x * 2 - 1."""
        video = requested_frames(item, self.reads(), self.name)
        if self.params.preprocessing == "stylegan-v":
            return video
        picked = torch.linspace(0, video.shape[0] - 1, self.params.frames).round().long()
        quantised = ((video[picked] + 1) * 127.5).clamp(0, 255).to(torch.uint8)  # JavisBench's (x + 1) * 127.5
        return quantised.float() / 255

    def extract(self, batch: Tensor) -> Features:
        logits = self.net(batch.float().permute(0, 2, 1, 3, 4) * 2 - 1)
        return Features(logits, logits)

    def protocol(self) -> dict[str, Any]:
        p = self.params
        if p.preprocessing == "javisbench":
            return self.base_protocol(
                p.checkpoint, self.checkpoint_sha256, preprocessing="javisbench (JavisDiT @ 6af1a7a)",
                frames=p.frames, frame_times="linspace(0, n - 1, frames).round() over the clip's n frames",
                resize=f"long side to {p.size} (bilinear, antialias), centred on black to {p.size}x{p.size}",
                value_range="[0, 1]: JavisBench's uint8(clamp((x + 1) * 127.5)) / 255 * 2 - 1 of frames in [0, 1]",
                embedding="400 Kinetics logits averaged over time",
            )
        return self.base_protocol(
            p.checkpoint, self.checkpoint_sha256,
            frames=p.frames, frame_stride=p.frame_stride, frame_start=0,
            fps=p.fps if p.fps is not None else "native",
            resize=f"bilinear {p.size}x{p.size}, align_corners=False, no antialias, no crop",
            value_range="[-1, 1]", embedding="400 Kinetics logits averaged over time",
        )


def letterbox(frames: Tensor, size: int) -> Tensor:
    """JavisBench's ``ResizeAndPad``: (F, 3, H, W) -> (F, 3, size, size), the long side resized to ``size``
    and the short side to int(size * short / long) (torchvision ``Resize``: bilinear, antialiased),
    centred on black (the extra pixel of an odd margin at the bottom / right)."""
    import torchvision.transforms.v2.functional as TF

    h, w = frames.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h > w else (int(size * h / w), size)
    resized = TF.resize(frames, [nh, nw], antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    return F.pad(resized, (left, size - nw - left, top, size - nh - top))


# ------------------------------------------------------------------------------------------ TorchScript files


def _comparable(state: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """The tensors that carry weights, in order (BatchNorm counters left out)."""
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def torchscript_key_map(theirs: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, str]:
    """Which tensor of a TorchScript I3D (``theirs``: its ``state_dict()``) fills each tensor of
    :class:`InceptionI3d` (``own``): own key -> their key.

    1. The same names after a common prefix (e.g. ``detector.`` or ``module.``) is removed, every
       shape equal; or else
    2. the same sequence: both networks list their weights in module order (stem, then each
       ``Mixed_*`` block's branches 0, 1, 2, 3; per layer conv weight (and bias), then BatchNorm
       weight, bias, running mean and variance), so with the same count and every shape equal in
       order the i-th tensor is the i-th (e.g. a port naming BatchNorm ``batch3d`` or branches
       ``branch_1.0``).

    Raises :class:`SavaError` (what differs) otherwise. Either way the caller must check that the
    two networks then compute the same function (:func:`state_dict_from_torchscript` does).
    """
    anchor = next(iter(own))
    for key in theirs:
        if key.endswith(anchor):
            prefix = key[: len(key) - len(anchor)]
            stripped = {k[len(prefix):]: k for k in theirs if k.startswith(prefix)}
            if all(k in stripped and tuple(theirs[stripped[k]].shape) == tuple(v.shape) for k, v in _comparable(own)):
                return {k: stripped[k] for k, _ in _comparable(own)}
    mine, other = _comparable(own), _comparable(theirs)
    if len(mine) == len(other) and all(tuple(a.shape) == tuple(b.shape) for (_, a), (_, b) in zip(mine, other)):
        return {k: o for (k, _), (o, _) in zip(mine, other)}
    first = next((i for i, ((_, a), (_, b)) in enumerate(zip(mine, other)) if tuple(a.shape) != tuple(b.shape)),
                 min(len(mine), len(other)))
    raise SavaError(
        f"the TorchScript I3D's tensors do not match Inception-I3D's: {len(other)} weight tensors against "
        f"{len(mine)}, first difference at #{first}: "
        f"{other[first][0] + ' ' + str(tuple(other[first][1].shape)) if first < len(other) else '(none)'} vs "
        f"{mine[first][0] + ' ' + str(tuple(mine[first][1].shape)) if first < len(mine) else '(none)'}")


def _run_torchscript(module: Any, x: Tensor) -> Tensor:
    """Logits of a TorchScript I3D for ``x`` (B, 3, T, 224, 224) in [-1, 1]: StyleGAN-V's call
    without its own rescaling and resizing, or a plain call for a module without those options."""
    try:
        return module(x, rescale=False, resize=False, return_features=True)
    except (RuntimeError, TypeError):
        return module(x)


def state_dict_from_torchscript(path: str | Path, net: nn.Module | None = None,
                                check_shape: Sequence[int] = (1, 3, 16, 224, 224)) -> dict[str, Tensor]:
    """The state dict of :class:`InceptionI3d` (or of ``net``) filled from a TorchScript I3D such as
    StyleGAN-V's ``i3d_torchscript.pt`` (tensors placed by :func:`torchscript_key_map`).

    Checked by running both networks on one random clip of ``check_shape`` (B, 3, T, H, W) in
    [-1, 1] (seed 0): their outputs must agree (relative 1e-4), or a :class:`SavaError` says by how
    much. Loading TorchScript runs code from the file: convert only a file you trust (check its
    sha256 against the published one first).
    """
    import warnings

    import torch.jit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as err:
        raise SavaError(f"{path} cannot be read as a TorchScript archive: {err}") from None
    module.eval()
    theirs = dict(module.state_dict())
    target = net if net is not None else InceptionI3d()
    own = target.state_dict()
    mapping = torchscript_key_map(theirs, own)
    state = {k: theirs[o].detach().clone().contiguous() for k, o in mapping.items()}
    state |= {k: v for k, v in own.items() if k not in state}  # BatchNorm counters absent from the file
    target.load_state_dict(state)
    target.eval()
    x = torch.rand(*check_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected, got = _run_torchscript(module, x).float(), target(x).float()
    if expected.shape != got.shape:
        differs = f"output shapes {tuple(expected.shape)} vs {tuple(got.shape)}"
    elif not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item()):
        differs = f"max abs difference {(got - expected).abs().max().item():.3g}"
    else:
        return state
    raise SavaError(f"{path}: with its tensors placed on Inception-I3D the outputs differ from the TorchScript "
                    f"model's ({differs}); it is not this architecture, so it cannot be converted")


def convert_torchscript(src: str | Path, dst: str | Path, net: nn.Module | None = None,
                        check_shape: Sequence[int] = (1, 3, 16, 224, 224)) -> Path:
    """Write :func:`state_dict_from_torchscript` of ``src`` to ``dst`` (``.safetensors``, atomically),
    for ``extractor_params.checkpoint=DST``; pin its sha256 (``sha256sum DST``) as for any other file::

        python -c "from sava_metrics.i3d import convert_torchscript as c; \\
                   c('i3d_torchscript.pt', 'i3d_torchscript.safetensors')"
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise SavaError(f"{dst}: name the converted file *.safetensors")
    state = state_dict_from_torchscript(src, net, check_shape)
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp))
    return dst
