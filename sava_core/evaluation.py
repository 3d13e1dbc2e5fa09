"""The evaluation driver (``sava eval``, recipe evaluation stages): clips on disk -> metrics -> JSON.

Clips come from a folder (``*.mp4`` with audio, or ``*.wav`` / ``*.flac`` for audio-only metrics;
an optional ``<stem>.txt`` beside a clip holds its caption) or from a manifest (``.csv`` with a
header, or ``.jsonl``) with the columns ``path`` (relative to the manifest), and optionally
``caption`` and ``id``. A clip's id is its ``id`` column or its file stem; paired metrics (KL) match
generated and reference clips by id.

Every score keeps the protocol that produced it (extractor, checkpoint sha256, sample rate, clip
length, frames, resize, resampler, N). Two protocols are comparable when they agree on everything
but the per-set counts (:data:`PER_SET_KEYS`); reference statistics saved with one protocol are
refused for another (:class:`ProtocolMismatchError`) and :func:`combine_results` never puts scores
of different protocols in one column silently.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import Tensor

from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_with
from sava_core.metrics.frechet import StreamingGaussian
from sava_core.registry import Registries, get_registries

VIDEO_SUFFIXES = (".mp4",)
AUDIO_SUFFIXES = (".wav", ".flac")
STATS_INDEX = "stats.json"
STATS_FORMAT = "sava.ReferenceStats/1"
RESULTS_FORMAT = "sava.eval/1"

#: Protocol keys that describe one evaluated set rather than the measurement; they may differ
#: between comparable scores.
PER_SET_KEYS = frozenset({"n_generated", "n_reference", "rows_generated", "rows_reference", "reference"})


# ------------------------------------------------------------------------------------------ clips


@dataclass
class MediaItem:
    """One clip to evaluate: ``video`` (F, 3, H, W) in [0, 1] at ``fps`` and/or ``audio`` (C, S) in
    [-1, 1] at ``sample_rate`` Hz (``None`` for a modality the file lacks), its caption and id."""

    id: str
    video: Tensor | None = None
    fps: float | None = None
    audio: Tensor | None = None
    sample_rate: int | None = None
    caption: str = ""
    source: str = ""


def read_item(path: Path, id: str, caption: str = "") -> MediaItem:
    """Decode one file: an mp4 (video and audio, :func:`sava_core.media_io.read_mp4`) or an audio file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise SavaError(f"clip {path} not found")
    if suffix in VIDEO_SUFFIXES:
        from sava_core.media_io import read_mp4

        try:
            video, audio, fps, sample_rate = read_mp4(path)
        except (IndexError, ValueError, OSError) as err:
            raise SavaError(f"cannot read {path} as an mp4 with one video and one audio stream: {err}") from None
        return MediaItem(id, video, fps, audio, sample_rate, caption, str(path))
    if suffix in AUDIO_SUFFIXES:
        import soundfile

        try:
            data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as err:
            raise SavaError(f"cannot read {path} as audio: {err}; replace or remove the file") from None
        return MediaItem(id, None, None, torch.from_numpy(data.T.copy()), int(sample_rate), caption, str(path))
    raise SavaError(f"clip {path}: unsupported file type {suffix!r}; use {', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)}")


@dataclass(frozen=True)
class _Entry:
    id: str
    path: Path
    caption: str


class ClipSet(Sequence[MediaItem]):
    """Clips on disk, decoded on access (one at a time, so a set never has to fit in memory)."""

    def __init__(self, entries: Sequence[_Entry], source: str):
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise SavaError(f"{source}: clip ids must be unique; repeated: {', '.join(dup)}")
        self._entries = list(entries)
        self.source = source

    @classmethod
    def from_path(cls, path: str | Path) -> ClipSet:
        """A folder of clips or a manifest (``.csv`` / ``.jsonl``)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES)
            if not files:
                raise SavaError(f"{path}: no clips ({', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)}) in this folder")
            entries = []
            for f in files:
                txt = f.with_suffix(".txt")
                entries.append(_Entry(f.stem, f, txt.read_text().strip() if txt.is_file() else ""))
            return cls(entries, str(path))
        if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
            return cls(_read_manifest(path), str(path))
        if path.is_file():
            raise SavaError(f"{path}: expected a folder of clips or a manifest (.csv or .jsonl)")
        raise SavaError(f"{path} not found: give a folder of clips or a manifest (.csv or .jsonl)")

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        e = self._entries[index]
        return read_item(e.path, e.id, e.caption)

    def __iter__(self) -> Iterator[MediaItem]:
        return (self[i] for i in range(len(self)))


def _read_manifest(path: Path) -> list[_Entry]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SavaError(f"{path}:{n}: not a JSON object: {err}") from None
    if not rows:
        raise SavaError(f"{path}: the manifest lists no clips")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise SavaError(f"{path}: row {n} has no 'path' (columns: path, and optionally caption and id)")
        clip = Path(row["path"])
        clip = clip if clip.is_absolute() else path.parent / clip
        entries.append(_Entry(str(row.get("id") or clip.stem), clip, str(row.get("caption") or "")))
    return entries


# ------------------------------------------------------------------------------------------ protocols


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


# ------------------------------------------------------------------------------------------ reference statistics


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
        tensors = {k: v.detach().cpu().contiguous() for k, v in (("rows", s.rows), ("logits", s.logits)) if v is not None}
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


# ------------------------------------------------------------------------------------------ the driver


@dataclass
class MetricRequest:
    """One metric to run: registered ``name``, its ``params``, and the ``label`` its scores get."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name


