"""The Stage I objective (Eq. 7) and how each term is normalised.

For latent sequences of B clips and T steps ("tokens" = B*T):

* reconstruction l_A, l_V: squared error **summed over the target's feature dimensions**, averaged
  over tokens. Targets are frozen-encoder latents; with standardised targets a useless predictor
  scores about D_target (the target width) and a perfect one 0.
* alignment L_align: ``|| z_v/|z_v| - z_a/|z_a| ||^2`` per token (in [0, 4]), averaged over tokens:
  the normalised L2 between the **unmasked** aligned latents.
* sparsity: the L1 norm of each mask **divided by its width d** (its density, in [0, 1]), averaged
  over tokens, for M_V and M_A.

So ``total = l_A + l_V + alpha * L_align + lam * (density(M_V) + density(M_A))``: with the paper's
lam = 5, keeping a whole mask open costs 5 squared-error units, i.e. each of d dimensions costs
5/d units and survives only if it lowers the summed reconstruction error of its partner by more.
That makes lam = 5 and alpha = 0.1 meaningful defaults whatever d and the target width are.
"""

from __future__ import annotations

from torch import Tensor


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
) -> dict[str, Tensor]:
    """Eq. 7. ``xa_hat = g_A(M_V * z_v)``, ``xv_hat = g_V(M_A * z_a)``; masks None for the ``none``
    variant (no sparsity term). Returns every term and ``loss``, the total."""
    terms = {
        "rec_a": reconstruction_loss(xa_hat, xa),
        "rec_v": reconstruction_loss(xv_hat, xv),
        "align": alignment_loss(zv, za),
    }
    loss = terms["rec_a"] + terms["rec_v"] + alpha * terms["align"]
    if mv is not None and ma is not None:
        sparsity = mask_density(mv) + mask_density(ma)
        terms["density"] = 0.5 * sparsity
        loss = loss + lam * sparsity
    terms["loss"] = loss
    return terms
