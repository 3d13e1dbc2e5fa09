"""MLP implementations of the Stage I components (paper section 5.1: "implemented as MLPs")."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sava_core.components.params import HardConcreteMaskParams, MaskParams, MLPParams
from sava_core.contracts import Adapter, Component, Decoder, Mask, Projector

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(in_dim: int, out_dim: int, params: MLPParams) -> nn.Sequential:
    """Linear layers of width ``params.hidden`` with activations between them; acts on the last axis."""
    dims = [in_dim] + [params.hidden] * (params.layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(_ACTIVATIONS[params.activation]())
            if params.dropout:
                layers.append(nn.Dropout(params.dropout))
    return nn.Sequential(*layers)


class _PerStepMLP(nn.Module, Component):
    """(B, T, in_dim) -> (B, T, out_dim) through :func:`mlp`; the body of the three MLP components."""

    Params = MLPParams
    params: MLPParams

    def __init__(self, params: MLPParams, *, in_dim: int, out_dim: int):
        super().__init__()
        self.params = params
        self.net = mlp(in_dim, out_dim, params)

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out


class MLPAdapter(_PerStepMLP, Adapter):
    """q_V / q_A: (B, T, in_dim) -> (B, T, out_dim)."""


class MLPDecoder(_PerStepMLP, Decoder):
    """g_A / g_V: masked latent (B, T, in_dim) -> partner target (B, T, out_dim)."""


class MLPProjector(_PerStepMLP, Projector):
    """P_theta: video encoder latent (B, T, in_dim) -> audio-guiding latent (B, T, out_dim)."""


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, soft: Tensor, threshold: float) -> Tensor:
        return (soft > threshold).to(soft.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(soft: Tensor, threshold: float) -> Tensor:
    """Forward: exactly ``soft > threshold`` as 0/1. Backward: the gradient of ``soft`` (straight-through)."""
    return _StraightThrough.apply(soft, threshold)


class MLPMask(Mask):
    """M: sigmoid(MLP(input)) per time step, input = own (``video_only``), [own; partner] (``joint``)
    or [own; R(own)] (``predicted``).

    ``predicted`` is a joint mask that cannot leak: R, a per-step MLP, is trained (by
    :meth:`auxiliary_loss`, on detached latents) to predict the partner's aligned latent from the
    own one, and the mask reads that prediction instead of the partner. The mask is then a function
    of its own modality only, so its output carries none of the partner's own content, whatever the
    training does, and P_theta can reproduce the masked video latent from the video alone; the
    partner still shapes it, through what R learns of it.

    (own, partner): (B, T, d) each -> (B, T, d) in [0, 1]; exactly {0, 1} when ``hard``.
    """

    Params = MaskParams
    params: MaskParams

    def __init__(self, params: MaskParams, *, dim: int):
        super().__init__()
        self.params = params
        self.mode, self.hard, self.threshold = params.mode, params.hard, params.threshold
        self.is_identity, self.uses_partner = params.mode == "none", params.mode == "joint"
        self.net: nn.Module | None = None
        if params.mode != "none":
            in_dim = dim * (1 if params.mode == "video_only" else 2)
            first, last = nn.Linear(in_dim, params.hidden), nn.Linear(params.hidden, dim)  # in this order: seeded init
            nn.init.constant_(last.bias, params.init_open)
            self.net = nn.Sequential(first, nn.GELU(), last)
        self.predictor: nn.Module | None = None
        if params.mode == "predicted":
            self.predictor = nn.Sequential(nn.Linear(dim, params.predictor_hidden), nn.GELU(),
                                           nn.Linear(params.predictor_hidden, dim))

    def _partner(self, partner: Tensor) -> Tensor:
        p = self.params
        if p.partner_stop_grad:
            partner = partner.detach()
        if self.training and p.partner_noise > 0:
            partner = partner + p.partner_noise * partner.detach().std() * torch.randn_like(partner)
        if self.training and p.partner_dropout > 0:
            keep = (torch.rand(partner.shape[0], 1, 1, device=partner.device) >= p.partner_dropout).to(partner.dtype)
            partner = partner * keep
        return partner

    def predicted_partner(self, own: Tensor) -> Tensor:
        """R(own): the ``predicted`` mask's estimate of the partner's aligned latent, (B, T, d), detached."""
        assert self.predictor is not None
        out: Tensor = self.predictor(own.detach())
        return out.detach()

    def forward(self, own: Tensor, partner: Tensor) -> Tensor:
        if self.net is None:
            return own.new_ones(own.shape)
        if self.mode == "video_only":
            x = own
        elif self.mode == "predicted":
            x = torch.cat([own, self.predicted_partner(own)], dim=-1)
        else:
            x = torch.cat([own, self._partner(partner)], dim=-1)
        soft = self.net(x).sigmoid()
        return straight_through(soft, self.params.threshold) if self.hard else soft

    def auxiliary_loss(self, own: Tensor, partner: Tensor) -> Tensor | None:
        """``predicted``: R's squared error (summed over d, mean over tokens) against the detached
        partner, from the detached own latent: it trains R alone. Other modes: None."""
        if self.predictor is None:
            return None
        return (self.predictor(own.detach()) - partner.detach()).pow(2).sum(-1).mean()



class HardConcreteMask(Mask):
    """M as stretched hard-concrete gates, an L0 mask (Louizos et al., 2018): log-odds
    ``log_alpha = MLP(input)`` per time step, input = own (``video_only``) or [own; partner] (``joint``).

    Training draws u ~ U(0, 1) per entry: ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``,
    stretched to (gamma, zeta) and clipped to [0, 1], so gates are exactly 0 or 1 with positive
    probability and have a gradient in between. Eval mode uses the deterministic
    ``clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``. The regulariser is the expected
    fraction of non-zero gates, ``mean sigmoid(log_alpha - beta log(-gamma / zeta))``, in [0, 1] as
    the default density is. (own, partner): (B, T, d) each -> (B, T, d) in [0, 1].
    """

    Params = HardConcreteMaskParams
    params: HardConcreteMaskParams

    def __init__(self, params: HardConcreteMaskParams, *, dim: int):
        super().__init__()
        self.params = params
        self.uses_partner = params.mode == "joint"
        self.beta = params.temperature
        self.gamma, self.zeta = params.stretch
        in_dim = dim * (2 if self.uses_partner else 1)
        first, last = nn.Linear(in_dim, params.hidden), nn.Linear(params.hidden, dim)
        nn.init.constant_(last.bias, params.init_open)
        self.net = nn.Sequential(first, nn.GELU(), last)

    def log_alpha(self, own: Tensor, partner: Tensor) -> Tensor:
        """The gates' log-odds (B, T, d)."""
        if not self.uses_partner:
            return self.net(own)
        if self.params.partner_stop_grad:
            partner = partner.detach()
        return self.net(torch.cat([own, partner], dim=-1))

    def forward(self, own: Tensor, partner: Tensor) -> Tensor:
        log_alpha = self.log_alpha(own, partner)
        if self.training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / self.beta)
        else:
            s = torch.sigmoid(log_alpha)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def open_probability(self, own: Tensor, partner: Tensor) -> Tensor:
        """P(gate != 0) per entry (B, T, d): the L0 norm's expectation, entry by entry."""
        return torch.sigmoid(self.log_alpha(own, partner) - self.beta * math.log(-self.gamma / self.zeta))

    def regulariser(self, own: Tensor, partner: Tensor, weights: Tensor) -> Tensor:
        """Expected fraction of open gates (the L0 penalty divided by d, mean over tokens)."""
        return self.open_probability(own, partner).mean()

    @torch.no_grad()
    def audit_values(self, own: Tensor, partner: Tensor) -> dict[str, float]:
        """``l0_expected``: expected fraction of open gates; ``closed_exact``: fraction of eval-mode
        weights exactly 0; ``open_exact``: exactly 1."""
        w = self(own, partner)
        return {"l0_expected": float(self.open_probability(own, partner).double().mean()),
                "closed_exact": float((w == 0).double().mean()), "open_exact": float((w == 1).double().mean())}
