"""Stage I: masked latent alignment (Eq. 3-7), then the projector P_theta, then the audit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from sava_core.audit import audit
from sava_core.config import Recipe
from sava_core.contracts import LatentSplit
from sava_core.errors import SavaError
from sava_core.io import atomic_write_with
from sava_core.losses import reconstruction_loss, stage1_loss
from sava_core.registry import Registries
from sava_core.training import EventLog, Trainer


@dataclass
class AlignOutput:
    """Every intermediate of Eq. 3-6, each (B, T, ...)."""

    zv: Tensor  # aligned video latent q_V(x_v), (B, T, d)
    za: Tensor  # aligned audio latent q_A(x_a), (B, T, d)
    mv: Tensor  # video mask M_V, (B, T, d) in [0, 1]
    ma: Tensor  # audio mask M_A
    hv: Tensor  # masked video latent M_V * z_v: the audio-guiding latent
    ha: Tensor  # masked audio latent M_A * z_a
    xa_hat: Tensor  # g_A(hv), (B, T, Da)
    xv_hat: Tensor  # g_V(ha), (B, T, Dv)


class AlignModel(nn.Module):
    """Adapters, masks and cross-modal decoders of Stage I, built from the recipe's components."""

    def __init__(self, recipe: Recipe, registries: Registries, video_dim: int, audio_dim: int):
        super().__init__()
        m, d = recipe.model, recipe.align.width
        build = lambda kind, ref, **kw: registries[kind].build(ref.name, ref.params, **kw)  # noqa: E731
        self.q_v = build("adapter", m.adapter, in_dim=video_dim, out_dim=d)
        self.q_a = build("adapter", m.adapter, in_dim=audio_dim, out_dim=d)
        self.m_v = build("mask", m.mask, dim=d)
        self.m_a = build("mask", m.mask, dim=d)
        self.g_a = build("decoder", m.decoder, in_dim=d, out_dim=audio_dim)
        self.g_v = build("decoder", m.decoder, in_dim=d, out_dim=video_dim)

    @property
    def masked(self) -> bool:
        return self.m_v.mode != "none"

    def forward(self, xv: Tensor, xa: Tensor, partner_shift: int = 0) -> AlignOutput:
        """``xv`` (B, T, Dv), ``xa`` (B, T, Da). ``partner_shift`` != 0 feeds each mask the partner
        latent of another clip (``roll`` along the batch): the shuffled-partner leakage control."""
        zv, za = self.q_v(xv), self.q_a(xa)
        pa = za.roll(partner_shift, 0) if partner_shift else za
        pv = zv.roll(partner_shift, 0) if partner_shift else zv
        mv, ma = self.m_v(zv, pa), self.m_a(za, pv)
        hv, ha = mv * zv, ma * za
        return AlignOutput(zv, za, mv, ma, hv, ha, self.g_a(hv), self.g_v(ha))

    def loss(self, xv: Tensor, xa: Tensor, alpha: float, lam: float) -> dict[str, Tensor]:
        """Eq. 7 on a batch."""
        out = self(xv, xa)
        masks = (out.mv, out.ma) if self.masked else (None, None)
        return stage1_loss(xv=xv, xa=xa, xv_hat=out.xv_hat, xa_hat=out.xa_hat, zv=out.zv, za=out.za,
                           mv=masks[0], ma=masks[1], alpha=alpha, lam=lam)


class AlignObjective(nn.Module):
    """Eq. 7 as a module (what Accelerate wraps): forward(xv, xa) -> loss terms."""

    def __init__(self, model: AlignModel, alpha: float, lam: float):
        super().__init__()
        self.model, self.alpha, self.lam = model, alpha, lam

    def forward(self, xv: Tensor, xa: Tensor) -> dict[str, Tensor]:
        return self.model.loss(xv, xa, self.alpha, self.lam)


class ProjectorObjective(nn.Module):
    """P_theta's regression onto the Stage I masked video latent: forward(xv, target) -> loss terms."""

    def __init__(self, projector: nn.Module):
        super().__init__()
        self.projector = projector

    def forward(self, xv: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"loss": reconstruction_loss(self.projector(xv), target)}


def use_cpu(name: str) -> bool:
    """Whether Accelerate runs on the CPU: asked for by the recipe's ``device``, or no CUDA device.
    (On the CPU, several processes from ``accelerate launch`` / ``torchrun`` use gloo.)"""
    if name == "cuda" and not torch.cuda.is_available():
        raise SavaError("device: cuda was asked for but no CUDA device is visible; set device=cpu or device=auto")
    return name == "cpu" or not torch.cuda.is_available()


