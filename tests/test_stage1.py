"""Stage I: masks, Eq. 7, the factor world, reproducible training, divergence, resume, run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, TINY, TinyRegression
from sava_core.components.params import MaskParams
from sava_core.components.stage1 import MLPMask
from sava_core.errors import SavaError, TrainingDiverged
from sava_core.io import atomic_write_text
from sava_core.losses import alignment_loss, mask_density, reconstruction_loss, stage1_loss
from sava_core.recipe import plan
from sava_core.registry import get_registries
from sava_core.runner import run_plan
from sava_core.training import Trainer

QUICKSTART = REPO / "recipes" / "align_quickstart.yaml"


@pytest.mark.parametrize("mode", ["none", "video_only", "joint", "predicted"])
@pytest.mark.parametrize("hard", [False, True])
def test_mask_variants_shape_and_range(mode, hard):
    torch.manual_seed(0)
    mask = MLPMask(MaskParams(mode=mode, hard=hard, init_open=0.0), dim=6)
    own, partner = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    m = mask(own, partner)
    assert m.shape == (3, 4, 6) and m.min() >= 0 and m.max() <= 1
    if mode == "none":
        assert torch.equal(m, torch.ones_like(m))
    if hard:
        assert set(m.unique().tolist()) <= {0.0, 1.0}
    changed = not torch.equal(m, mask(own, torch.randn(3, 4, 6)))
    assert changed == (mode == "joint")  # only the joint mask looks at the partner (predicted: at its prediction)
    assert mask.uses_partner == (mode == "joint")


def test_the_predicted_mask_trains_its_partner_predictor_alone():
    """The predicted mask reads R(own), trained by its auxiliary loss on detached latents: that loss
    moves R and nothing upstream, and R learns the partner where the partner is a function of own."""
    torch.manual_seed(0)
    mask = MLPMask(MaskParams(mode="predicted"), dim=4)
    own = torch.randn(64, 3, 4, requires_grad=True)
    partner = own.detach().flip(-1) * 2.0  # predictable from own
    assert MLPMask(MaskParams(mode="video_only"), dim=4).auxiliary_loss(own, partner) is None
    loss = mask.auxiliary_loss(own, partner)
    loss.backward()
    assert own.grad is None  # the adapters are not moved by it
    assert all(p.grad is None for p in mask.net.parameters())  # nor the mask network
    opt = torch.optim.Adam(mask.predictor.parameters(), lr=0.01)
    first = float(loss.detach())
    for _ in range(300):
        opt.zero_grad()
        mask.auxiliary_loss(own, partner).backward()
        opt.step()
    assert float(mask.auxiliary_loss(own, partner)) < 0.05 * first
    mask.zero_grad(set_to_none=True)
    mask(own, partner).sum().backward()  # the mask's own gradient does not reach R
    assert all(p.grad is None for p in mask.predictor.parameters())
    assert any(p.grad is not None for p in mask.net.parameters())


def test_stage1_adds_the_masks_auxiliary_losses_unweighted():
    from sava_core.alignment import AlignModel
    from sava_core.config import Recipe
    from sava_core.losses import AlignObjective

    recipe = Recipe.model_validate({"name": "r", "data": {"name": "factor_world"},
                                    "model": {"mask": {"name": "mlp", "params": {"mode": "predicted"}}},
                                    "align": {"width": 8}})
    torch.manual_seed(0)
    model = AlignModel(recipe, get_registries(), 6, 5)
    terms = AlignObjective(model, alpha=0.1, lam=5.0)(torch.randn(4, 3, 6), torch.randn(4, 3, 5))
    out = model(torch.randn(1, 1, 6), torch.randn(1, 1, 5))
    assert out.mv.shape == (1, 1, 8)
    expected = terms["rec_a"] + terms["rec_v"] + 0.1 * terms["align"] + 5.0 * 2 * terms["sparsity"] + terms["mask_aux"]
    assert float(terms["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["mask_aux"]) > 0


def test_hard_mask_has_a_straight_through_gradient():
    torch.manual_seed(0)
    hard, soft = MLPMask(MaskParams(mode="video_only", hard=True), dim=5), MLPMask(MaskParams(mode="video_only"), dim=5)
    soft.load_state_dict(hard.state_dict())
    own = torch.randn(2, 3, 5, requires_grad=True)
    w = torch.randn(2, 3, 5)
    g_hard, = torch.autograd.grad((hard(own, own) * w).sum(), own)
    g_soft, = torch.autograd.grad((soft(own, own) * w).sum(), own)
    assert torch.allclose(g_hard, g_soft)  # forward thresholds, backward is the sigmoid's gradient
    assert torch.equal(hard(own, own), (soft(own, own) > 0.5).float())


def test_partner_stop_grad_blocks_the_gradient_into_the_partner():
    mask = MLPMask(MaskParams(mode="joint", partner_stop_grad=True), dim=4)
    partner = torch.randn(2, 3, 4, requires_grad=True)
    mask(torch.randn(2, 3, 4), partner).sum().backward()
    assert partner.grad is None


def test_eq7_terms_on_a_hand_computed_case():
    xv, xa = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[0.0, 1.0, 2.0]]])
    xv_hat, xa_hat = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 1.0, 0.0]]])
    zv, za = torch.tensor([[[3.0, 0.0]]]), torch.tensor([[[0.0, 2.0]]])
    mv, ma = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.5, 0.5]]])
    assert reconstruction_loss(xa_hat, xa) == 1 + 0 + 4  # summed over features
    assert alignment_loss(zv, za) == pytest.approx(2.0)  # |(1,0) - (0,1)|^2
    assert mask_density(mv) == 0.5 and mask_density(ma) == 0.5
    t = stage1_loss(xv=xv, xa=xa, xv_hat=xv_hat, xa_hat=xa_hat, zv=zv, za=za, mv=mv, ma=ma, alpha=0.1, lam=5.0)
    assert float(t["rec_v"]) == 4.0 and float(t["rec_a"]) == 5.0
    assert float(t["loss"]) == pytest.approx(5 + 4 + 0.1 * 2 + 5 * (0.5 + 0.5))
    no_mask = stage1_loss(
        xv=xv, xa=xa, xv_hat=xv_hat, xa_hat=xa_hat, zv=zv, za=za, mv=None, ma=None, alpha=0.1, lam=5.0
    )
    assert float(no_mask["loss"]) == pytest.approx(9.2)


def test_the_default_regulariser_is_the_density_so_eq7_is_unchanged():
    """A mask that supplies no regulariser gets lam * (density(M_V) + density(M_A)), the paper's term."""
    from sava_core.alignment import AlignModel
    from sava_core.config import Recipe
    from sava_core.losses import AlignObjective

    torch.manual_seed(0)
    recipe = Recipe.model_validate({"name": "t", "data": {"name": "factor_world"}, "align": {"width": 6}})
    model = AlignModel(recipe, get_registries(), 5, 7)
    xv, xa = torch.randn(4, 3, 5), torch.randn(4, 3, 7)
    terms = AlignObjective(model, alpha=0.1, lam=5.0)(xv, xa)
    out = model(xv, xa)
    expected = stage1_loss(xv=xv, xa=xa, xv_hat=out.xv_hat, xa_hat=out.xa_hat, zv=out.zv, za=out.za,
                           mv=out.mv, ma=out.ma, alpha=0.1, lam=5.0)
    assert torch.equal(terms["loss"], expected["loss"])  # the same operations in the same order
    assert torch.equal(terms["sparsity"], terms["density"])


