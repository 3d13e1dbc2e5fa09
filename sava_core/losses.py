"""The objectives of every stage: Stage I (Eq. 7), P_theta's regression, Stage II (Eq. 8).

Each objective is also an ``nn.Module`` whose forward returns named loss terms (``"loss"`` is the
one minimised): what :class:`sava_core.training.Trainer` optimises and Accelerate wraps.

Stage I (Eq. 7) and how each term is normalised.

For latent sequences of B clips and T steps ("tokens" = B*T):

* reconstruction l_A, l_V: squared error **summed over the target's feature dimensions**, averaged
  over tokens. Targets are frozen-encoder latents; with standardised targets a useless predictor
  scores about D_target (the target width) and a perfect one 0.
* alignment L_align: ``|| z_v/|z_v| - z_a/|z_a| ||^2`` per token (in [0, 4]), averaged over tokens:
  the normalised L2 between the **unmasked** aligned latents.
* sparsity: each mask's :meth:`~sava_core.contracts.Mask.regulariser`, by default the L1 norm of
  the mask **divided by its width d** (its density, in [0, 1]), averaged over tokens, for M_V and
  M_A (an L0 mask uses its expected fraction of open gates instead, on the same [0, 1] scale).

So, by default, ``total = l_A + l_V + alpha * L_align + lam * (density(M_V) + density(M_A))``: with the paper's
lam = 5, keeping a whole mask open costs 5 squared-error units, i.e. each of d dimensions costs
5/d units and survives only if it lowers the summed reconstruction error of its partner by more.
That makes lam = 5 and alpha = 0.1 meaningful defaults whatever d and the target width are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sava_core.contracts import Condition
from sava_core.errors import SavaError

if TYPE_CHECKING:
    from sava_core.alignment import AlignModel


def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over features, mean over tokens. (B, T, D) x2 -> scalar."""
    return (prediction - target).pow(2).sum(-1).mean()


