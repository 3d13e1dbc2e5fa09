"""The evaluation driver (``sava eval``, recipe evaluation stages): clips on disk -> metrics -> JSON.

Clips are read by :mod:`sava_core.clips`; protocols and reference statistics are
:mod:`sava_core.protocol`'s. :func:`combine_results` never puts scores of different protocols in one
column silently.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from sava_core.clips import ClipError, ClipRequest, ClipSet, MediaItem
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

log = logging.getLogger("sava")
T = TypeVar("T")


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
    rows (one per value), the JSON document written to ``out`` and the clips left out (``skipped``:
    one dict per file and reason: set, id, path, reason, metrics)."""

    scores: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    document: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)


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
    strict: bool = False,
    protocol: str | None = None,
    weights: str | Path = "checkpoints",
) -> EvalResult:
    """Run ``metrics`` on the clips at ``generated`` against ``reference`` (clips, or statistics saved
    earlier with ``save_stats``); write the JSON document to ``out`` (atomically) when given.

    Reference statistics are computed once per metric; with ``save_stats`` they are written to that
    folder and can replace ``reference`` later (the same protocol is then required). Metrics are
    built from ``registries`` (default: :func:`~sava_core.registry.get_registries`) and given them, to
    build their feature extractors.

    A clip that cannot be read, or lacks what a metric needs (its ``needs``, or frames its protocol
    samples), is left out of that metric and listed in ``skipped`` (file and reason; the metric's
    ``n_generated`` / ``n_reference`` count the clips used); a set with no usable clip left is an
    error. With ``strict`` the first such clip is an error naming the file and the reason. Clips are
    decoded one at a time, as each metric's extractor asks (:class:`~sava_core.clips.ClipRequest`).

    ``protocol`` names a registered :class:`~sava_core.eval_protocol.EvalProtocol`: its columns run
    first, with their weights from the folder ``weights``; a request in ``metrics`` with a column's
    label replaces that column, others are added. The document and every score name the protocol.
    """
    registries = registries or get_registries()
    requests = [parse_metric_spec(m) if isinstance(m, str) else m for m in metrics]
    preset: dict[str, Any] | None = None
    if protocol is not None:
        requests, preset = _protocol_requests(protocol, weights, requests, registries)
    if not requests:
        raise SavaError("no metric requested: give --metric NAME (e.g. --metric fad) or --protocol NAME")
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
    skipped: dict[tuple[str, str, str], dict[str, Any]] = {}
    for req in requests:
        try:
            metric = registry.build(req.name, req.params, registries=registries)
        except ValidationError as err:
            raise SavaError(f"--metric {req.label}: bad parameters for metric {req.name!r}:\n{err}") from None
        origin = registry.get(req.name).origin
        where = f"metric {req.label!r} ({req.name} from plug-in {origin.plugin or '?'})"
        ref: ReferenceStats | None = None
        gen_view = NeededClips(gen, metric.needs, where, strict=strict)
        ref_view: NeededClips | None = None
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
                ref_view = NeededClips(ref_clips, metric.needs, where, strict=strict)
                ref = computed[req.label] = _consistently(ref_view, lambda: metric.reference_stats(ref_view))
                _record(skipped, "reference", ref_view, req.label)
            else:
                raise SavaError(f"metric {req.label!r} compares with a reference: give --reference DIR|STATS")
            if metric.paired:
                if ref_view is not None:
                    _unpaired_are_skipped(gen_view, ref_view)
                _check_pairs(where, gen_view.ids, ref)
        score = _consistently(gen_view, lambda: metric.compute(gen_view, ref))
        _record(skipped, "generated", gen_view, req.label)
        _check_score(where, score)
        scores.append({
            "label": req.label, "metric": req.name, "params": metric.params.model_dump(mode="json"),
            "values": score.values, "protocol": score.protocol, "protocol_id": protocol_id(score.protocol),
            "eval_protocol": protocol,
        })
    if save_stats is not None:
        save_reference_stats(save_stats, computed)
    listed = sorted(skipped.values(), key=lambda e: (e["set"], e["path"], e["reason"]))
    document = {
        "format": RESULTS_FORMAT,
        "generated": str(generated),
        "reference": None if reference is None else str(reference),
        "reference_kind": None if reference is None else ("statistics" if ref_stats is not None else "clips"),
        "eval_protocol": preset,
        "scores": scores,
        "skipped": listed,
    }
    if out is not None:
        atomic_write_json(out, document)
    return EvalResult(scores, _rows(scores), document, listed)


def _protocol_requests(name: str, weights: str | Path, given: list[MetricRequest],
                       registries: Registries) -> tuple[list[MetricRequest], dict[str, Any]]:
    """The requests of protocol ``name``'s columns (a given request with a column's label in its
    place), then the other given ones; and the protocol's record."""
    from sava_core.eval_protocol import EvalProtocol

    preset: EvalProtocol = registries["eval_protocol"].build(name)
    by_label = {r.label: r for r in given}
    specs = preset.metric_specs(name, weights, replaced=by_label)
    columns = [by_label.pop(c.label) if c.label in by_label else parse_metric_spec(specs[c.label])
               for c in preset.columns]
    return columns + list(by_label.values()), preset.record(name)


