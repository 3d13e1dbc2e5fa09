"""Errors a user can cause. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

from dataclasses import dataclass


class SavaError(Exception):
    """A mistake the user can fix (bad recipe, unknown name, missing file).

    The message says what is wrong, where, and what to do.
    """


@dataclass(frozen=True)
class Problem:
    """One validation problem: a dotted YAML path (``model.mask.params.hard``) and a message."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class RecipeError(SavaError):
    """Every problem found in a recipe, reported at once."""

    def __init__(self, problems: list[Problem], source: str = "recipe"):
        self.problems = problems
        self.source = source
        lines = [f"{source}: {len(problems)} problem(s)"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class UnknownComponentError(SavaError):
    """A component name that no loaded plugin registered."""

    def __init__(self, kind: str, name: str, available: list[str], close: list[str], failed: list[str] | None = None):
        self.kind, self.name, self.available, self.close = kind, name, available, close
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(available) if available else "(none registered)"
        broken = (f" Plug-ins that failed to load may have held it: {'; '.join(failed)} (see `sava plugins`)."
                  if failed else "")
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {listing}.{broken}")


class DuplicateComponentError(SavaError):
    """Two plugins registered the same name for the same kind."""


class TrainingDiverged(SavaError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""