def parse_metric_spec(spec: str) -> MetricRequest:
    """``"NAME key=value ..."`` in the recipe override grammar (values are YAML; dotted keys nest,
    e.g. ``extractor_params.preset=tiny``; ``label=...`` names the scores, for running one metric
    twice with different settings)."""
    from sava_core.recipe import apply_overrides, parse_override

    try:
        words = shlex.split(spec)
    except ValueError as exc:
        raise SavaError(f"--metric {spec!r}: {exc}") from None
    if not words or "=" in words[0]:
        raise SavaError(f"--metric {spec!r}: start with the metric name, then key=value parameters")
    label, overrides = "", []
    for word in words[1:]:
        if "=" not in word or word.startswith(("=", "~")):
            raise SavaError(f"--metric {spec!r}: {word!r} is not key=value")
        key, value, _ = parse_override(word)
        if key == "label":
            label = str(value)
        else:
            overrides.append(word)
    return MetricRequest(words[0], apply_overrides({}, overrides, where="--metric"), label)


@dataclass
class EvalResult:
    """Scores (one dict per metric: label, metric, params, values, protocol, protocol_id), the table
    rows (one per value) and the JSON document written to ``out``."""

    scores: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    document: dict[str, Any]


def _rows(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in scores:
        p = s["protocol"]
        for key, value in s["values"].items():
            rows.append({
                "metric": s["label"], "value": key, "score": value,
                "n_generated": p.get("n_generated"), "n_reference": p.get("n_reference"),
                "protocol": s["protocol_id"],
            })
    return rows


def evaluate(
    generated: str | Path,
    metrics: Sequence[MetricRequest | str],
    *,
    reference: str | Path | None = None,
    save_stats: str | Path | None = None,
    out: str | Path | None = None,
    registries: Registries | None = None,
) -> EvalResult:
    """Run ``metrics`` on the clips at ``generated`` against ``reference`` (clips, or statistics saved
    earlier with ``save_stats``); write the JSON document to ``out`` (atomically) when given.

    Reference statistics are computed once per metric; with ``save_stats`` they are written to that
    folder and can replace ``reference`` later (the same protocol is then required). Metrics are
    built from ``registries`` (default: :func:`~sava_core.registry.get_registries`) and given them, to
    build their feature extractors.
    """
    registries = registries or get_registries()
    requests = [parse_metric_spec(m) if isinstance(m, str) else m for m in metrics]
    if not requests:
        raise SavaError("no metric requested: give --metric NAME (e.g. --metric fad)")
    labels = [r.label for r in requests]
    if len(set(labels)) != len(labels):
        raise SavaError(f"metric labels repeat ({', '.join(labels)}): add label=NAME to tell them apart")
    gen = ClipSet.from_path(generated)
    ref_clips: ClipSet | None = None
    ref_stats: dict[str, ReferenceStats] | None = None
    if reference is not None:
        if is_stats_folder(reference):
            ref_stats = load_reference_stats(reference)
        else:
            ref_clips = ClipSet.from_path(reference)
    if save_stats is not None and ref_clips is None:
        raise SavaError("--save-stats needs --reference pointing at reference clips (a folder or manifest)")

    registry = registries["metric"]
    scores: list[dict[str, Any]] = []
    computed: dict[str, ReferenceStats] = {}
    for req in requests:
        try:
            metric = registry.build(req.name, req.params, registries=registries)
        except ValidationError as err:
            raise SavaError(f"--metric {req.label}: bad parameters for metric {req.name!r}:\n{err}") from None
        ref: ReferenceStats | None = None
        if metric.needs_reference:
            if ref_stats is not None:
                if req.label not in ref_stats:
                    raise SavaError(
                        f"metric {req.label!r}: the statistics in {reference} hold {', '.join(ref_stats) or 'nothing'}; "
                        f"save them with the same --metric label, or give reference clips"
                    )
                ref = ref_stats[req.label]
            elif ref_clips is not None:
                ref = computed[req.label] = metric.reference_stats(ref_clips)
            else:
                raise SavaError(f"metric {req.label!r} compares with a reference: give --reference DIR|STATS")
        score = metric.compute(gen, ref)
        scores.append({
            "label": req.label, "metric": req.name, "params": metric.params.model_dump(mode="json"),
            "values": score.values, "protocol": score.protocol, "protocol_id": protocol_id(score.protocol),
        })
    if save_stats is not None:
        save_reference_stats(save_stats, computed)
    document = {
        "format": RESULTS_FORMAT,
        "generated": str(generated),
        "reference": None if reference is None else str(reference),
        "reference_kind": None if reference is None else ("statistics" if ref_stats is not None else "clips"),
        "scores": scores,
    }
    if out is not None:
        atomic_write_json(out, document)
    return EvalResult(scores, _rows(scores), document)


def combine_results(documents: Sequence[dict[str, Any]], *, allow_mixed_protocols: bool = False) -> list[dict[str, Any]]:
    """Table rows of several ``sava eval`` documents, one column per metric label.

    Scores that share a label but not a protocol raise :class:`ProtocolMismatchError`; with
    ``allow_mixed_protocols`` they go to separate columns named ``label@protocol_id`` instead.
    """
    first: dict[str, tuple[dict[str, Any], str]] = {}
    rows = []
    for doc in documents:
        for s in doc["scores"]:
            column = s["label"]
            seen, seen_in = first.setdefault(column, (s, doc["generated"]))
            if seen["protocol_id"] != s["protocol_id"]:
                if not allow_mixed_protocols:
                    require_same_protocol(seen["protocol"], s["protocol"], f"{column} of {seen_in} and of {doc['generated']}",
                                          (seen_in, doc["generated"]))
                column = f"{column}@{s['protocol_id']}"
            for row in _rows([{**s, "label": column}]):
                rows.append({"generated": doc["generated"], **row})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :class:`EvalResult` rows."""
    if not rows:
        return "(no scores)"
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