def test_the_l0_mask_samples_gates_in_training_and_is_deterministic_in_eval():
    from sava_core.components.params import HardConcreteMaskParams
    from sava_core.components.stage1 import HardConcreteMask

    torch.manual_seed(0)
    mask = HardConcreteMask(HardConcreteMaskParams(mode="video_only", init_open=0.0), dim=16)
    own, partner = torch.randn(8, 4, 16), torch.randn(8, 4, 16)
    train = mask.train()(own, partner)
    assert not torch.equal(train, mask(own, partner))  # sampled
    assert (train == 0).any() and (train == 1).any() and ((train > 0) & (train < 1)).any()
    mask.eval()
    assert torch.equal(mask(own, partner), mask(own, partner))
    log_alpha = mask.log_alpha(own, partner)
    expected = (torch.sigmoid(log_alpha) * 1.2 - 0.1).clamp(0, 1)
    torch.testing.assert_close(mask(own, partner), expected, rtol=0, atol=1e-6)  # same formula, float32 rounding
    # the L0 penalty: P(gate != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)), mean over entries
    p_open = torch.sigmoid(log_alpha - (2 / 3) * torch.log(torch.tensor(0.1 / 1.1)))
    torch.testing.assert_close(mask.regulariser(own, partner, mask(own, partner)), p_open.mean())
    closed = HardConcreteMask(HardConcreteMaskParams(mode="video_only", init_open=-30.0), dim=16).eval()
    assert closed.audit_values(own, partner)["closed_exact"] == 1.0


