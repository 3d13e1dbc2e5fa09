"""Progress of the loops a user waits for (training phases, latent encoding, sampling, checks).

On a terminal: a rich progress bar (description, bar, done/total, rate, elapsed, time left and the
loop's own fields, e.g. the loss). Elsewhere (CI, ``> log``): one plain line on stderr every
``SAVA_PROGRESS_SECONDS`` seconds (default 30) and one when the loop ends. Nothing with
:func:`set_quiet` (``sava --quiet``, or ``SAVA_QUIET=1``), and nothing in processes other than the
main one of a distributed run. Progress goes to stderr, so stdout keeps only results.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_settings: dict[str, Any] = {"quiet": os.environ.get("SAVA_QUIET", "") not in ("", "0")}


def set_quiet(quiet: bool) -> None:
    """Show no progress at all (errors and results are still printed)."""
    _settings["quiet"] = quiet


def is_main_process() -> bool:
    """Whether this is the main process of an ``accelerate launch`` (read from the launcher's environment)."""
    return os.environ.get("RANK", "0") in ("", "0") and os.environ.get("LOCAL_RANK", "0") in ("", "0")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fields_text(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class Progress:
    """One loop's progress: call :meth:`advance` after each step (with fields to show, e.g. ``loss=...``)."""

    def __init__(self, description: str, total: int | None, unit: str, start: int = 0):
        self.description, self.total, self.unit = description, total, unit
        self.done, self.fields = start, dict[str, Any]()
        self._start_done, self._t0 = start, time.monotonic()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update(fields)

    def rate(self) -> float:
        """Steps per second since the loop started (steps done before a resume do not count)."""
        elapsed = time.monotonic() - self._t0
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """``description: 250/1500 steps (17%), 12.3 steps/s, 1m40s elapsed, 1m42s left, loss 1.23``."""
        rate, elapsed = self.rate(), time.monotonic() - self._t0
        parts = [f"{self.done}/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%)"
                 if self.total else f"{self.done} {self.unit}s"]
        parts.append(f"{rate:.3g} {self.unit}s/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"{_duration((self.total - self.done) / rate)} left")
        if self.fields:
            parts.append(_fields_text(self.fields))
        return f"{self.description}: " + ", ".join(parts)


class _Lines(Progress):
    """Plain periodic lines (not a terminal)."""

    def __init__(self, description: str, total: int | None, unit: str, start: int, stream: TextIO, every: float):
        super().__init__(description, total, unit, start)
        self.stream, self.every, self._last = stream, every, time.monotonic()

    def advance(self, n: int = 1, **fields: Any) -> None:
        super().advance(n, **fields)
        now = time.monotonic()
        if now - self._last >= self.every and self.done != self.total:  # the last line comes at the end
            self._last = now
            print(self.line(), file=self.stream, flush=True)


class _Bar(Progress):
    """A rich progress bar (a terminal)."""

    def __init__(self, description: str, total: int | None, unit: str, start: int, bar: Any):
        super().__init__(description, total, unit, start)
        self.bar = bar
        self.task = bar.add_task(description, total=total, completed=start, fields="")

    def advance(self, n: int = 1, **fields: Any) -> None:
        super().advance(n, **fields)
        self.bar.update(self.task, advance=n, fields=_fields_text(self.fields))


@contextmanager
def progress(description: str, total: int | None, unit: str = "step", start: int = 0,
             stream: TextIO | None = None, enabled: bool = True) -> Iterator[Progress]:
    """Show the progress of a loop of ``total`` ``unit`` s (None: unknown), ``start`` of them
    already done (a resumed phase); ``enabled=False`` (e.g. not the main process) shows nothing."""
    stream = stream or sys.stderr
    if not enabled or _settings["quiet"] or not is_main_process():
        yield Progress(description, total, unit, start)
        return
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn(f"{unit}s"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                   TextColumn("{task.fields[fields]}"))
        with RichProgress(*columns, console=Console(file=stream), transient=False) as bar:
            yield _Bar(description, total, unit, start, bar)
        return
    every = float(os.environ.get("SAVA_PROGRESS_SECONDS", "30"))
    lines = _Lines(description, total, unit, start, stream, every)
    yield lines
    print(lines.line() + " (done)", file=stream, flush=True)
