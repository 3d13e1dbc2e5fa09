"""What every evaluation extractor shares: checkpoint verification and loading, input preparation
(resampling, mono, clip length, frame selection, resizing), what it asks the clip reader for
(:meth:`MediaExtractor.reads`) and per-clip batching.

Weights are read only from the local path in ``checkpoint`` and only after their sha256 matches;
pickled checkpoints go through ``torch.load(weights_only=True)``. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from safetensors.torch import load_file
from torch import Tensor, nn

from sava_core.clips import ClipRequest, MediaItem, with_request
from sava_core.contracts import FeatureExtractor, Features
from sava_core.errors import SavaError
from sava_core.io import file_sha256

#: The one resampler every extractor uses (torchaudio's defaults, pinned here so protocols can say it).
RESAMPLER = "torchaudio.functional.resample(sinc_interp_hann, lowpass_filter_width=6, rolloff=0.99)"


def verify_checkpoint(name: str, path: str | None, sha256: str | None, what: str,
                      known_prefix: str | None = None) -> tuple[Path, str]:
    """Check that ``path`` exists and has the expected sha256; return (path, its sha256).

    ``what`` names the published file for the messages. Without ``sha256``, a hash prefix known
    from the published file name (torch.hub's ``name-<sha256[:8]>.pth`` convention) is checked;
    without either, the user is asked to pin the hash.
    """
    hint = "set its `checkpoint` parameter (e.g. --metric '... extractor_params.checkpoint=PATH')"
    if not path:
        raise SavaError(f"extractor {name}: no checkpoint given; {hint} to the local file of {what}. "
                        "Weights are never downloaded; preset=tiny builds random weights for tests.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise SavaError(f"extractor {name}: checkpoint {p} not found; {hint} to the local file of {what}")
    digest = file_sha256(p)
    if sha256 is not None:
        if digest != sha256:
            raise SavaError(f"extractor {name}: checkpoint {p} has sha256 {digest}, but `sha256` expects {sha256}; "
                            f"it is not the expected file ({what}). "
                            "Point `checkpoint` at the right file or fix `sha256`.")
    elif known_prefix is not None:
        if not digest.startswith(known_prefix):
            raise SavaError(f"extractor {name}: checkpoint {p} has sha256 {digest}, which does not start with "
                            f"{known_prefix} as the published file ({what}) does; point `checkpoint` at that file.")
    else:
        raise SavaError(f"extractor {name}: no published sha256 is pinned for {what}; check that {p} is that file and "
                        f"set `sha256` to its hash: extractor_params.sha256={digest}")
    return p, digest


def load_state_dict_file(path: Path, nested: Sequence[str] = ("model", "state_dict")) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file, or of a pickled state dict read with ``weights_only=True``
    (unwrapping one level of ``nested`` keys, as training checkpoints hold ``{"model": state}``)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        hint = (" It is a TorchScript archive: convert it to a state dict once (docs/metrics.md, \"Weights\")."
                if "TorchScript" in str(err) else "")
        raise SavaError(f"checkpoint {path} cannot be read as a plain state dict (weights_only=True): {err}"
                        + hint) from None
    for key in nested:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise SavaError(f"checkpoint {path} is not a state dict of tensors")
    return obj


def load_into(module: nn.Module, state: dict[str, Tensor], name: str, path: Path, what: str) -> None:
    """``module.load_state_dict(state)`` with every key and shape required to match."""
    own = module.state_dict()
    # BatchNorm counters are absent from older checkpoints and unused in eval mode
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise SavaError(
            f"extractor {name}: checkpoint {path} does not fit the architecture of {what}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:5]}"
        )
    module.load_state_dict(state)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build random weights under ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------ preparation


def mono_at(item: MediaItem, rate: int, name: str) -> Tensor:
    """The clip's audio as mono (channel mean) float32 (S,) at ``rate`` Hz (:data:`RESAMPLER`)."""
    if item.audio is None or item.sample_rate is None:
        raise SavaError(f"extractor {name}: clip {item.id} ({item.source or 'in memory'}) has no audio")
    audio = item.audio.float().mean(0)
    if item.sample_rate != rate:
        audio = AF.resample(audio, item.sample_rate, rate)
    return audio


def fit_length(x: Tensor, n: int) -> Tensor:
    """Crop the last axis to its first ``n`` entries, or zero-pad it at the end."""
    return x[..., :n] if x.shape[-1] >= n else F.pad(x, (0, n - x.shape[-1]))


def frames_of(item: MediaItem, name: str, *, fps: float | None = None, frames: int | None = None,
              stride: int = 1) -> Tensor:
    """Frames (F, 3, H, W) in [0, 1]: first resampled to ``fps`` (nearest earlier frame) when given,
    then every ``stride``-th frame from the first, then the first ``frames`` of them."""
    if item.video is None or item.fps is None:
        raise SavaError(f"extractor {name}: clip {item.id} ({item.source or 'in memory'}) has no video")
    video = item.video
    if fps is not None and abs(fps - item.fps) > 1e-6:
        count = int(video.shape[0] / item.fps * fps + 1e-6)
        idx = torch.floor(torch.arange(count, dtype=torch.float64) * item.fps / fps + 1e-6).long()
        video = video[idx.clamp(max=video.shape[0] - 1)]
    video = video[::stride]
    if frames is not None:
        if video.shape[0] < frames:
            raise SavaError(
                f"extractor {name}: clip {item.id} has {video.shape[0]} frames after sampling (stride {stride}"
                f"{f', {fps} fps' if fps else ''}); the protocol needs {frames}. Use longer clips or lower `frames`."
            )
        video = video[:frames]
    return video.float()


def requested_frames(item: MediaItem, request: ClipRequest, name: str) -> Tensor:
    """The frames ``request`` asks for (sampled as :func:`frames_of`, then its ``frame_transform``):
    as the clip reader already decoded them (``item.request == request``), or, for a whole clip held
    in memory, sampled and transformed here."""
    if item.video is None or item.fps is None:
        raise SavaError(f"extractor {name}: clip {item.id} ({item.source or 'in memory'}) has no video")
    if item.request is not None:
        if item.request != request:
            raise SavaError(f"extractor {name}: clip {item.id} was decoded for another reader ({item.request.by}); "
                            "read it again for this one")
        return item.video.float()
    video = frames_of(item, name, fps=request.fps, frames=request.frames, stride=request.frame_stride)
    return request.frame_transform(video) if request.frame_transform is not None else video


def resize_frames(video: Tensor, size: int, mode: str) -> Tensor:
    """(F, 3, H, W) -> (F, 3, size, size): ``bilinear`` (align_corners=False, no antialias, no crop),
    or ``bicubic-short-side+center-crop`` (short side to ``size`` with antialias, then centre crop)."""
    if mode == "bilinear":
        return F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False)
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    video = F.interpolate(video, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return video[..., top:top + size, left:left + size].clamp(0, 1)


# ------------------------------------------------------------------------------------------ the base class


class MediaExtractor(FeatureExtractor):
    """An extractor that also prepares raw clips for itself.

    :meth:`prepare` turns one :class:`MediaItem` into the model's per-clip input (audio (C, S) at
    ``sample_rate``, frames (F, 3, H, W) in [0, 1], or a caption); :meth:`extract` takes a batch of
    them (stacked tensors, or a list of strings). ``rows`` says what one embedding row is:
    ``clip``, ``window`` (VGGish), ``frame`` (ImageBind vision) or ``step`` (CAVP).
    """

    rows: ClassVar[str] = "clip"
    name: ClassVar[str]

    def reads(self) -> ClipRequest:
        """What :meth:`prepare` reads of a clip, for the clip reader to decode only that: by default
        the extractor's modality, whole (a caption alone for text). A video extractor states the
        frames its protocol samples and the transform (resize) each one gets as it is decoded, so
        that a clip is never held at its source resolution."""
        return ClipRequest(video=self.modality == "video", audio=self.modality == "audio", by=f"extractor {self.name}")

    def prepare(self, item: MediaItem) -> Any:
        raise NotImplementedError

    def features(self, items: Sequence[MediaItem] | Any, batch_size: int) -> Iterator[tuple[str, Features]]:
        """(clip id, that clip's :class:`Features`) for each clip, computed in batches of up to
        ``batch_size`` clips whose prepared inputs share a shape. Clips read from disk are decoded as
        :meth:`reads` asks (:func:`sava_core.clips.with_request`), one at a time: at most
        ``batch_size`` prepared inputs and one clip being decoded are held at once."""
        items = with_request(items, self.reads())
        pending: list[tuple[str, Any]] = []

        def flush() -> Iterator[tuple[str, Features]]:
            inputs = [x for _, x in pending]
            batch = inputs if isinstance(inputs[0], str) else torch.stack(inputs)
            with torch.no_grad():
                out = self.extract(batch)
            per = out.embeddings.shape[0] // len(pending)
            per_logits = 0 if out.logits is None else out.logits.shape[0] // len(pending)
            for j, (cid, _) in enumerate(pending):
                logits = None if out.logits is None else out.logits[j * per_logits:(j + 1) * per_logits]
                yield cid, Features(out.embeddings[j * per:(j + 1) * per], logits)

        for item in items:
            x = self.prepare(item)
            if pending and (len(pending) >= batch_size or _shape(x) != _shape(pending[0][1])):
                yield from flush()
                pending = []
            pending.append((item.id, x))
        if pending:
            yield from flush()

    def base_protocol(self, checkpoint: str | None, sha256: str | None, **fields: Any) -> dict[str, Any]:
        """The protocol fields every extractor records, plus ``fields``."""
        tiny = getattr(self.params, "preset", "published") == "tiny"
        return {
            "extractor": self.name,
            "preset": getattr(self.params, "preset", "published"),
            "checkpoint": f"random weights (seed {self.params.seed}); not comparable with anything" if tiny
            else Path(checkpoint).name if checkpoint else None,
            "checkpoint_sha256": sha256,
            "modality": self.modality,
            "rows": self.rows,
            **fields,
        }


def _shape(x: Any) -> Any:
    return "text" if isinstance(x, str) else tuple(x.shape)


def build_model(preset: str, seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` under ``seed``, in eval mode, frozen. For the tiny preset the random weights stay,
    re-drawn Kaiming-normal (fan-in, ReLU gain) with zero biases in every convolution and linear
    layer, so activations keep their scale through depth and different inputs embed differently."""
    with seeded(seed):
        model = make()
        if preset == "tiny":
            for m in model.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight.requires_grad:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def mono_clip(item: MediaItem, sample_rate: int, clip_seconds: float | None, name: str) -> Tensor:
    """An item's audio as mono at ``sample_rate``, cut or zero-padded to ``clip_seconds`` if set: (1, S)."""
    audio = mono_at(item, sample_rate, name)
    if clip_seconds is not None:
        audio = fit_length(audio, round(clip_seconds * sample_rate))
    return audio[None]
