"""The paper's metrics on clips: FVD, FAD, FD, KL, ISc, CLAP score, AVHScore, CAVP similarity.

Each metric names an extractor (and its parameters), runs it on :class:`MediaItem` s and returns a
:class:`Score` whose protocol holds the metric's definition, the extractor's protocol (checkpoint
sha256, rates, clip length, frames, resize, resampler) and the N of each set. Reference sets are
reduced once to :class:`ReferenceStats` (:meth:`reference_stats`), which can be saved and reused;
statistics of another protocol are refused. Maths: :mod:`sava_core.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from sava_core.clips import MediaItem
from sava_core.contracts import Metric, MetricInput, Score
from sava_core.errors import SavaError
from sava_core.metrics import (
    StreamingGaussian,
    cosine_mean,
    fad_infinity,
    framewise_cosine,
    frechet_distance,
    inception_score,
    kl_divergence,
)
from sava_core.protocol import ReferenceStats, require_same_protocol
from sava_core.registry import Registries
from sava_metrics.common import MediaExtractor
from sava_metrics.params import (
    AVHScoreParams,
    CAVPSimParams,
    CLAPScoreParams,
    CosineParams,
    FADParams,
    FDParams,
    FrechetParams,
    FVDParams,
    ISCParams,
    KLParams,
    MetricParams,
)

FD_IMPLEMENTATION = ("float64; tr sqrt(S1^1/2 S2 S1^1/2) via a Cholesky factor of S1 (eigh square root when "
                     "singular) and eigvalsh; covariances with N - 1")


_NEEDS: dict[str, MetricInput] = {"video": "video", "audio": "audio", "text": "caption"}


class ExtractorMetric(Metric):
    """A metric computed from one extractor's features; it needs what its extractor reads."""

    Params: ClassVar[type[MetricParams]]
    name: ClassVar[str]
    definition: ClassVar[str]

    def __init__(self, params: MetricParams, *, registries: Registries):
        self.params, self.registries = params, registries
        self.extractor = self.build_extractor()
        self.needs = frozenset({_NEEDS[self.extractor.modality]})

    def build_extractor(self, **overrides: Any) -> MediaExtractor:
        p = self.params
        try:
            extractor = self.registries["extractor"].build(p.extractor, {**p.extractor_params, **overrides})
        except ValidationError as err:
            raise SavaError(f"metric {self.name}: bad extractor_params for extractor {p.extractor!r}:\n{err}") from None
        if not isinstance(extractor, MediaExtractor):
            raise SavaError(f"metric {self.name}: extractor {p.extractor!r} cannot prepare clips "
                            "(it is not a sava_metrics.common.MediaExtractor)")
        return extractor.eval()

    def measurement(self) -> dict[str, Any]:
        """The comparable part of this metric's protocol: what two numbers must share to be compared."""
        return {"metric": self.name, "definition": self.definition, "extractor": self.extractor.protocol()}

    def check_reference(self, reference: ReferenceStats | None) -> ReferenceStats:
        if reference is None:
            raise SavaError(f"metric {self.name} compares with a reference set: give reference clips or statistics")
        require_same_protocol(reference.protocol, self.measurement(),
                              f"metric {self.name}: reference statistics from {reference.source or 'elsewhere'}",
                              ("reference", "this run"))
        return reference

    def compute(
        self, generated: Sequence[MediaItem], reference: Sequence[MediaItem] | ReferenceStats | None = None
    ) -> Score:
        ref = (
            reference if reference is None or isinstance(reference, ReferenceStats) else self.reference_stats(reference)
        )
        return self.score(generated, ref)

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        raise NotImplementedError


