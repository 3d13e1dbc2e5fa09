"""Measurement protocols and the reference statistics measured under them.

Every score keeps the protocol that produced it (extractor, checkpoint sha256, sample rate, clip
length, frames, resize, resampler, N). Two protocols are comparable when they agree on everything
but the per-set counts (:data:`PER_SET_KEYS`); reference statistics saved with one protocol are
refused for another (:class:`ProtocolMismatchError`)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_with
from sava_core.metrics.frechet import StreamingGaussian

STATS_INDEX = "stats.json"
STATS_FORMAT = "sava.ReferenceStats/1"

#: Protocol keys that describe one evaluated set rather than the measurement; they may differ
#: between comparable scores.
PER_SET_KEYS = frozenset({"n_generated", "n_reference", "rows_generated", "rows_reference", "reference", "n_undefined"})


class ProtocolMismatchError(SavaError):
    """Scores or statistics measured under different protocols were about to be combined."""


def comparable_part(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol without the per-set counts (:data:`PER_SET_KEYS`)."""
    return {k: v for k, v in protocol.items() if k not in PER_SET_KEYS}


def protocol_id(protocol: dict[str, Any]) -> str:
    """A short hash (12 hex digits) of the comparable part of a protocol."""
    text = json.dumps(comparable_part(protocol), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def protocol_diff(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Lines ``key: <names[0]> value, <names[1]> value`` for every comparable (dotted) key where the
    protocols differ."""
    fa, fb = (_flatten(json.loads(json.dumps(comparable_part(p), default=str))) for p in (a, b))
    return [f"{k}: {names[0]} {fa.get(k, '<absent>')!r}, {names[1]} {fb.get(k, '<absent>')!r}"
            for k in sorted(set(fa) | set(fb)) if fa.get(k, "<absent>") != fb.get(k, "<absent>")]


def require_same_protocol(a: dict[str, Any], b: dict[str, Any], what: str,
                          names: tuple[str, str] = ("first", "second")) -> None:
    """Raise :class:`ProtocolMismatchError` listing the differences unless the protocols are comparable."""
    diff = protocol_diff(a, b, names)
    if diff:
        raise ProtocolMismatchError(
            f"{what}: protocols differ, so the numbers are not comparable:\n  " + "\n  ".join(diff)
        )


@dataclass
class ReferenceStats:
    """What a metric keeps of the reference set: its protocol, N, and per metric kind a Gaussian
    (Fréchet metrics; optionally the rows (N, D) for FAD-infinity) or per-clip logits (N, K) with
    clip ids (KL)."""

    metric: str
    protocol: dict[str, Any]
    n: int
    gaussian: StreamingGaussian | None = None
    rows: Tensor | None = None
    logits: Tensor | None = None
    ids: list[str] | None = None
    source: str = ""


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    save_file(tensors, str(path))


def save_reference_stats(folder: str | Path, stats: dict[str, ReferenceStats]) -> None:
    """Write ``stats`` (by metric label) into ``folder``: one safetensors file per label and
    ``stats.json`` (the index, with each protocol); every file is written atomically."""
    folder = Path(folder)
    index: dict[str, Any] = {"format": STATS_FORMAT, "metrics": {}}
    for label, s in stats.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        entry: dict[str, Any] = {"metric": s.metric, "protocol": s.protocol, "n": s.n, "source": s.source}
        if s.gaussian is not None:
            entry["gaussian"] = f"{safe}.gaussian.safetensors"
            s.gaussian.save(folder / entry["gaussian"])
        tensors = {
            k: v.detach().cpu().contiguous() for k, v in (("rows", s.rows), ("logits", s.logits)) if v is not None
        }
        if tensors:
            entry["tensors"] = f"{safe}.tensors.safetensors"
            atomic_write_with(folder / entry["tensors"], functools.partial(_save_tensors, tensors))
        if s.ids is not None:
            entry["ids"] = s.ids
        index["metrics"][label] = entry
    atomic_write_json(folder / STATS_INDEX, index)


def is_stats_folder(path: str | Path) -> bool:
    return (Path(path) / STATS_INDEX).is_file()


def load_reference_stats(folder: str | Path) -> dict[str, ReferenceStats]:
    """Read what :func:`save_reference_stats` wrote."""
    folder = Path(folder)
    try:
        index = json.loads((folder / STATS_INDEX).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SavaError(f"{folder}: cannot read {STATS_INDEX}: {err}") from None
    if index.get("format") != STATS_FORMAT:
        raise SavaError(f"{folder / STATS_INDEX}: not SAVA reference statistics (format {index.get('format')!r})")
    out = {}
    for label, e in index["metrics"].items():
        tensors = load_file(str(folder / e["tensors"])) if "tensors" in e else {}
        out[label] = ReferenceStats(
            metric=e["metric"], protocol=e["protocol"], n=int(e["n"]),
            gaussian=StreamingGaussian.load(folder / e["gaussian"]) if "gaussian" in e else None,
            rows=tensors.get("rows"), logits=tensors.get("logits"), ids=e.get("ids"),
            source=f"saved statistics {folder}",
        )
    return out
