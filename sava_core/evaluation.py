"""The evaluation driver (``sava eval``, recipe evaluation stages): clips on disk -> metrics -> JSON.

Clips are read by :mod:`sava_core.clips`; protocols and reference statistics are
:mod:`sava_core.protocol`'s. :func:`combine_results` never puts scores of different protocols in one
column silently.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sava_core.clips import ClipSet, MediaItem
from sava_core.contracts import MetricInput, Score
from sava_core.errors import SavaError
from sava_core.io import atomic_write_json
from sava_core.protocol import (
    ReferenceStats,
    is_stats_folder,
    load_reference_stats,
    protocol_id,
    require_same_protocol,
    save_reference_stats,
)
from sava_core.registry import Registries, get_registries

RESULTS_FORMAT = "sava.eval/1"


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
        origin = registry.get(req.name).origin
        where = f"metric {req.label!r} ({req.name} from plug-in {origin.plugin or '?'})"
        ref: ReferenceStats | None = None
        if metric.needs_reference:
            if ref_stats is not None:
                if req.label not in ref_stats:
                    raise SavaError(
                        f"metric {req.label!r}: the statistics in {reference} hold "
                        f"{', '.join(ref_stats) or 'nothing'}; "
                        f"save them with the same --metric label, or give reference clips"
                    )
                ref = ref_stats[req.label]
            elif ref_clips is not None:
                ref = computed[req.label] = metric.reference_stats(NeededClips(ref_clips, metric.needs, where))
            else:
                raise SavaError(f"metric {req.label!r} compares with a reference: give --reference DIR|STATS")
            if metric.paired:
                _check_pairs(where, gen.ids, ref)
        score = metric.compute(NeededClips(gen, metric.needs, where), ref)
        _check_score(where, score)
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


class NeededClips(Sequence[MediaItem]):
    """``clips`` as a metric sees them: each item checked, on access, for what the metric ``needs``."""

    def __init__(self, clips: ClipSet, needs: frozenset[MetricInput], where: str):
        self.clips, self.needs, self.where = clips, needs, where
        self.source = clips.source

    @property
    def ids(self) -> list[str]:
        return self.clips.ids

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        item = self.clips[index]
        missing = [n for n in sorted(self.needs) if getattr(item, n) in (None, "")]
        if missing:
            raise SavaError(f"{self.where} needs {' and '.join(missing)}; clip {item.id!r} ({item.source}) has none"
                            + ("; add a <stem>.txt caption or a caption column" if "caption" in missing else ""))
        return item

    def __iter__(self) -> Iterator[MediaItem]:
        return (self[i] for i in range(len(self)))


def _check_pairs(where: str, generated_ids: list[str], reference: ReferenceStats) -> None:
    """A paired metric's reference must hold a clip for every generated id."""
    if reference.ids is None:
        raise SavaError(f"{where} pairs clips by id, and the reference statistics ({reference.source}) keep no ids")
    known = set(reference.ids)
    missing = [i for i in generated_ids if i not in known]
    if missing:
        raise SavaError(f"{where} pairs clips by id, and the reference lacks {len(missing)} generated id(s): "
                        f"{', '.join(missing[:5])}")


def _check_score(where: str, score: Any) -> None:
    """A metric returns a :class:`Score` of finite floats with a JSON-serialisable protocol."""
    if not isinstance(score, Score):
        raise SavaError(f"{where}: compute() returned {type(score).__name__}, not a sava_core.contracts.Score")
    bad = [k for k, v in score.values.items()
           if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
    if bad or not score.values:
        raise SavaError(f"{where}: the score's values must be finite numbers; got "
                        f"{ {k: score.values[k] for k in bad} if bad else 'none'}")
    try:
        json.dumps(score.protocol)
    except (TypeError, ValueError) as err:
        raise SavaError(f"{where}: the score's protocol is not JSON-serialisable: {err}") from None


def combine_results(
    documents: Sequence[dict[str, Any]], *, allow_mixed_protocols: bool = False
) -> list[dict[str, Any]]:
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
                    require_same_protocol(seen["protocol"], s["protocol"],
                                          f"{column} of {seen_in} and of {doc['generated']}",
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