def load_latents(recipe: Recipe, registries: Registries, device: torch.device,
                 cell_dir: Path | None = None) -> dict[str, LatentSplit]:
    """The dataset's train / val / test splits as encoder latents on ``device``: given by a latent
    dataset, or a media dataset encoded by the recipe's (pretrained) video and audio encoders."""
    data = registries["dataset"].build(recipe.data.name, recipe.data.params)
    out = {}
    for split in ("train", "val", "test"):
        s = data.latents(split) if data.provides_latents else _encoded(recipe, registries, data, split, cell_dir)
        out[split] = LatentSplit(s.video.to(device), s.audio.to(device),
                                 {k: v.to(device) for k, v in s.factors.items()}, s.captions)
    return out


def _encoded(recipe: Recipe, registries: Registries, data, split: str, cell_dir: Path | None) -> LatentSplit:  # type: ignore[no-untyped-def]
    """Encoder latents of a media split, through the latent cache (encoded once per encoder and data)."""
    from sava_core.cache import encode_split
    from sava_core.stages.pretrain import recorded_weights

    m = recipe.model
    if m.video_encoder is None or m.audio_encoder is None:
        raise SavaError(f"data: {recipe.data.name!r} provides media; set model.video_encoder and model.audio_encoder "
                        "so the align stage can encode it (or use a latent dataset such as factor_world)")
    weights = recorded_weights(cell_dir, recipe, required=False) if cell_dir else None
    if weights is not None:
        from sava_core.stages.generation import build_encoders

        venc, aenc, _ = build_encoders(recipe, registries, weights)
    else:
        venc = registries["video_encoder"].build(m.video_encoder.name, m.video_encoder.params)
        aenc = registries["audio_encoder"].build(m.audio_encoder.name, m.audio_encoder.params)
    if len(data.media(split)) == 0:
        raise SavaError(f"data: the {split!r} split of {recipe.data.name!r} is empty; the align stage needs train, val "
                        "and test clips (for vggsound set data.params.val_fraction, e.g. 0.05)")
    from sava_core.stages.generation import generation_device

    device = generation_device(recipe)  # encode on the accelerator; latents come back to the CPU
    key = {"video_encoder": m.video_encoder.name, "audio_encoder": m.audio_encoder.name}
    return encode_split(data, split, venc.eval().to(device), aenc.eval().to(device), key_extra=key, run_dir=cell_dir)


def run(recipe: Recipe, cell_dir: Path, registries: Registries, resume: bool = False) -> dict[str, float]:
    """Train Stage I and P_theta for one seed, save the weights, and return the audit metrics.

    Runs under Accelerate: every process trains on its share of each batch; the main process
    writes the files."""
    cfg = recipe.align
    cpu = use_cpu(recipe.device)
    events = EventLog(cell_dir / "log.jsonl")
    common = dict(cpu=cpu, events=events, tracking=recipe.tracking, tracking_dir=cell_dir / "tracking",
                  hparams=recipe.model_dump(mode="json", include={"model", "align", "data", "seed"}))

    torch.manual_seed(recipe.seed)
    splits = load_latents(recipe, registries, torch.device("cpu"), cell_dir)
    model = AlignModel(recipe, registries, splits["train"].video.shape[-1], splits["train"].audio.shape[-1])
    trainer = Trainer(AlignObjective(model, cfg.loss.alpha, cfg.loss.lam), cfg.train, seed=recipe.seed,
                      checkpoint_dir=cell_dir / "checkpoints" / "align", name="align", **common)
    device = trainer.device
    splits = {k: LatentSplit(v.video.to(device), v.audio.to(device), {f: t.to(device) for f, t in v.factors.items()},
                             v.captions) for k, v in splits.items()}
    train, val = splits["train"], splits["val"]
    trainer.fit(lambda idx: (train.video[idx], train.audio[idx]), len(train),
                validate=lambda obj: {k: float(v) for k, v in obj(val.video, val.audio).items()}, resume=resume)
    model.requires_grad_(False).eval()

    # P_theta: from the video latent alone, predict the masked latent Stage I computes with both
    with torch.no_grad():
        target_train = model(train.video, train.audio).hv
        target_val = model(val.video, val.audio).hv
    projector = registries["projector"].build(recipe.model.projector.name, recipe.model.projector.params,
                                              in_dim=train.video.shape[-1], out_dim=cfg.width).to(device)
    Trainer(ProjectorObjective(projector), cfg.projector_train, seed=recipe.seed + 1,
            checkpoint_dir=cell_dir / "checkpoints" / "projector", name="projector", **common).fit(
        lambda idx: (train.video[idx], target_train[idx]), len(train),
        validate=lambda obj: {k: float(v) for k, v in obj(val.video, target_val).items()}, resume=resume)
    projector.requires_grad_(False).eval()

    if trainer.is_main:
        weights = {f"align.{k}": v.contiguous() for k, v in model.state_dict().items()}
        weights |= {f"projector.{k}": v.contiguous() for k, v in projector.state_dict().items()}
        atomic_write_with(cell_dir / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    return audit(model, projector, splits["train"], splits["test"], cfg.probe)