@dataclass
class _Skips:
    """The clips of one set that one metric leaves out (index -> problem), and which clips the
    current run of the metric has read and skipped (see :func:`_consistently`)."""

    problems: dict[int, ClipError] = field(default_factory=dict)
    run_read: set[int] = field(default_factory=set)
    run_skipped: set[int] = field(default_factory=set)


class NeededClips(Sequence[MediaItem]):
    """``clips`` as a metric sees them: each item checked, on access, for what the metric ``needs``.

    Iterating decodes each clip as :attr:`request` asks (by default the modalities in ``needs``,
    whole); :meth:`with_request` gives the same clips decoded as an extractor asks. A clip that
    cannot be read or lacks what is needed raises a :class:`SavaError` naming it when ``strict``;
    otherwise iteration skips it and remembers why (:attr:`problems`), for every view of the set.
    Indexing raises for such a clip either way.
    """

    def __init__(self, clips: ClipSet, needs: frozenset[MetricInput], where: str, *, strict: bool = True,
                 request: ClipRequest | None = None, skips: _Skips | None = None):
        self.clips, self.needs, self.where, self.strict = clips, needs, where, strict
        self.source = clips.source
        self.request = request or ClipRequest(video="video" in needs or not needs,
                                              audio="audio" in needs or not needs, by=where)
        self.skips = skips if skips is not None else _Skips()

    @property
    def ids(self) -> list[str]:
        """The ids of the clips not left out so far."""
        return [cid for i, cid in enumerate(self.clips.ids) if i not in self.skips.problems]

    @property
    def problems(self) -> dict[int, ClipError]:
        """Clips left out (index in the set -> why)."""
        return self.skips.problems

    def with_request(self, request: ClipRequest) -> NeededClips:
        return NeededClips(self.clips, self.needs, self.where, strict=self.strict, request=request, skips=self.skips)

    def skip(self, index: int, problem: ClipError) -> None:
        """Leave clip ``index`` out for ``problem`` (logged as a warning on the ``sava`` logger)."""
        if index not in self.skips.problems:
            log.warning("%s: skipping %s: %s", self.where, problem.path, problem.reason)
        self.skips.problems[index] = problem
        self.skips.run_skipped.add(index)

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, index: int) -> MediaItem:
        item = self.clips.read(index, self.request)
        streams = item.streams or frozenset()
        missing = [n for n in sorted(self.needs) if (not item.caption if n == "caption" else n not in streams)]
        if missing:
            raise ClipError(
                item.source, f"no {' and no '.join(missing)}",
                f"{self.where} needs {' and '.join(missing)}; clip {item.id!r} ({item.source}) has none"
                + ("; add a <stem>.txt caption or a caption column" if "caption" in missing else ""))
        return item

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        if index in self.skips.problems:
            raise self.skips.problems[index]
        return self._read(index)

    def __iter__(self) -> Iterator[MediaItem]:
        used = 0
        for i in range(len(self.clips)):
            if i in self.skips.problems:
                continue
            try:
                item = self._read(i)
            except ClipError as problem:
                if self.strict:
                    raise
                self.skip(i, problem)
                continue
            self.skips.run_read.add(i)
            used += 1
            yield item
        if not used and self.skips.problems:
            first = next(iter(self.skips.problems.values()))
            more = len(self.skips.problems) - 1
            raise SavaError(f"{self.where}: no usable clip in {self.source}: {first}"
                            + (f" (and {more} more clip(s) skipped)" if more else ""))


def _consistently(clips: NeededClips, run: Callable[[], T]) -> T:
    """``run()`` (a metric reading ``clips``, possibly in several passes), again without the newly
    skipped clips whenever a clip was skipped in one pass after another pass had used it (e.g. a
    video tower read it and the audio tower could not), so that every pass sees the same clips."""
    while True:
        clips.skips.run_read.clear()
        clips.skips.run_skipped.clear()
        result = run()
        if not clips.skips.run_read & clips.skips.run_skipped:
            return result
        log.warning("%s: running again without the clip(s) skipped halfway", clips.where)


def _unpaired_are_skipped(generated: NeededClips, reference: NeededClips) -> None:
    """A paired metric leaves out each generated clip whose reference clip (same id) was left out."""
    left_out = {reference.clips.ids[i]: p for i, p in reference.problems.items()}
    for i, cid in enumerate(generated.clips.ids):
        if cid in left_out and i not in generated.problems:
            p = left_out[cid]
            generated.skip(i, ClipError(generated.clips.entries[i].path,
                                        f"its reference clip {p.path} was skipped ({p.reason})"))


def _record(skipped: dict[tuple[str, str, str], dict[str, Any]], which: str, clips: NeededClips, label: str) -> None:
    """Add the clips ``clips`` left out for metric ``label`` to the list of skipped clips."""
    for i, problem in sorted(clips.problems.items()):
        entry = skipped.setdefault((which, problem.path, problem.reason), {
            "set": which, "id": clips.clips.ids[i], "path": problem.path, "reason": problem.reason, "metrics": []})
        if label not in entry["metrics"]:
            entry["metrics"].append(label)


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


def format_skipped(skipped: Sequence[dict[str, Any]]) -> str:
    """The clips an evaluation left out, one line each (empty when none was)."""
    if not skipped:
        return ""
    lines = [f"skipped {len(skipped)} clip problem(s); the scores leave these clips out "
             "(--strict makes them errors):"]
    lines += [f"  {s['set']} {s['path']}: {s['reason']} [{', '.join(s['metrics'])}]" for s in skipped]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
