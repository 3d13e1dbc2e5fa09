"""A small, reproducible trainer on Hugging Face Accelerate.

One code path for one CPU, one GPU, several GPUs (DDP) or FSDP (``accelerate launch``), with mixed
precision and gradient accumulation. Seeded batches, periodic validation, checkpoints through
Accelerate's state saving published atomically, exact resume, experiment tracking, and a clear stop
on a non-finite loss (the last good checkpoint is kept).

Checkpoints: ``<checkpoint_dir>/step-<N>/`` holds Accelerate's state and, written last (before the
directory is renamed into place), ``trainer.json`` with the step; a checkpoint is complete when its
``trainer.json`` names step N. ``latest`` names the newest complete one, but resume does not rely on
it: a kill between the rename and the pointer update leaves a complete checkpoint it does not name.

Reproducibility: the global batch of step k and the torch RNG used inside step k (dropout, noise)
are functions of (seed, k, micro-step, process) only, so a run resumed from a checkpoint at step k
continues exactly as the uninterrupted run would on the same hardware. Under n processes each one
takes every n-th example of the global batch, so the averaged gradient is that of the global batch.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sava_core.config import TrackingConfig, TrainConfig
from sava_core.errors import SavaError, TrainingDiverged
from sava_core.io import atomic_write_json, atomic_write_text
from sava_core.progress import progress

log = logging.getLogger("sava")

BatchFn = Callable[[Tensor], tuple[Tensor, ...]]
"""Example indices (B,) -> the objective's inputs for those examples."""

KEEP_CHECKPOINTS = 2


def step_seed(seed: int, step: int, micro: int = 0, process: int = 0) -> int:
    """The RNG seed of one (micro-)step on one process."""
    return (seed * 1_000_003 + step * 7_919 + micro * 104_729 + process * 15_485_863) % (2**63 - 1)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, -1 - epoch)))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Indices of global batch ``step``: epochs of seeded permutations of ``range(n)``."""
    per_epoch = max(n // batch_size, 1)
    epoch, within = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[within * batch_size : (within + 1) * batch_size]


class EventLog:
    """Append-only JSON-lines log of training events (one object per line); main process only."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **event: Any) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps(event, default=float) + "\n")


