"""Benchmark protocols for ``sava eval --protocol NAME``: a benchmark's column set with its pinned
settings, so that one command reproduces the columns of a published table.

An :class:`EvalProtocol` is registered like any component (kind ``eval_protocol``, no parameters)
and is only data: the metrics (in ``--metric`` syntax) with the extractor settings the benchmark
pins (sample rates, clip lengths, frame rates and sizes), the weight files they read, the source it
follows, and the benchmark's columns sava does not compute. Torch-free, so ``sava list`` stays light.

Weights: every ``{slot}`` in a metric spec is the file ``weights[slot]`` in the folder given with
``--weights``; a ``SHA256SUMS`` file there (``sha256sum`` output, paths relative to the folder; for a
model folder, the one weights file inside it) pins each file's hash (``extractor_params.sha256``),
checked by the extractor before loading.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sava_core.errors import SavaError

#: The name of the checksum file read from the weights folder (``sha256sum FILES > SHA256SUMS``).
CHECKSUMS = "SHA256SUMS"
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Column:
    """One column of a benchmark: its ``label`` (the benchmark's own name for it) and the sava metric
    that computes it, as a ``--metric`` spec whose ``{slot}`` placeholders name weight files."""

    label: str
    spec: str


class EvalProtocol(ABC):
    """A benchmark's column set (kind ``eval_protocol``).

    ``summary``: one line; ``source``: the code it follows (repository, commit, files);
    ``settings``: what it pins (rates in Hz or fps, lengths in s, sizes in px), for the record;
    ``columns``: the metrics; ``weights``: slot -> released file name; ``not_in_sava``: the
    benchmark's columns sava does not compute -> why.
    """

    summary: ClassVar[str]
    source: ClassVar[str]
    settings: ClassVar[dict[str, Any]]
    columns: ClassVar[tuple[Column, ...]]
    weights: ClassVar[dict[str, str]]
    not_in_sava: ClassVar[dict[str, str]] = {}

    def record(self, name: str) -> dict[str, Any]:
        """What a results document says of the protocol it ran under."""
        return {"name": name, "source": self.source, "settings": dict(self.settings),
                "columns": [c.label for c in self.columns], "not_in_sava": dict(self.not_in_sava)}

    def metric_specs(self, name: str, weights_dir: str | Path, replaced: Collection[str] = ()) -> dict[str, str]:
        """Column label -> its ``--metric`` spec, for every column not in ``replaced``, with ``label=``
        set and the weight slots filled from ``weights_dir`` (each file's sha256 from its ``SHA256SUMS``
        when listed there). Missing weight files are one error listing them all."""
        folder = Path(weights_dir).expanduser()
        sums = read_checksums(folder / CHECKSUMS)
        specs: dict[str, str] = {}
        missing = []
        for column in self.columns:
            if column.label in replaced:
                continue
            words = [f"label={shlex.quote(column.label)}"]
            for slot in dict.fromkeys(_SLOT.findall(column.spec)):
                if slot not in self.weights:
                    raise SavaError(f"eval_protocol {name}: column {column.label} names an unknown weight slot "
                                    f"{{{slot}}}")
                file = self.weights[slot]
                if not (folder / file).exists():  # a file, or a model folder (CLAP)
                    missing.append(f"{file} ({column.label})")
                digest = sums.get(file) or _folder_weights(sums, file)
                if digest:
                    words.append(f"extractor_params.sha256={digest}")
            spec = _SLOT.sub(lambda m: shlex.quote(str(folder / self.weights[m.group(1)])), column.spec)
            specs[column.label] = " ".join([spec, *words])
        if missing:
            raise SavaError(f"--protocol {name}: {folder} lacks {', '.join(missing)}; put the released files there "
                            "(docs/metrics.md, \"Weights\"), point --weights at their folder, or replace a column with "
                            "--metric 'NAME label=COLUMN ...'")
        return specs


def read_checksums(path: Path) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <file>`` per line, ``*`` marking binary mode) -> file name -> hex;
    empty when ``path`` does not exist."""
    if not path.is_file():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, file = line.strip().partition(" ")
        file = file.strip().lstrip("*")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest) or not file:
            raise SavaError(f"{path}:{number}: not a sha256sum line ('<64 hex digits>  <file name>'): {line!r}")
        sums[file.removeprefix("./")] = digest.lower()
    return sums


def _folder_weights(sums: dict[str, str], folder: str) -> str | None:
    """The hash of the one weights file listed inside ``folder`` (a model folder such as CLAP's), if any."""
    inside = [d for f, d in sums.items() if f.startswith(f"{folder}/") and f.endswith((".safetensors", ".bin"))]
    return inside[0] if len(inside) == 1 else None