def alignment_loss(zv: Tensor, za: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalised L2 between unmasked aligned latents, mean over tokens. (B, T, d) x2 -> scalar."""
    nv = zv / (zv.norm(dim=-1, keepdim=True) + eps)
    na = za / (za.norm(dim=-1, keepdim=True) + eps)
    return (nv - na).pow(2).sum(-1).mean()


def mask_density(mask: Tensor) -> Tensor:
    """L1 norm of a mask (B, T, d) in [0, 1] divided by d, mean over tokens -> scalar in [0, 1]."""
    return mask.abs().mean()


def stage1_loss(
    *,
    xv: Tensor,
    xa: Tensor,
    xv_hat: Tensor,
    xa_hat: Tensor,
    zv: Tensor,
    za: Tensor,
    mv: Tensor | None,
    ma: Tensor | None,
    alpha: float,
    lam: float,
    sparsity: Tensor | None = None,
    auxiliary: Tensor | None = None,
) -> dict[str, Tensor]:
    """Eq. 7. ``xa_hat = g_A(M_V * z_v)``, ``xv_hat = g_V(M_A * z_a)``; masks None for the ``none``
    variant (no sparsity term). ``sparsity``: the sum of the two masks' regularisers (default: the
    sum of their densities). ``auxiliary``: the masks' own losses (:meth:`Mask.auxiliary_loss`),
    added unweighted. Returns every term (``density``: the masks' mean density, logged whatever
    the regulariser; ``sparsity``: half the regularisers' sum, when one is given; ``mask_aux``)
    and ``loss``, the total."""
    terms = {
        "rec_a": reconstruction_loss(xa_hat, xa),
        "rec_v": reconstruction_loss(xv_hat, xv),
        "align": alignment_loss(zv, za),
    }
    loss = terms["rec_a"] + terms["rec_v"] + alpha * terms["align"]
    if mv is not None and ma is not None:
        density = mask_density(mv) + mask_density(ma)
        terms["density"] = 0.5 * density.detach()
        if sparsity is None:
            sparsity = density
        else:
            terms["sparsity"] = 0.5 * sparsity.detach()
        loss = loss + lam * sparsity
    if auxiliary is not None:
        terms["mask_aux"] = auxiliary.detach()
        loss = loss + auxiliary
    terms["loss"] = loss
    return terms


class AlignObjective(nn.Module):
    """Eq. 7 of a Stage I model (:class:`sava_core.alignment.AlignModel`): forward(xv, xa) -> terms."""

    def __init__(self, model: AlignModel, alpha: float, lam: float):
        super().__init__()
        self.model, self.alpha, self.lam = model, alpha, lam

    def forward(self, xv: Tensor, xa: Tensor) -> dict[str, Tensor]:
        out = self.model(xv, xa)
        if not self.model.masked:
            return stage1_loss(xv=xv, xa=xa, xv_hat=out.xv_hat, xa_hat=out.xa_hat, zv=out.zv, za=out.za,
                               mv=None, ma=None, alpha=self.alpha, lam=self.lam)
        m_v, m_a = self.model.m_v, self.model.m_a
        sparsity = m_v.regulariser(out.zv, out.za, out.mv) + m_a.regulariser(out.za, out.zv, out.ma)
        own_losses = [x for x in (m_v.auxiliary_loss(out.zv, out.za), m_a.auxiliary_loss(out.za, out.zv))
                      if x is not None]
        return stage1_loss(xv=xv, xa=xa, xv_hat=out.xv_hat, xa_hat=out.xa_hat, zv=out.zv, za=out.za,
                           mv=out.mv, ma=out.ma, alpha=self.alpha, lam=self.lam, sparsity=sparsity,
                           auxiliary=sum(own_losses[1:], own_losses[0]) if own_losses else None)


class ProjectorObjective(nn.Module):
    """P_theta's regression onto the Stage I masked video latent (the audio-guiding latent), with
    the reconstruction loss of Eq. 7: forward(xv (B, T, Dv), target (B, T, d)) -> terms."""

    def __init__(self, projector: nn.Module):
        super().__init__()
        self.projector = projector

    def forward(self, xv: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.projector(xv), target)}


class DiffusionObjective(nn.Module):
    """Eq. 8: || target - eps_theta(x_t, t, c) ||^2 with c = [text ; phi(extra)]. Per clip, with
    probability

    - ``dropout``: c dropped (text and extra together), so that classifier-free guidance works;
    - ``text_only_dropout``: the text dropped, the extra condition kept (generate from it alone);
    - ``text_swap``: the text replaced by another clip's of the batch, the clip's own extra condition
      and target kept (follow the extra condition where the two disagree);
    - ``condition_dropout``: the extra condition dropped, the text kept (the text-only prediction that
      the sampler's ``condition_guidance_scale`` guides from).

    The last three apply only with an extra condition. The target follows the backbone's
    ``prediction_type``: the noise (epsilon), the velocity alpha_t * eps - sigma_t * x0
    (v_prediction) or x0 (sample). Without phi it is the plain text-to-media objective (pretraining)."""

    def __init__(self, backbone: nn.Module, sampler: Any, dropout: float, phi: nn.Module | None = None,
                 text_only_dropout: float = 0.0, text_swap: float = 0.0, condition_dropout: float = 0.0):
        super().__init__()
        self.backbone, self.phi, self.dropout = backbone, phi, dropout
        self.text_only_dropout, self.text_swap, self.condition_dropout = text_only_dropout, text_swap, condition_dropout
        self.scheduler = sampler.train_scheduler(backbone)
        self.prediction_type = backbone.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise SavaError(f"{type(backbone).__name__}: unknown prediction_type {self.prediction_type!r}")

    def forward(self, x0: Tensor, text: Tensor, mask: Tensor, null_text: Tensor, null_mask: Tensor,
                extra: Tensor | None = None) -> dict[str, Tensor]:
        b = x0.shape[0]
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        conditioned = self.phi is not None and extra is not None

        def draw(p: float) -> Tensor:  # (b,) bool, each True with probability p (no draw when p = 0)
            return torch.rand(b, device=x0.device) < p if p > 0 else torch.zeros(b, dtype=torch.bool, device=x0.device)

        drop = torch.rand(b, device=x0.device) < self.dropout
        drop_text = drop | draw(self.text_only_dropout) if conditioned else drop
        if conditioned and self.text_swap > 0 and b > 1:
            swap = draw(self.text_swap)
            text = torch.where(swap[:, None, None], text.roll(1, 0), text)
            mask = torch.where(swap[:, None], mask.roll(1, 0), mask)
        text = torch.where(drop_text[:, None, None], null_text.expand_as(text), text)
        mask = torch.where(drop_text[:, None], null_mask.expand_as(mask), mask)
        cond = Condition(text, mask)
        if conditioned:
            assert self.phi is not None and extra is not None
            tokens = self.phi(extra)
            keep = ~(drop | draw(self.condition_dropout))
            cond = Condition(text, mask, tokens, keep[:, None].expand(-1, tokens.shape[1]))
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        return {"loss": (self.backbone(xt, t, cond).float() - target.float()).pow(2).mean()}
