"""The identifiability audit of Stage I on a world with known factors (held-out test split).

Linear probes (ridge regression, float64) are fitted on training tokens and scored by R^2 on test
tokens; a token is one clip at one time step. Metrics (``_v``: from the masked video latent,
``_a``: from the masked audio latent; the plain name is their mean):

* ``shared_r2``: recovery of the shared factors Z_C (sufficiency; high is good);
* ``specific_r2``: recovery of the modality's own specific factors (minimality; low is good);
* ``leak_r2``: recovery of the *partner's* specific factors (video latent -> Z_A, audio -> Z_V):
  a joint mask can smuggle them through its values. ``leak_r2_floor`` is what a linear probe
  on the true factors of the own side ([Z_C; Z_V] -> Z_A) reaches through the world's dynamics:
  leakage is ``leak_r2`` well above this floor;
* ``xrec`` / ``xrec_shuffled``: cross-reconstruction error (fraction of target variance left
  unexplained) with the true partner and with another clip's partner fed to the masks;
* ``density``: fraction of mask entries above the threshold (``mask_mean``: the mean weight; both
  also per side, ``_v`` / ``_a``); ``support_jaccard``: mean Jaccard
  overlap of each token's support with the majority support (1 = the same dimensions everywhere);
* ``proj_r2``: how well P_theta predicts the masked video latent from the video latent alone;
* the mask's own figures (:meth:`sava_core.contracts.Mask.audit_values`), e.g. the L0 mask's
  ``l0_expected``, ``closed_exact`` and ``open_exact``, with ``_v`` / ``_a`` sides and their mean.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sava_core.alignment import AlignModel
from sava_core.config import ProbeConfig
from sava_core.contracts import LatentSplit


def _tokens(x: Tensor) -> Tensor:
    """(N, T, D) -> (N*T, D) in float64."""
    return x.reshape(-1, x.shape[-1]).double()


def ridge_r2(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, ridge: float) -> float:
    """Fit ridge regression (standardised features, penalty ``ridge``) and return the mean R^2 over
    target columns on the test set. x: (n, p), y: (n, k), any float dtype; computed in float64."""
    x_train, y_train, x_test, y_test = (t.double() for t in (x_train, y_train, x_test, y_test))
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
    xs, xt = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean(0)
    n, p = xs.shape
    a = xs.T @ xs / n + ridge * torch.eye(p, dtype=xs.dtype, device=xs.device)
    w = torch.linalg.solve(a, xs.T @ (y_train - ym) / n)
    pred = xt @ w + ym
    ss_res = (y_test - pred).pow(2).sum(0)
    ss_tot = (y_test - y_test.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return float((1 - ss_res / ss_tot).mean())


def unexplained(prediction: Tensor, target: Tensor) -> float:
    """Squared error over total variance of ``target`` (all dims pooled): 0 perfect, ~1 useless."""
    p, t = _tokens(prediction), _tokens(target)
    return float((p - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum().clamp_min(1e-12))


def support_jaccard(mask: Tensor, threshold: float) -> float:
    """Mean Jaccard overlap between each token's support and the majority support. mask (N, T, d)."""
    active = _tokens(mask) > threshold
    majority = active.double().mean(0) > 0.5
    inter = (active & majority).sum(1).double()
    union = (active | majority).sum(1).double()
    return float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())


@torch.no_grad()
def audit(model: AlignModel, projector: nn.Module, train: LatentSplit, test: LatentSplit,
          probe: ProbeConfig) -> dict[str, float]:
    """All audit metrics for a trained Stage I model (see the module docstring)."""
    model.eval()
    projector.eval()
    tr, te = model(train.video, train.audio), model(test.video, test.audio)
    shuffled = model(test.video, test.audio, partner_shift=1)
    gen = torch.Generator().manual_seed(0)
    n_tok = train.video.shape[0] * train.video.shape[1]
    keep = torch.randperm(n_tok, generator=gen)[: probe.max_train_tokens].to(train.video.device)

    def r2(x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor) -> float | None:
        if y_tr.shape[-1] == 0:
            return None
        return ridge_r2(_tokens(x_tr)[keep], _tokens(y_tr)[keep], _tokens(x_te), _tokens(y_te), probe.ridge)

    f_tr, f_te = train.factors, test.factors
    m: dict[str, float | None] = {}
    if f_tr:
        m["shared_r2_v"] = r2(tr.hv, f_tr["shared"], te.hv, f_te["shared"])
        m["shared_r2_a"] = r2(tr.ha, f_tr["shared"], te.ha, f_te["shared"])
        m["specific_r2_v"] = r2(tr.hv, f_tr["video"], te.hv, f_te["video"])
        m["specific_r2_a"] = r2(tr.ha, f_tr["audio"], te.ha, f_te["audio"])
        m["leak_r2_v"] = r2(tr.hv, f_tr["audio"], te.hv, f_te["audio"])
        m["leak_r2_a"] = r2(tr.ha, f_tr["video"], te.ha, f_te["video"])
        own_v_tr, own_v_te = (
            torch.cat([f_tr["shared"], f_tr["video"]], -1), torch.cat([f_te["shared"], f_te["video"]], -1)
        )
        own_a_tr, own_a_te = (
            torch.cat([f_tr["shared"], f_tr["audio"]], -1), torch.cat([f_te["shared"], f_te["audio"]], -1)
        )
        m["leak_r2_floor_v"] = r2(own_v_tr, f_tr["audio"], own_v_te, f_te["audio"])
        m["leak_r2_floor_a"] = r2(own_a_tr, f_tr["video"], own_a_te, f_te["video"])
        for name in ("shared_r2", "specific_r2", "leak_r2", "leak_r2_floor"):
            parts = [v for v in (m[f"{name}_v"], m[f"{name}_a"]) if v is not None]
            m[name] = sum(parts) / len(parts) if parts else None
    m["xrec"] = 0.5 * (unexplained(te.xa_hat, test.audio) + unexplained(te.xv_hat, test.video))
    m["xrec_shuffled"] = 0.5 * (unexplained(shuffled.xa_hat, test.audio) + unexplained(shuffled.xv_hat, test.video))
    threshold = float(model.m_v.threshold)
    for name, of in (("density", lambda w: (w > threshold).double().mean()),
                     ("mask_mean", lambda w: w.double().mean())):
        v, a = float(of(te.mv)), float(of(te.ma))
        m[f"{name}_v"], m[f"{name}_a"], m[name] = v, a, 0.5 * (v + a)
    m["support_jaccard"] = 0.5 * (support_jaccard(te.mv, threshold) + support_jaccard(te.ma, threshold))
    own_v, own_a = model.m_v.audit_values(te.zv, te.za), model.m_a.audit_values(te.za, te.zv)
    for name in own_v.keys() & own_a.keys():
        m[f"{name}_v"], m[f"{name}_a"], m[name] = own_v[name], own_a[name], 0.5 * (own_v[name] + own_a[name])
    m["proj_r2"] = 1.0 - unexplained(projector(test.video), te.hv)
    return {k: round(v, 6) for k, v in m.items() if v is not None}