class FrechetMetric(ExtractorMetric):
    """Fréchet distance between Gaussians of generated and reference embedding rows (squared feature units)."""

    Params = FrechetParams
    needs_reference = True
    definition = "Frechet distance of Gaussians fitted to embedding rows"

    def _gaussian(
        self, clips: Iterable[MediaItem], keep_rows: bool
    ) -> tuple[StreamingGaussian, int, torch.Tensor | None]:
        g, n, rows = StreamingGaussian("cpu"), 0, []
        for _, f in self.extractor.features(clips, self.params.batch_size):
            g.update(f.embeddings)
            n += 1
            if keep_rows:
                rows.append(f.embeddings.double())
        if g.n < 2:
            raise SavaError(
                f"metric {self.name}: {g.n} embedding row(s) from {n} clip(s); a covariance needs at least 2"
            )
        return g, n, torch.cat(rows) if keep_rows else None

    def reference_stats(self, clips: Sequence[MediaItem]) -> ReferenceStats:
        g, n, rows = self._gaussian(clips, self.params.infinity)
        return ReferenceStats(self.name, self.measurement(), n, gaussian=g, rows=rows,
                              source=f"reference clips {getattr(clips, 'source', '')}".strip())

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        ref = self.check_reference(reference)
        if ref.gaussian is None:
            raise SavaError(f"metric {self.name}: the reference statistics hold no Gaussian")
        g, n, rows = self._gaussian(generated, self.params.infinity)
        values = {self.name: frechet_distance(g.mean, g.cov, ref.gaussian.mean, ref.gaussian.cov)}
        protocol: dict[str, Any] = {
            **self.measurement(), "implementation": FD_IMPLEMENTATION,
            "n_generated": n, "rows_generated": g.n, "n_reference": ref.n, "rows_reference": ref.gaussian.n,
            "reference": ref.source,
        }
        if self.params.infinity:
            if ref.rows is None:
                raise SavaError(f"metric {self.name}: infinity=true needs the reference rows; the statistics from "
                                f"{ref.source} were saved without them (save them again with infinity=true)")
            try:
                inf = fad_infinity(ref.rows, rows, n_min=self.params.infinity_min, n_points=self.params.infinity_points)
            except ValueError as err:
                raise SavaError(f"metric {self.name} infinity=true: {err} (rows of the generated set, one per "
                                "embedded window); evaluate more clips or set infinity_min lower") from None
            values.update({f"{self.name}_inf": inf["fad_inf"], f"{self.name}_inf_slope": inf["slope"],
                           f"{self.name}_inf_r2": inf["r2"]})
            protocol["infinity"] = {k: inf[k] for k in ("n_points", "n_min", "n_max")} | {
                "resampling": "with replacement, seed 0"
            }
        return Score(values, protocol)


class FVD(FrechetMetric):
    Params = FVDParams
    name = "fvd"


class FAD(FrechetMetric):
    Params = FADParams
    name = "fad"


class FD(FrechetMetric):
    Params = FDParams
    name = "fd"


def _logits(metric: ExtractorMetric, clips: Iterable[MediaItem]) -> tuple[list[str], torch.Tensor]:
    ids, rows = [], []
    for cid, f in metric.extractor.features(clips, metric.params.batch_size):
        if f.logits is None:
            raise SavaError(f"metric {metric.name}: extractor {metric.params.extractor!r} gives no classifier logits")
        ids.append(cid)
        rows.append(f.logits.double().reshape(1, -1))
    if not rows:
        raise SavaError(f"metric {metric.name}: no clips")
    return ids, torch.cat(rows)


