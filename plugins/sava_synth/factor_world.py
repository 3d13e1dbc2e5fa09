"""A factor world: latent factors with known groups, entangled into frozen encoder latents."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sava_core.contracts import Dataset, LatentSplit
from sava_synth.params import FactorWorldParams


class FactorWorld(Dataset):
    """Clips of ``length`` steps; ``latents(split)`` gives video/audio latents (N, L, d) and factors.

    Factors (unit variance): ``shared`` (N, L, n_shared), ``video`` (N, L, n_video), ``audio``
    (N, L, n_audio). The splits are disjoint clips of one seeded draw.
    """

    Params = FactorWorldParams

    def __init__(self, params: FactorWorldParams):
        self.params = params
        self._splits = self._generate()

    def latents(self, split: str) -> LatentSplit:
        if split not in self._splits:
            raise KeyError(f"factor_world has splits {list(self._splits)}, not {split!r}")
        return self._splits[split]

    # -- generation ------------------------------------------------------------------------

    def _generate(self) -> dict[str, LatentSplit]:
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        sizes = {"shared": p.n_shared, "video": p.n_video, "audio": p.n_audio}
        k = sum(sizes.values())
        n = p.n_train + p.n_val + p.n_test

        # Eq. 1: z_t = A z_{t-1} + innovation; A = persistence * I + coupling * (cross-group mixing)
        cross = torch.randn(k, k, generator=g) / math.sqrt(k)
        group = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes.values())])
        cross[group[:, None] == group[None, :]] = 0.0
        a = p.persistence * torch.eye(k) + p.coupling * cross
        z = torch.empty(n, p.length, k)
        state = torch.randn(n, k, generator=g)
        for t in range(p.length):
            state = state @ a.T + math.sqrt(1 - p.persistence**2) * torch.randn(n, k, generator=g)
            z[:, t] = state
        z = (z - z.mean((0, 1))) / z.std((0, 1))
        shared, video, audio = torch.split(z, list(sizes.values()), dim=-1)

        # Eq. 2: X_V <- {Z_V, Z_C}, X_A <- {Z_A, Z_C} through fixed random entangling maps
        xv = self._entangle(torch.cat([shared, video], -1), g)
        xa = self._entangle(torch.cat([shared, audio], -1), g)

        bounds = {"train": (0, p.n_train), "val": (p.n_train, p.n_train + p.n_val), "test": (p.n_train + p.n_val, n)}
        return {
            name: LatentSplit(
                video=xv[lo:hi].contiguous(),
                audio=xa[lo:hi].contiguous(),
                factors={"shared": shared[lo:hi], "video": video[lo:hi], "audio": audio[lo:hi]},
            )
            for name, (lo, hi) in bounds.items()
        }

    def _entangle(self, factors: Tensor, g: torch.Generator) -> Tensor:
        """A random ``depth``-layer tanh network (N, L, k) -> (N, L, d), standardised, plus noise."""
        p = self.params
        h = factors
        for _ in range(p.depth):
            w = torch.randn(h.shape[-1], p.d, generator=g) / math.sqrt(h.shape[-1])
            b = 0.5 * torch.randn(p.d, generator=g)
            pre = h @ w + b
            h = torch.tanh(p.strength * pre) / max(p.strength, 1e-6) if p.strength > 0 else pre
            h = (h - h.mean((0, 1))) / (h.std((0, 1)) + 1e-8)
        return h + p.noise * torch.randn(h.shape, generator=g)