def test_stage1_trains_an_l0_mask_with_its_own_penalty_and_audits_it(tmp_path):
    run_plan(plan(QUICKSTART, [*TINY, "variants={l0: []}", "model.mask={name: hard_concrete, params: {mode: joint}}"]),
             tmp_path / "run")
    cell = tmp_path / "run" / "runs" / "l0" / "seed-0"
    metrics = json.loads((cell / "metrics.json").read_text())
    assert {"l0_expected", "closed_exact", "open_exact", "l0_expected_v", "closed_exact_a"} <= set(metrics)
    assert 0 <= metrics["l0_expected"] <= 1 and 0 <= metrics["closed_exact"] <= 1
    steps = [json.loads(line) for line in (cell / "log.jsonl").read_text().splitlines()]
    align = [e for e in steps if e.get("event") == "step" and e.get("phase") == "align"]
    assert align and all("sparsity" in e["train"] for e in align)
    assert any(e["train"]["sparsity"] != e["train"]["density"] for e in align)  # the L0 term, not the density


def test_factor_world_is_seeded_and_returns_its_factors():
    def build(**p):
        return get_registries()["dataset"].build("factor_world", {"n_train": 20, "n_val": 10, "n_test": 10, **p})

    world = build(n_shared=3, n_video=2, n_audio=5, d=12, length=6)
    test = world.latents("test")
    assert test.video.shape == (10, 6, 12) and test.audio.shape == (10, 6, 12)
    assert {k: v.shape[-1] for k, v in test.factors.items()} == {"shared": 3, "video": 2, "audio": 5}
    assert torch.equal(build(seed=3).latents("train").video, build(seed=3).latents("train").video)
    assert not torch.equal(build(seed=3).latents("train").video, build(seed=4).latents("train").video)


def _run(tmp_path: Path, *overrides: str, name: str = "run", resume: bool = False):
    return run_plan(plan(QUICKSTART, [*TINY, *overrides]), tmp_path / name, resume=resume)


def test_a_run_writes_its_directory(tmp_path):
    result = _run(tmp_path, "seeds=[0, 1]", "data.params.n_shared=6", "data.params.d=48")
    out = tmp_path / "run"
    assert (out / "resolved.yaml").read_text().startswith("# recipe hash: ")
    assert yaml.safe_load((out / "resolved.yaml").read_text())["data"]["params"]["d"] == 48
    env = json.loads((out / "environment.json").read_text())
    assert {"python", "torch", "cuda", "platform", "plugins"} <= set(env)
    for variant in ("none", "joint_hard"):
        for seed in (0, 1):
            metrics = json.loads((out / "runs" / variant / f"seed-{seed}" / "metrics.json").read_text())
            assert {
                "shared_r2", "specific_r2", "leak_r2", "xrec", "xrec_shuffled", "density", "proj_r2"
            } <= set(metrics)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["variant"], r["seed"]) for r in rows] == [
        ("none", "0"), ("none", "1"), ("joint_hard", "0"), ("joint_hard", "1")
    ]
    assert "| joint_hard | 2 |" in (out / "results.md").read_text() and "| joint_hard | 2 |" in result.table
    assert not list(out.rglob("*.tmp"))


def test_training_is_reproducible_on_the_cpu(tmp_path):
    a = _run(tmp_path, name="a").cells
    b = _run(tmp_path, name="b").cells
    assert a == b
    assert _run(tmp_path, "seeds=[1]", name="c").cells != a


