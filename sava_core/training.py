"""A small, reproducible trainer: seeded batches, periodic validation, safetensors checkpoints,
exact resume, and a clear stop on a non-finite loss (the last good checkpoint is kept).

Reproducibility: the batch of step k and the global torch RNG used inside step k (dropout, noise)
are both functions of (seed, k) only, so a run resumed from a checkpoint at step k continues
exactly as the uninterrupted run would on the same device.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sava_core.config import TrainConfig
from sava_core.errors import TrainingDiverged
from sava_core.io import atomic_write_with

log = logging.getLogger("sava")

LossFn = Callable[[Tensor], dict[str, Tensor]]
"""Batch indices (B,) -> named loss terms; ``"loss"`` is the one minimised."""


def step_seed(seed: int, step: int) -> int:
    """The RNG seed of one training step."""
    return (seed * 1_000_003 + step * 7_919) % (2**63 - 1)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Indices of step ``step``'s batch: epochs of seeded permutations of ``range(n)``."""
    per_epoch = max(n // batch_size, 1)
    epoch, within = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, -1 - epoch)))
    return perm[within * batch_size : (within + 1) * batch_size]


class EventLog:
    """Append-only JSON-lines log of training events (one object per line)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **event: Any) -> None:
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(event, default=float) + "\n")


class Trainer:
    """Optimises ``module`` (its parameters with ``requires_grad``) with AdamW on a :data:`LossFn`."""

    def __init__(
        self,
        module: nn.Module,
        config: TrainConfig,
        *,
        seed: int,
        checkpoint: Path | None = None,
        events: EventLog | None = None,
        name: str = "train",
    ):
        self.module, self.config, self.seed, self.name = module, config, seed, name
        self.checkpoint = checkpoint
        self.events = events or EventLog(None)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0

    # -- one step ----------------------------------------------------------------------------

    def train_step(self, loss_fn: LossFn, idx: Tensor) -> dict[str, Tensor]:
        """Forward, backward and update on batch ``idx``; raise :class:`TrainingDiverged` if not finite."""
        torch.manual_seed(step_seed(self.seed, self.step))
        self.optimizer.zero_grad(set_to_none=True)
        terms = loss_fn(idx)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            self._diverged(terms)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return terms

    def _diverged(self, terms: dict[str, Tensor]) -> None:
        values = {k: float(v.detach()) for k, v in terms.items()}
        kept = (
            f"The last good checkpoint is kept at {self.checkpoint}."
            if self.checkpoint and self.checkpoint.exists()
            else "No checkpoint had been written yet."
        )
        self.events.write(event="diverged", phase=self.name, step=self.step, **values)
        raise TrainingDiverged(
            f"{self.name}: the loss became non-finite at step {self.step} ({values}). {kept} "
            "Lower the learning rate (e.g. align.train.lr) or the loss weights, then run again."
        )

    # -- the loop ----------------------------------------------------------------------------

    def fit(
        self,
        loss_fn: LossFn,
        n_train: int,
        *,
        validate: Callable[[], dict[str, float]] | None = None,
        resume: bool = False,
    ) -> dict[str, float]:
        """Train for ``config.steps`` steps over ``n_train`` examples; returns the last validation."""
        cfg = self.config
        if resume and self.checkpoint and self.checkpoint.exists():
            self.load(self.checkpoint)
            self.events.write(event="resumed", phase=self.name, step=self.step)
        self.module.train()
        last_val: dict[str, float] = {}
        show = sys.stderr.isatty()
        t0 = time.perf_counter()
        with _progress(show, f"{self.name}", cfg.steps, self.step) as advance:
            while self.step < cfg.steps:
                idx = batch_indices(n_train, cfg.batch_size, self.seed, self.step)
                terms = self.train_step(loss_fn, idx)
                advance()
                done = self.step
                if done % cfg.val_every == 0 or done == cfg.steps:
                    last_val = self._validate(validate) if validate else {}
                    train_terms = {k: float(v.detach()) for k, v in terms.items()}
                    self.events.write(event="step", phase=self.name, step=done, train=train_terms, val=last_val,
                                      seconds=round(time.perf_counter() - t0, 3))
                    if not show:
                        log.info("%s step %d/%d loss %.4f val %s", self.name, done, cfg.steps,
                                 train_terms["loss"], {k: round(v, 4) for k, v in last_val.items()})
                if self.checkpoint and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                    self.save(self.checkpoint)
        self.module.eval()
        return last_val

    def _validate(self, validate: Callable[[], dict[str, float]]) -> dict[str, float]:
        self.module.eval()
        with torch.no_grad():
            values = validate()
        self.module.train()
        return values

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write module, optimiser state and step to one safetensors file, atomically."""
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.module.state_dict().items()}
        for i, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).contiguous()
        meta = {"step": str(self.step), "phase": self.name, "seed": str(self.seed)}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save`."""
        from safetensors import safe_open

        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        self.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = value
        sd = self.optimizer.state_dict()
        sd["state"] = state
        self.optimizer.load_state_dict(sd)
        self.step = int(meta["step"])


class _progress:
    """A rich progress bar when attached to a terminal; a no-op otherwise."""

    def __init__(self, show: bool, desc: str, total: int, start: int):
        self.show, self.desc, self.total, self.start = show, desc, total, start
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), transient=True)
        self._bar.start()
        task = self._bar.add_task(self.desc, total=self.total, completed=self.start)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
