"""One Stage I training step: the framework (recipe-built AlignModel + Accelerate Trainer.train_step) against a
minimal hand-written PyTorch loop doing the same computation on the same batch, in the same run.

Both use the same initial weights, the same batch and the same AdamW settings; the hand-written
loop spells out the per-step MLPs, the joint hard mask with a straight-through estimator and Eq. 7.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402


def _framework(batch_size: int):
    from sava_core.alignment import AlignModel, load_latents
    from sava_core.losses import AlignObjective
    from sava_core.recipe import plan
    from sava_core.registry import get_registries
    from sava_core.training import Trainer

    repo = Path(__file__).parent.parent
    recipe = plan(repo / "recipes" / "align_quickstart.yaml").cells[-1].recipe  # joint hard mask
    registries = get_registries()
    data = load_latents(recipe, registries, torch.device("cpu"))["train"]
    torch.manual_seed(0)
    model = AlignModel(recipe, registries, data.video.shape[-1], data.audio.shape[-1])
    alpha, lam = recipe.align.loss.alpha, recipe.align.loss.lam
    trainer = Trainer(AlignObjective(model, alpha, lam), recipe.align.train, seed=0, cpu=True)
    idx = torch.arange(batch_size)
    xv, xa = data.video[idx], data.audio[idx]
    batch = lambda i: (xv, xa)  # noqa: E731  (the same batch every step, as in the minimal loop)
    return model, trainer, batch, len(data), (xv, xa, alpha, lam, recipe.align.train.lr)


def _minimal(model: nn.Module, xv, xa, alpha: float, lam: float, lr: float) -> Callable[[], None]:
    """The same computation written by hand, with copies of the framework's initial weights."""

    def copy(seq: nn.Module) -> nn.Sequential:
        layers = [m for m in seq.modules() if isinstance(m, (nn.Linear, nn.GELU))]
        out = nn.Sequential(
            *[nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else nn.GELU() for m in layers]
        )
        out.load_state_dict(
            {k: v for k, v in zip(out.state_dict(), [p.detach().clone() for m in layers for p in m.parameters()])}
        )
        return out

    q_v, q_a, m_v, m_a, g_a, g_v = (copy(getattr(model, n).net) for n in ("q_v", "q_a", "m_v", "m_a", "g_a", "g_v"))
    params = [p for net in (q_v, q_a, m_v, m_a, g_a, g_v) for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def hard(logits: torch.Tensor) -> torch.Tensor:
        soft = logits.sigmoid()
        return soft + ((soft > 0.5).float() - soft).detach()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        zv, za = q_v(xv), q_a(xa)
        mv, ma = hard(m_v(torch.cat([zv, za], -1))), hard(m_a(torch.cat([za, zv], -1)))
        rec_a = (g_a(mv * zv) - xa).pow(2).sum(-1).mean()
        rec_v = (g_v(ma * za) - xv).pow(2).sum(-1).mean()
        nv, na = zv / (zv.norm(dim=-1, keepdim=True) + 1e-8), za / (za.norm(dim=-1, keepdim=True) + 1e-8)
        loss = rec_a + rec_v + alpha * (nv - na).pow(2).sum(-1).mean() + lam * (mv.mean() + ma.mean())
        loss.backward()
        opt.step()

    return step


def _time(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        samples.append((time.perf_counter() - t0) / 10)
    return statistics.median(samples)


def main(out_dir: Path, batch_size: int = 64, repeats: int = 30) -> dict[str, Any]:
    torch.set_num_threads(1)
    model, trainer, batch, n_train, (xv, xa, alpha, lam, lr) = _framework(batch_size)
    minimal = _minimal(model, xv, xa, alpha, lam, lr)
    framework = lambda: trainer.train_step(batch, n_train)  # noqa: E731
    # interleave the two so that machine noise hits both alike
    f_times, m_times = [], []
    for _ in range(5):
        f_times.append(_time(framework, repeats // 5))
        m_times.append(_time(minimal, repeats // 5))
    f, m = statistics.median(f_times), statistics.median(m_times)
    result = {
        "benchmark": "stage1_train_step",
        "batch_size": batch_size,
        "tokens_per_batch": int(xv.shape[0] * xv.shape[1]),
        "framework_ms": round(f * 1e3, 4),
        "minimal_loop_ms": round(m * 1e3, 4),
        "ratio_framework_over_minimal": round(f / m, 3),
        "target_ratio_at_most": 1.15,
        "machine": machine(),
    }
    atomic_write_json(out_dir / "stage1_step.json", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(__file__).parent / "results"), indent=2))
