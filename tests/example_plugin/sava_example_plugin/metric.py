"""An audio metric: the gap in loudness between generated clips and a reference set."""

import math
from collections.abc import Sequence
from typing import Any

import torch

from sava_core.clips import MediaItem
from sava_core.contracts import Metric, Score
from sava_core.protocol import ReferenceStats, require_same_protocol
from sava_example_plugin.params import LoudnessGapParams


def loudness_db(audio: torch.Tensor, floor_db: float) -> float:
    """RMS level of a clip (C, S) in dB relative to full scale (a full-scale square wave is 0 dB),
    not below ``floor_db``."""
    rms = audio.double().pow(2).mean().sqrt().item()
    return max(20.0 * math.log10(rms), floor_db) if rms > 0 else floor_db


class LoudnessGap(Metric):
    """``loudness_gap``: |mean level of the generated clips - mean level of the reference clips|, dB;
    ``loudness_db``: the generated clips' mean level, dB FS."""

    Params = LoudnessGapParams
    needs = frozenset({"audio"})
    needs_reference = True

    def __init__(self, params: LoudnessGapParams, *, registries: Any):
        self.params = params

    def protocol(self) -> dict[str, Any]:
        return {"metric": "loudness_gap", "definition": "RMS level in dB FS, mean over clips",
                "floor_db": self.params.floor_db}

    def levels(self, clips: Sequence[MediaItem]) -> torch.Tensor:
        """Per-clip levels (N, 1), dB FS."""
        return torch.tensor([[loudness_db(c.audio, self.params.floor_db)] for c in clips], dtype=torch.float64)

    def reference_stats(self, clips: Sequence[MediaItem]) -> ReferenceStats:
        rows = self.levels(clips)
        return ReferenceStats("loudness_gap", self.protocol(), len(rows), rows=rows,
                              source=f"reference clips {getattr(clips, 'source', '')}".strip())

    def compute(self, generated: Sequence[MediaItem], reference: ReferenceStats | None = None) -> Score:
        require_same_protocol(reference.protocol, self.protocol(), "loudness_gap: reference statistics",
                              ("reference", "this run"))
        gen = self.levels(generated)
        level = gen.mean().item()
        return Score({"loudness_gap": abs(level - reference.rows.mean().item()), "loudness_db": level},
                     {**self.protocol(), "n_generated": len(gen), "n_reference": reference.n})