class KL(ExtractorMetric):
    """Mean over paired clips of KL(reference || generated) of softmax(logits), in nats (av-benchmark)."""

    Params = KLParams
    name = "kl"
    needs_reference = True
    paired = True
    definition = "mean over clips paired by id of KL(softmax(ref logits) || softmax(gen logits)), nats"

    def reference_stats(self, clips: Sequence[MediaItem]) -> ReferenceStats:
        ids, logits = _logits(self, clips)
        return ReferenceStats(self.name, self.measurement(), len(ids), logits=logits, ids=ids,
                              source=f"reference clips {getattr(clips, 'source', '')}".strip())

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        ref = self.check_reference(reference)
        if ref.logits is None or ref.ids is None:
            raise SavaError(f"metric {self.name}: the reference statistics hold no per-clip logits")
        ids, gen = _logits(self, generated)
        index = {cid: i for i, cid in enumerate(ref.ids)}
        missing = [cid for cid in ids if cid not in index]
        if missing:
            raise SavaError(f"metric {self.name}: KL pairs clips by id, and the reference lacks "
                            f"{len(missing)} generated id(s): {', '.join(missing[:5])}")
        ref_logits = ref.logits[[index[cid] for cid in ids]]
        return Score({self.name: kl_divergence(ref_logits, gen)}, {
            **self.measurement(), "n_generated": len(ids), "n_reference": ref.n, "pairs": len(ids),
            "reference": ref.source,
        })


class ISC(ExtractorMetric):
    """Inception Score (mean and std over splits) of the generated clips' classifier logits."""

    Params = ISCParams
    name = "isc"
    definition = "Inception Score of softmax(logits), float64, torch-fidelity splits"

    def measurement(self) -> dict[str, Any]:
        return {**super().measurement(), "splits": self.params.splits, "seed": self.params.seed}

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        ids, logits = _logits(self, generated)
        if len(ids) < self.params.splits:
            raise SavaError(f"metric {self.name}: {len(ids)} clip(s) cannot make {self.params.splits} splits; "
                            f"set splits <= N")
        mean, std = inception_score(logits, splits=self.params.splits, seed=self.params.seed)
        return Score({self.name: mean, f"{self.name}_std": std}, {**self.measurement(), "n_generated": len(ids)})


class CosineMetric(ExtractorMetric):
    """Mean over clips of a per-clip cosine between two towers of one extractor, times ``scale``."""

    Params = CosineParams
    towers: ClassVar[tuple[str, str]]

    def __init__(self, params: CosineParams, *, registries: Registries):
        self.params, self.registries = params, registries
        self.extractor = self.build_extractor(tower=self.towers[0])
        self.partner = self.build_extractor(tower=self.towers[1])
        self.needs = frozenset({_NEEDS[self.extractor.modality], _NEEDS[self.partner.modality]})

    def measurement(self) -> dict[str, Any]:
        return {"metric": self.name, "definition": self.definition, "scale": self.params.scale,
                "extractor": {self.towers[0]: self.extractor.protocol(), self.towers[1]: self.partner.protocol()}}

    def clip_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """One clip's cosine from the two towers' rows."""
        raise NotImplementedError

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        a = self.extractor.features(generated, self.params.batch_size)
        b = self.partner.features(generated, self.params.batch_size)
        per_clip = [self.clip_score(fa.embeddings, fb.embeddings) for (_, fa), (_, fb) in zip(a, b)]
        if not per_clip:
            raise SavaError(f"metric {self.name}: no clips")
        mean = sum(per_clip) / len(per_clip)
        return Score({self.name: mean * self.params.scale}, {**self.measurement(), "n_generated": len(per_clip)})


class CLAPScore(CosineMetric):
    Params = CLAPScoreParams
    name = "clap_score"
    towers = ("audio", "text")
    definition = "mean over clips of cos(CLAP audio embedding, CLAP embedding of the clip's caption)"

    def clip_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return cosine_mean(a, b)


class AVHScore(CosineMetric):
    Params = AVHScoreParams
    name = "avhscore"
    towers = ("vision", "audio")
    definition = "JavisBench AVHScore: mean over clips of the mean over frames of cos(frame embedding, audio embedding)"

    def clip_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return framewise_cosine(a, b[0])


class CAVPSim(CosineMetric):
    Params = CAVPSimParams
    name = "cavp_sim"
    towers = ("video", "audio")
    definition = ("mean over clips of the mean over time steps (the first min(T_video, T_audio)) of "
                  "cos(video step, audio step); raw cosine in [-1, 1], times scale")

    def clip_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        t = min(a.shape[0], b.shape[0])
        return cosine_mean(a[:t], b[:t])