def make_accelerator(config: TrainConfig, *, cpu: bool, tracking: TrackingConfig | None = None,
                     tracking_dir: Path | None = None) -> Any:
    """An :class:`accelerate.Accelerator` for one training phase."""
    import accelerate.optimizer
    from accelerate import Accelerator

    # AcceleratedOptimizer.step asks importlib whether `lomo_optim` is installed twice per step
    # (accelerate 1.15), a file-system search costing about 1 ms; the answer cannot change.
    if not hasattr(accelerate.optimizer.is_lomo_available, "cache_info"):
        accelerate.optimizer.is_lomo_available = functools.lru_cache(maxsize=1)(accelerate.optimizer.is_lomo_available)

    log_with = None
    if tracking is not None and tracking.backend != "none":
        from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

        available = {
            "tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available
        }
        if not available[tracking.backend]():
            raise SavaError(
                f"tracking.backend: {tracking.backend} is not installed; `pip install {tracking.backend}` "
                "or set tracking.backend=none"
            )
        log_with = tracking.backend
    kwargs: dict[str, Any] = {}
    if config.mixed_precision is not None:
        kwargs["mixed_precision"] = config.mixed_precision
    try:
        return Accelerator(cpu=cpu, gradient_accumulation_steps=config.gradient_accumulation_steps,
                           log_with=log_with, project_dir=str(tracking_dir) if tracking_dir else None, **kwargs)
    except ValueError as exc:
        if "already been initialized" not in str(exc) or config.mixed_precision is None:
            raise
        from accelerate.state import AcceleratorState

        raise SavaError(
            f"mixed_precision: {config.mixed_precision} in a training phase that runs after one with "
            f"{AcceleratorState().mixed_precision} (a null value means Accelerate's default, `no`); Accelerate's "
            "mixed precision is process-wide, so give every training phase of the recipe the same value, or leave "
            "them all null and use `accelerate launch --mixed_precision ...`"
        ) from None


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                           num_processes: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``config.lr_schedule`` with ``config.warmup_steps`` (diffusers' schedules), over ``config.steps``
    updates. Accelerate advances a prepared scheduler once per process at each update, hence the
    step counts times ``num_processes``."""
    from diffusers.optimization import get_scheduler

    name = "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps * num_processes,
                         num_training_steps=config.steps * num_processes)


class Trainer:
    """Minimises ``objective(*batch)["loss"]`` over the objective's trainable parameters with AdamW.

    ``objective`` is an ``nn.Module`` whose forward returns named loss terms (tensors), ``"loss"``
    being the one minimised; it is what Accelerate wraps (DDP/FSDP), so all trainable maths must
    run inside its forward.
    """

    def __init__(
        self,
        objective: nn.Module,
        config: TrainConfig,
        *,
        seed: int,
        cpu: bool = False,
        checkpoint_dir: Path | None = None,
        events: EventLog | None = None,
        name: str = "train",
        tracking: TrackingConfig | None = None,
        tracking_dir: Path | None = None,
        hparams: dict[str, Any] | None = None,
    ):
        self.config, self.seed, self.name = config, seed, name
        self.accelerator = make_accelerator(config, cpu=cpu, tracking=tracking, tracking_dir=tracking_dir)
        self.checkpoint_dir = checkpoint_dir
        self.is_main = self.accelerator.is_main_process
        self.events = events if (events and self.is_main) else EventLog(None)
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.objective = objective
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            objective, optimizer, learning_rate_schedule(optimizer, config, self.accelerator.num_processes))
        self.step = 0
        self.last_val: dict[str, float] = {}
        self.tracking = tracking is not None and tracking.backend != "none"
        if self.tracking:
            self.accelerator.init_trackers(name, config=_flat_scalars(hparams or {}))

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    # -- one step ----------------------------------------------------------------------------

    def train_step(self, batch: BatchFn, n_train: int) -> dict[str, Tensor]:
        """One optimiser update (``gradient_accumulation_steps`` micro-batches of the global batch size).

        Raises :class:`TrainingDiverged` if the loss is not finite on any process."""
        acc, cfg = self.accelerator, self.config
        terms: dict[str, Tensor] = {}
        for micro in range(cfg.gradient_accumulation_steps):
            seed = step_seed(self.seed, self.step, micro, acc.process_index)
            torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it formats a stack trace per call
            if self.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            idx = batch_indices(n_train, cfg.batch_size, self.seed, self.step * cfg.gradient_accumulation_steps + micro)
            idx = idx[acc.process_index :: acc.num_processes]
            with acc.accumulate(self.model):
                terms = self.model(*batch(idx))
                finite = torch.isfinite(terms["loss"].detach()).reshape(1).float()
                if acc.num_processes > 1:
                    finite = acc.reduce(finite, reduction="sum") / acc.num_processes
                if float(finite) < 1:
                    self._diverged(terms)
                acc.backward(terms["loss"])
                if cfg.max_grad_norm is not None and acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return terms

    def _diverged(self, terms: dict[str, Tensor]) -> None:
        values = {k: float(v.detach()) for k, v in terms.items()}
        latest = self.latest_checkpoint()
        kept = f"The last good checkpoint is kept at {latest}." if latest else "No checkpoint had been written yet."
        self.events.write(event="diverged", phase=self.name, step=self.step, **values)
        raise TrainingDiverged(
            f"{self.name}: the loss became non-finite at step {self.step} ({values}). {kept} "
            "Lower the learning rate (e.g. align.train.lr) or the loss weights, then run again."
        )

    # -- the loop ----------------------------------------------------------------------------

    def fit(
        self,
        batch: BatchFn,
        n_train: int,
        *,
        validate: Callable[[nn.Module], dict[str, float]] | None = None,
        resume: bool = False,
    ) -> dict[str, float]:
        """Train for ``config.steps`` steps over ``n_train`` examples; returns the last validation (on a
        resume after the last step: the one its checkpoint recorded).

        ``validate(objective)`` gets the unwrapped objective in eval mode, without gradients."""
        cfg = self.config
        if resume and self.checkpoint_dir:
            if self.is_main:
                self.tidy_checkpoints()
            self.accelerator.wait_for_everyone()
            latest = self.latest_checkpoint()
            if latest:
                self.load(latest)
                self.events.write(event="resumed", phase=self.name, step=self.step)
        self.model.train()
        t0 = time.perf_counter()
        with progress(self.name, cfg.steps, start=self.step, enabled=self.is_main) as bar:
            while self.step < cfg.steps:
                terms = self.train_step(batch, n_train)
                bar.advance()
                done = self.step
                if done % cfg.val_every == 0 or done == cfg.steps:
                    self.last_val = self._validate(validate) if validate else {}
                    train_terms = {k: float(v.detach()) for k, v in terms.items()}
                    self.events.write(event="step", phase=self.name, step=done, train=train_terms, val=self.last_val,
                                      seconds=round(time.perf_counter() - t0, 3))
                    if self.tracking:
                        self.accelerator.log({**{f"train/{k}": v for k, v in train_terms.items()},
                                              **{f"val/{k}": v for k, v in self.last_val.items()}}, step=done)
                    bar.advance(0, loss=train_terms["loss"], **{f"val_{k}": v for k, v in self.last_val.items()})
                    if self.is_main:
                        log.info("%s step %d/%d loss %.4f val %s", self.name, done, cfg.steps,
                                 train_terms["loss"], {k: round(v, 4) for k, v in self.last_val.items()})
                if self.checkpoint_dir and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                    self.save()
        if self.tracking:
            self.accelerator.end_training()
        self.model.eval()
        return self.last_val

    def _validate(self, validate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            values = validate(self.objective)
        self.model.train()
        return values

    # -- checkpoints -------------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        """The complete checkpoint (see the module docstring) of this phase with the highest step, if any;
        found by listing ``step-*``, so a missing or stale ``latest`` pointer does not matter."""
        if not self.checkpoint_dir:
            return None
        steps = {p: n for p in self.checkpoint_dir.glob("step-*") if (n := _checkpoint_step(p)) is not None}
        return max(steps, key=steps.__getitem__, default=None)

    def tidy_checkpoints(self) -> None:
        """Remove what an interrupted :meth:`save` left (``.tmp-step-*`` directories, ``.latest.*.tmp``
        files) and point ``latest`` at the newest complete checkpoint. Main process, before resuming."""
        assert self.checkpoint_dir is not None
        for stray in [*self.checkpoint_dir.glob(".tmp-step-*"), *self.checkpoint_dir.glob(".latest.*.tmp")]:
            if stray.is_dir():
                shutil.rmtree(stray)
            else:
                stray.unlink()
            log.info("%s: removed %s, left by an interrupted checkpoint", self.name, stray)
        latest, pointer = self.latest_checkpoint(), self.checkpoint_dir / "latest"
        if latest and (not pointer.is_file() or pointer.read_text().strip() != latest.name):
            atomic_write_text(pointer, latest.name + "\n")

    def save(self) -> Path:
        """Save the Accelerate state (model as safetensors, optimiser, RNG), the step and the last validation.

        Written to a temporary directory (``trainer.json`` last), renamed into place, then ``latest`` is
        updated atomically: a crash while saving leaves the previous checkpoint usable."""
        assert self.checkpoint_dir is not None
        acc = self.accelerator
        final = self.checkpoint_dir / f"step-{self.step:08d}"
        tmp = self.checkpoint_dir / f".tmp-step-{self.step:08d}"
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if self.is_main:
            atomic_write_json(tmp / "trainer.json",
                              {"step": self.step, "phase": self.name, "seed": self.seed, "val": self.last_val})
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            atomic_write_text(self.checkpoint_dir / "latest", final.name + "\n")
            for old in sorted(self.checkpoint_dir.glob("step-*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save` (tensors via safetensors / weights-only loads)."""
        self.accelerator.load_state(str(path))
        record = json.loads((path / "trainer.json").read_text())
        self.step, self.last_val = int(record["step"]), record.get("val", {})


def _checkpoint_step(path: Path) -> int | None:
    """N when ``path`` is a complete checkpoint ``step-<N>`` (its ``trainer.json`` records step N), else None."""
    try:
        step = int(json.loads((path / "trainer.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if path.name == f"step-{step:08d}" else None


def _flat_scalars(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a/b": scalar} (what trackers accept as hyper-parameters)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flat_scalars(value, f"{name}/")
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out