def test_an_existing_run_directory_is_not_overwritten(tmp_path):
    _run(tmp_path)
    with pytest.raises(SavaError, match="already holds files"):
        _run(tmp_path)
    with pytest.raises(SavaError, match="different recipe"):
        _run(tmp_path, "align.width=8", resume=True)


def test_a_non_finite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    original = Trainer.train_step

    def poisoned(self, batch, n_train):
        if self.name == "align" and self.step == 25:
            return original(self, lambda i: tuple(t * float("nan") for t in batch(i)), n_train)
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite at step 25") as err:
        _run(tmp_path)
    assert "last good checkpoint is kept" in str(err.value)
    ckpt = tmp_path / "run" / "runs" / "none" / "seed-0" / "checkpoints" / "align"
    latest = ckpt / (ckpt / "latest").read_text().strip()
    assert json.loads((latest / "trainer.json").read_text())["step"] == 20
    assert (latest / "model.safetensors").exists()


def test_resume_after_an_interruption_gives_the_same_metrics(tmp_path, monkeypatch):
    uninterrupted = _run(tmp_path, name="whole").cells
    original = Trainer.train_step

    def interrupt(self, batch, n_train):
        if self.name == "align" and self.step == 15 and "joint_hard" in str(self.checkpoint_dir):
            raise KeyboardInterrupt
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, name="cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    assert (tmp_path / "cut" / "runs" / "none" / "seed-0" / "metrics.json").exists()
    assert not (tmp_path / "cut" / "runs" / "joint_hard" / "seed-0" / "metrics.json").exists()
    resumed = _run(tmp_path, name="cut", resume=True).cells
    assert resumed == uninterrupted


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


def test_a_cosine_schedule_warms_up_decays_to_zero_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    from sava_core.config import TrainConfig

    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    y = x.sum(1, keepdim=True)
    config = TrainConfig(steps=10, batch_size=8, lr=0.1, lr_schedule="cosine", warmup_steps=2, val_every=5,
                         checkpoint_every=5)
    original = Trainer.train_step
    lrs: list[float] = []

    def record(self, batch, n_train):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", record)
    whole = Trainer(TinyRegression(), config, seed=0, cpu=True, checkpoint_dir=tmp_path / "whole")
    whole.fit(lambda i: (x[i], y[i]), len(x))
    assert lrs[:3] == pytest.approx([0.0, 0.05, 0.1])  # linear warm-up over 2 updates
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and whole.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)

    def interrupt(self, batch, n_train):
        if self.step == 7:
            raise KeyboardInterrupt
        return original(self, batch, n_train)

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Trainer(TinyRegression(), config, seed=0, cpu=True, checkpoint_dir=tmp_path / "cut").fit(
            lambda i: (x[i], y[i]), len(x)
        )
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(TinyRegression(), config, seed=0, cpu=True, checkpoint_dir=tmp_path / "cut")
    resumed.fit(lambda i: (x[i], y[i]), len(x), resume=True)  # from the checkpoint at step 5
    assert torch.equal(resumed.objective.linear.weight, whole.objective.linear.weight)


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_max_grad_norm_clips_the_gradients_before_each_update(tmp_path, max_grad_norm):
    from sava_core.config import TrainConfig

    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    y = 100 * x.sum(1, keepdim=True)  # far from the initial fit: gradient norms in the hundreds
    config = TrainConfig(steps=3, batch_size=8, lr=0.01, max_grad_norm=max_grad_norm, val_every=3, checkpoint_every=3)
    trainer = Trainer(TinyRegression(), config, seed=0, cpu=True, checkpoint_dir=tmp_path)
    norms: list[float] = []
    update = trainer.optimizer.step

    def record(*args, **kwargs):
        norms.append(float(torch.stack([p.grad.norm() for p in trainer.objective.parameters()]).norm()))
        return update(*args, **kwargs)

    trainer.optimizer.step = record
    trainer.fit(lambda i: (x[i], y[i]), len(x))
    assert len(norms) == 3
    if max_grad_norm is None:
        assert min(norms) > 10
    else:
        assert max(norms) == pytest.approx(max_grad_norm, rel=1e-4)
