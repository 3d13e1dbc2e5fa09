"""Stages II and III on the media world with tiny models: only LoRA and phi train, every cascade
mode writes aligned outputs of the requested length, and the ground-truth checks are reported."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import av
import pytest
import torch
from torch import Tensor

from conftest import REPO, assert_close_f32
from conftest import TINY_T2AV as TINY_QUICKSTART
from sava_core.conditioning import conditioned
from sava_core.contracts import Condition
from sava_core.device import use_cpu
from sava_core.generators import build_generators, plugin_weights
from sava_core.losses import DiffusionObjective
from sava_core.media_io import read_mp4
from sava_core.recipe import plan
from sava_core.registry import get_registries
from sava_core.runner import run_plan
from sava_core.training import Trainer

TINY_T2AV = [
    *TINY_QUICKSTART, "generate.sensitivity=true",
    "generate.metrics=['clap_score extractor_params.preset=tiny', 'avhscore extractor_params.preset=tiny']",
    "variants={two_stream: [generate.mode=two_stream], cascade: [], "
    "bidirectional: [generate.mode=cascade_bidirectional]}",
]
MODES = ("two_stream", "cascade", "bidirectional")


@pytest.fixture(scope="module")
def t2av_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("t2av") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SAVA_CACHE", str(out.parent / "cache"))
    try:
        run_plan(plan(REPO / "recipes" / "quickstart.yaml", TINY_T2AV), out)
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_writes_aligned_clips_of_the_requested_length(t2av_run, mode):
    samples = t2av_run / "runs" / mode / "seed-0" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == [
        "prompts.json", "sample-000.mp4", "sample-000.png", "sample-000.wav", "sample-001.mp4", "sample-001.png",
        "sample-001.wav"]
    with av.open(str(samples / "sample-000.mp4")) as container:
        assert (len(container.streams.video), len(container.streams.audio)) == (1, 1)
    video, audio, fps, rate = read_mp4(samples / "sample-000.mp4")
    assert (fps, rate) == (8.0, 8000) and video.shape == (16, 3, 32, 32)  # the world's 2 s at 8 fps, 32 x 32
    assert abs(video.shape[0] / fps - audio.shape[-1] / rate) <= 1 / fps
    metrics = json.loads((samples.parent / "metrics.json").read_text())
    assert {"sync_error_ms", "event_f1", "class_consistency", "video_class_acc", "audio_class_acc", "count_acc",
            "fd_video_ae", "fd_audio_ae", "audio_change_non_audible", "audio_change_audible",
            "clap_score", "avhscore"} <= set(metrics)
    evaluated = json.loads((samples.parent / "eval" / "results.json").read_text())
    assert [s["label"] for s in evaluated["scores"]] == ["clap_score", "avhscore"]
    assert all(s["protocol"]["n_generated"] == 3 for s in evaluated["scores"])  # every clip, not only the saved ones


def test_pretrain_stores_the_backbones_in_the_requested_precision_and_the_autoencoders_in_float32(t2av_run):
    from safetensors.torch import load_file

    weights = Path(json.loads((t2av_run / "runs" / "cascade" / "seed-0" / "pretrained.json").read_text())["weights"])
    dtypes = {f.name: {v.dtype for v in load_file(str(f)).values() if v.is_floating_point()}
              for f in weights.glob("*.safetensors")}
    assert dtypes == {"t2v.safetensors": {torch.float16}, "t2a.safetensors": {torch.float16},
                      "video_encoder.safetensors": {torch.float32}, "audio_encoder.safetensors": {torch.float32}}


def test_stage2_trains_only_lora_and_phi(t2av_run):
    cell = t2av_run / "runs" / "cascade" / "seed-0"
    recipe = plan(REPO / "recipes" / "quickstart.yaml", TINY_T2AV).cells[1].recipe
    gen = build_generators(recipe, get_registries(), plugin_weights(recipe, get_registries(), cell))
    c = conditioned(gen, "tv2a", recipe)
    before = {k: v.cpu().clone() for k, v in c.backbone.state_dict().items()}
    phi_before = {k: v.cpu().clone() for k, v in c.phi.state_dict().items()}
    trainer = Trainer(DiffusionObjective(c.backbone, gen.sampler, 0.1, c.phi), recipe.finetune.train, seed=0,
                      cpu=use_cpu(recipe.device))  # where the fixture's stages ran (a GPU, when there is one)
    grid = torch.randn(4, *c.backbone.latent_shape, device=trainer.device)
    text = torch.randn(4, 5, gen.text_encoders["audio"].dim, device=trainer.device)
    mask = torch.ones(4, 5, dtype=torch.bool, device=trainer.device)
    extra = torch.randn(4, 16, recipe.align.width, device=trainer.device)
    trainer.train_step(lambda idx: (grid, text, mask, text[:1], mask[:1], extra), 4)
    after = {k: v.cpu() for k, v in c.backbone.state_dict().items()}
    lora = [k for k in before if "lora_" in k]
    assert lora and all(k.split(".")[-3] in ("lora_A", "lora_B") for k in lora)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in lora), "a base weight changed"
    assert any(not torch.equal(before[k], after[k]) for k in lora), "LoRA did not train"
    assert all(not torch.equal(phi_before[k], v.cpu()) for k, v in c.phi.state_dict().items())
    assert all(".attn2." in k for k in lora)  # the conditioning (cross-attention) layers only
    assert not any("lora_" in k for k in gen.t2a.state_dict())  # T2A itself stays intact for two-stream use


def test_stage1_is_the_same_whether_the_latent_cache_was_cold_or_warm(tmp_path, monkeypatch):
    """A first run (which encodes the world into the latent cache) and a rerun (which reads it back)
    train the same Stage I: encoding must not shift the seed the models are built with."""
    from safetensors.torch import load_file

    monkeypatch.setenv("SAVA_CACHE", str(tmp_path / "cache"))
    overrides = [*TINY_QUICKSTART, "stages=[pretrain, align]", "variants={a: []}"]
    for name in ("cold", "warm"):
        run_plan(plan(REPO / "recipes" / "quickstart.yaml", overrides), tmp_path / name)
    cold, warm = (load_file(str(tmp_path / n / "runs" / "a" / "seed-0" / "model.safetensors"))
                  for n in ("cold", "warm"))
    assert cold.keys() == warm.keys() and all(torch.equal(cold[k], warm[k]) for k in cold)


def test_audio_backbone_reads_each_condition_token_only_near_its_instant():
    """TV2A's condition tokens are time-aligned: token k (of 16 spanning the clip) is seen only by
    cross-attention queries within ``condition_window`` token spacings of its instant; text is seen by
    all; without extra tokens the processor is plain attention."""
    from sava_synth.models import SynthUNet
    from sava_synth.params import SynthUNetParams

    torch.manual_seed(0)
    unet = SynthUNet(SynthUNetParams(modality="audio"), latent_shape=(4, 8, 32), condition_dim=32).eval()
    attn = next(m for n, m in unet.unet.named_modules() if n.endswith("attn2"))
    hidden = torch.randn(1, 4 * 16, attn.to_q.in_features)  # the (mel 4, time 16) grid of that level
    tokens = torch.randn(1, 5 + 16, 32)
    mask = torch.zeros(1, 1, 21)
    moved = tokens.clone()
    moved[:, 5] += 3.0  # the first condition token (instant 1/32 of the clip)
    attn.processor.n_extra = 16
    with torch.no_grad():
        a, b = attn(hidden, tokens, mask), attn(hidden, moved, mask)
    column = torch.arange(64) % 16
    changed = (a - b).abs().amax(-1)[0]
    # Far queries give the moved token a -10000 bias: its softmax weight underflows to exactly 0 and
    # the same kernels run on the same shapes, so their outputs are unchanged bit for bit (< 1e-6
    # bounds an exact 0).
    assert (changed[column <= 1] > 1e-4).all() and (changed[column >= 2] < 1e-6).all()
    text_moved = tokens.clone()
    text_moved[:, 0] += 3.0
    with torch.no_grad():
        assert ((attn(hidden, text_moved, mask) - a).abs().amax(-1) > 1e-4).all()  # text reaches every query


def test_video_transformer_reads_each_condition_token_only_near_its_frame():
    """synth_latte (a time axis for TA2V): frame f of F sees condition token k of T only within
    ``condition_window`` token spacings of its instant, whichever clip of the batch it is in; text is
    seen by every frame. Checked through the spatial blocks alone (temporal attention off), where
    nothing else carries information between frames."""
    from sava_synth.models import SynthLatte
    from sava_synth.params import SynthLatteParams

    torch.manual_seed(0)
    model = SynthLatte(SynthLatteParams(layers=1, heads=2, head_dim=8, patch_size=4),
                       latent_shape=(8, 4, 8, 8), condition_dim=16).eval()
    x, t = torch.randn(2, 8, 4, 8, 8), torch.tensor([3, 700])
    text, extra = torch.randn(2, 3, 16), torch.randn(2, 8, 16)

    def frames(extra: Tensor, text: Tensor = text) -> Tensor:
        tokens, bias = model.condition_bias(Condition(text, None, extra), 8)
        with torch.no_grad():
            return model.transformer(x.transpose(1, 2), t, encoder_hidden_states=tokens, encoder_attention_mask=bias,
                                     enable_temporal_attentions=False).sample.transpose(1, 2)

    base = frames(extra)
    moved = extra.clone()
    moved[1, 5] += 3.0  # clip 1, token 5 (instant 11/16 of the clip)
    changed = (frames(moved) - base).abs().flatten(2).amax(-1)  # (clip, frame)
    assert (changed[0] == 0).all()  # the other clip of the batch is untouched
    assert (changed[1, 4:7] > 1e-4).all() and (changed[1, :4] < 1e-6).all() and (changed[1, 7:] < 1e-6).all()
    text_moved = text.clone()
    text_moved[:, 0] += 3.0
    assert ((frames(extra, text_moved) - base).abs().flatten(2).amax(-1) > 1e-4).all()
    out = model(x, t, Condition(text, None, extra))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert any(re.fullmatch(model.lora_targets[0], n) for n, _ in model.named_modules())  # LoRA finds attn2


def test_the_video_transformer_runs_every_stage_of_the_bidirectional_cascade(tmp_path, monkeypatch):
    """synth_latte as the world's T2V: pretrained, fine-tuned as TA2V (LoRA on its cross-attention,
    the audio's condition tokens time-aligned to the frames) and sampled in the bidirectional cascade."""
    monkeypatch.setenv("SAVA_CACHE", str(tmp_path / "cache"))
    overrides = [o for o in TINY_QUICKSTART if not o.startswith("model.video_backbone.")]
    overrides += ["model.video_backbone={name: synth_latte, params: {layers: 1, heads: 2, head_dim: 8}}",
                  "generate.mode=cascade_bidirectional", "variants={bidirectional: []}"]
    run_plan(plan(REPO / "recipes" / "quickstart.yaml", overrides), tmp_path / "run")
    cell = tmp_path / "run" / "runs" / "bidirectional" / "seed-0"
    metrics = json.loads((cell / "metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("ta2v_val_loss", "ta2v_val_loss_shuffled", "sync_error_ms"))
    video, _, _, _ = read_mp4(cell / "samples" / "sample-000.mp4")
    assert video.shape == (16, 3, 32, 32)


def test_video_unet_reads_the_condition_frame_by_frame_through_a_path_stage2_trains(tmp_path):
    """``frame_condition_channels``: token k of F extra tokens reaches only frame k's condition
    channels (of 2F tokens, frame k // 2's only); the path starts at zero (the pretrained T2V is unchanged
    until Stage II trains it), loads beside weights pretrained without it, and Stage II trains and
    saves it with LoRA while every base weight stays fixed."""
    from safetensors.torch import save_file

    from sava_core.conditioning import add_lora, finetuned_state
    from sava_synth.models import SynthUNet
    from sava_synth.params import SynthUNetParams

    torch.manual_seed(0)
    shape = (8, 4, 8, 8)
    plain = SynthUNet(SynthUNetParams(modality="video", block_out_channels=(32, 32)), latent_shape=shape,
                      condition_dim=16)
    save_file(plain.state_dict(), str(tmp_path / "t2v.safetensors"))
    params = SynthUNetParams(modality="video", block_out_channels=(32, 32), frame_condition_channels=2,
                             pretrained=str(tmp_path / "t2v.safetensors"))
    model = SynthUNet(params, latent_shape=shape, condition_dim=16).eval()
    x, t, text = torch.randn(2, *shape), torch.tensor([3, 700]), torch.randn(2, 3, 16)
    extra = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert torch.equal(model(x, t, Condition(text, None, extra)), plain.eval()(x, t, Condition(text, None, extra)))

    torch.nn.init.normal_(model.frame_condition.conv.weight)  # as if trained
    stacked = x.flatten(1, 2)
    conv_input: list[Tensor] = []
    model.frame_condition.conv.register_forward_hook(lambda m, args, out: conv_input.append(args[0]))

    def condition_channels(extra: Tensor) -> Tensor:  # (B, F, k): each frame's condition channels
        conv_input.clear()
        model.frame_condition(stacked, extra, None)
        return conv_input[0][:, stacked.shape[1]:, 0, 0].reshape(2, 8, 2)

    moved = extra.clone()
    moved[1, 5] += 3.0
    changed = (condition_channels(moved) - condition_channels(extra)).abs().amax(-1)
    assert (changed[1, 5] > 1e-4) and (changed.sum() == changed[1, 5])
    twice = torch.randn(2, 16, 16)
    moved = twice.clone()
    moved[0, 11] += 3.0  # instant 23/32; frame 5's (11/16) lies between tokens 10 and 11, the only ones it reads
    changed = (condition_channels(moved) - condition_channels(twice)).abs().amax(-1)
    assert changed[0, 5] > 1e-4 and changed.sum() == changed[0, 5]
    with torch.no_grad():
        assert not torch.equal(model(x, t, Condition(text, None, extra)), plain(x, t, Condition(text, None, extra)))
        off = torch.zeros(2, 8, dtype=torch.bool)  # guidance's unconditional row: no condition reaches the frames
        assert torch.equal(model.frame_condition(stacked, extra, off), model.frame_condition.conv(
            torch.cat([stacked, torch.zeros(2, 16, 8, 8)], dim=1)))

    add_lora(model, rank=2, alpha=2.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.startswith("frame_condition.")} == {
        n for n in trainable if "lora_" in n} and "frame_condition.conv.weight" in trainable
    assert set(finetuned_state(model)) == trainable
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("unet.conv_in."))


class RecordingBackbone(torch.nn.Module):
    """Returns zeros and keeps the last condition it was given."""

    prediction_type, scheduler_config, clip_sample = "epsilon", None, None

    def forward(self, noisy, timestep, condition):  # type: ignore[no-untyped-def]
        self.condition = condition
        return torch.zeros_like(noisy)


@pytest.mark.parametrize("text_only", [0.0, 0.99])
def test_text_only_dropout_drops_the_text_and_keeps_the_condition(text_only):
    from sava_core.components.params import DiffusionSamplerParams
    from sava_core.components.sampling import DiffusersSampler
    from sava_core.conditioning import Phi

    backbone = RecordingBackbone()
    objective = DiffusionObjective(backbone, DiffusersSampler(DiffusionSamplerParams()), 0.0, Phi(4, 6), text_only)
    text, null = torch.ones(64, 3, 6), torch.zeros(1, 3, 6)
    mask, null_mask = torch.ones(64, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool)
    torch.manual_seed(0)
    objective(torch.randn(64, 2, 4, 4), text, mask, null, null_mask, torch.randn(64, 5, 4))
    c = backbone.condition
    dropped = (c.text == 0).all(dim=(1, 2))
    assert c.extra_mask.all()  # the condition is never dropped without the text (dropout = 0)
    if text_only == 0.0:
        assert not dropped.any()
    else:
        assert dropped.float().mean() > 0.9
        assert (c.text_mask[dropped] == null_mask).all()


@pytest.mark.parametrize("text_swap", [0.0, 0.5])
def test_text_swap_pairs_clips_with_another_clips_text_and_keeps_their_condition(text_swap):
    from sava_core.components.params import DiffusionSamplerParams
    from sava_core.components.sampling import DiffusersSampler
    from sava_core.conditioning import Phi

    backbone = RecordingBackbone()
    phi = Phi(4, 6)
    objective = DiffusionObjective(backbone, DiffusersSampler(DiffusionSamplerParams()), 0.0, phi, text_swap=text_swap)
    text = torch.arange(64.0)[:, None, None].expand(64, 3, 6)  # clip i's text is all i
    mask = torch.ones(64, 3, dtype=torch.bool)
    extra = torch.randn(64, 5, 4)
    torch.manual_seed(0)
    objective(torch.randn(64, 2, 4, 4), text, mask, torch.zeros(1, 3, 6), torch.zeros(1, 3, dtype=torch.bool), extra)
    c = backbone.condition
    own = c.text[:, 0, 0] == torch.arange(64.0)
    assert torch.equal(c.extra, phi(extra))  # every clip keeps its own condition
    if text_swap == 0.0:
        assert own.all()
    else:
        assert 0.3 < (~own).float().mean() < 0.7
        assert (c.text[~own, 0, 0] == (torch.arange(64.0) - 1)[~own] % 64).all()  # another clip's text, whole


def test_condition_dropout_drops_the_condition_and_keeps_the_text():
    from sava_core.components.params import DiffusionSamplerParams
    from sava_core.components.sampling import DiffusersSampler
    from sava_core.conditioning import Phi

    backbone = RecordingBackbone()
    objective = DiffusionObjective(backbone, DiffusersSampler(DiffusionSamplerParams()), 0.0, Phi(4, 6),
                                   condition_dropout=0.5)
    text = torch.ones(64, 3, 6)
    torch.manual_seed(0)
    objective(torch.randn(64, 2, 4, 4), text, torch.ones(64, 3, dtype=torch.bool), torch.zeros(1, 3, 6),
              torch.zeros(1, 3, dtype=torch.bool), torch.randn(64, 5, 4))
    c = backbone.condition
    kept = c.extra_mask.all(dim=1)
    assert (c.extra_mask == kept[:, None]).all()  # a row's condition is dropped whole
    assert 0.3 < (~kept).float().mean() < 0.7
    assert torch.equal(c.text, text)  # the text is never dropped (text_dropout = 0)


class LinearBackbone(torch.nn.Module):
    """epsilon = 1 + 2 * [text given] + 5 * [extra condition given], per row: guidance is checkable by hand."""

    prediction_type, scheduler_config, clip_sample, latent_shape = "epsilon", None, None, (1,)

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[Tensor] = []

    def forward(self, noisy, timestep, condition):  # type: ignore[no-untyped-def]
        text = condition.text_mask.any(dim=1).float()
        extra = condition.extra_mask.any(dim=1).float()
        eps = 1 + 2 * text + 5 * extra
        self.calls.append(eps)
        return eps[:, None].expand_as(noisy)


@pytest.mark.parametrize("condition_scale", [None, 4.0])
def test_condition_guidance_scales_text_and_condition_apart(condition_scale):
    """eps = e(0, 0) + s (e(T, 0) - e(0, 0)) + s_c (e(T, c) - e(T, 0)) with s_c set; one scale for both without."""
    from sava_core.components.params import DiffusionSamplerParams
    from sava_core.components.sampling import DiffusersSampler

    sampler = DiffusersSampler(
        DiffusionSamplerParams(steps=1, guidance_scale=2.0, condition_guidance_scale=condition_scale)
    )
    on, off = torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool)
    text = torch.zeros(3, 2, 4)
    cond, uncond = Condition(text, on, torch.zeros(3, 2, 4), on), Condition(text, off, torch.zeros(3, 2, 4), off)
    backbone = LinearBackbone()
    seen: list[Tensor] = []
    scheduler_step = sampler.scheduler  # capture the guided epsilon the scheduler receives

    def scheduler(bb):  # type: ignore[no-untyped-def]
        sch = scheduler_step(bb)
        original = sch.step
        sch.step = lambda eps, t, x, **kw: (seen.append(eps), original(eps, t, x, **kw))[1]
        return sch

    sampler.scheduler = scheduler  # type: ignore[method-assign]
    sampler.sample(backbone, cond, uncond, 3, torch.Generator().manual_seed(0))
    # e(0, 0) = 1, e(T, 0) = 3, e(T, c) = 8
    expected = 1 + 2.0 * (3 - 1) + 4.0 * (8 - 3) if condition_scale else 1 + 2.0 * (8 - 1)
    assert torch.allclose(seen[0], torch.full((3, 1), float(expected)))
    assert len(backbone.calls) == (3 if condition_scale else 2)


class CleanLatentBackbone(torch.nn.Module):
    """Predicts the clean latent 5 everywhere (``prediction_type`` "sample")."""

    prediction_type, scheduler_config, latent_shape = "sample", None, (4,)

    def __init__(self, clip_sample: float | None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.clip_sample = clip_sample

    def forward(self, noisy, timestep, condition):  # type: ignore[no-untyped-def]
        return torch.full_like(noisy, 5.0)


@pytest.mark.parametrize(("clip_sample", "expected"), [(None, 5.0), (1.0, 1.0), (2.0, 2.0)])
def test_sampler_clips_the_clean_latent_only_as_far_as_the_backbone_asks(clip_sample, expected):
    """diffusers' DDIM would clip to [-1, 1] by default; the sampler clips to the backbone's
    ``clip_sample`` range, and not at all without one (DDIM's last step returns the clean latent)."""
    from sava_core.components.params import DiffusionSamplerParams
    from sava_core.components.sampling import DiffusersSampler

    on = torch.ones(2, 1, dtype=torch.bool)
    cond = Condition(torch.zeros(2, 1, 4), on)
    x = DiffusersSampler(DiffusionSamplerParams(steps=3)).sample(CleanLatentBackbone(clip_sample), cond, cond, 2,
                                                                 torch.Generator().manual_seed(0))
    assert torch.allclose(x, torch.full((2, 4), expected))


def test_world_backbones_clip_audio_samples_and_not_video_samples():
    from sava_synth.params import SynthLatteParams, SynthUNetParams

    assert SynthLatteParams().clip_sample is None
    assert SynthUNetParams(modality="video").clip_sample is None
    assert SynthUNetParams(modality="audio").clip_sample == 1.0
    assert SynthUNetParams(modality="audio", clip_sample=None).clip_sample is None


def test_cascade_reads_the_generated_video_through_its_frames(t2av_run):
    """P_theta gets f_v of the generated video's decoded frames, as it would of any clip, not the sampled grid."""
    from sava_core.encoding import encode_grids
    from sava_core.pipeline import SavaPipeline

    cell = t2av_run / "runs" / "cascade" / "seed-0"
    recipe = plan(REPO / "recipes" / "quickstart.yaml", TINY_T2AV).cells[1].recipe
    pipe = SavaPipeline.from_cell(recipe, cell, get_registries())
    gen = pipe.generators
    assert gen is not None and pipe.projector is not None
    seen: list[Tensor] = []
    pipe.projector.register_forward_hook(lambda module, args, out: seen.append(args[0].cpu()))
    out = pipe(["a red ball bounces twice in front of a blue wall"], seed=0)
    # the pipeline's encoding of the frames vs ours (possibly in other batches): equal up to rounding
    # through the 4-layer conv encoder (|values| ~ 7); the sampled grid is off by 10
    assert_close_f32(seen[0], gen.video_vae.grid_to_sequence(encode_grids(gen.video_vae, out["video"])), depth=4)
    assert not torch.allclose(seen[0], gen.video_vae.grid_to_sequence(out["video_grid"]), atol=1e-2)


def test_shipped_weights_in_a_resized_component_are_a_clear_error():
    from sava_core.errors import SavaError

    weights = REPO / "plugins" / "sava_synth" / "weights" / "t2v.safetensors"
    with pytest.raises(SavaError, match="trained for other parameters .*size mismatch"):
        get_registries()["backbone"].build("synth_unet", {"modality": "video", "block_out_channels": [32, 32],
                                                          "pretrained": str(weights)},
                                           latent_shape=(16, 4, 8, 8), condition_dim=64)


def test_audio_decoding_does_not_depend_on_the_global_random_state():
    """Griffin-Lim's random initial phase comes from a fixed seed: decoding the same latents gives the
    same waveform whatever ran before (so a cell's audio does not depend on which cells ran first)."""
    from sava_synth.models import SynthAudioAE
    from sava_synth.params import AudioAEParams

    torch.manual_seed(0)
    ae = SynthAudioAE(AudioAEParams(griffin_lim_iters=4)).eval()
    grid = torch.randn(2, *ae.encode_grid(torch.zeros(1, 1, 16000)).shape[1:])
    with torch.no_grad():
        torch.manual_seed(1)
        a = ae.decode_grid(grid)
        torch.rand(1000)
        b = ae.decode_grid(grid)
    assert torch.equal(a, b)


def test_settings_used_after_pretraining_keep_the_shipped_weights():
    """The media-world recipes find the shipped generators. Changing how Stage II's condition is
    attended (condition_window) or how the sampler runs the reverse process (guidance, steps,
    scheduler, clipping) reuses them; changing the backbone's architecture or the noise schedule does not
    (they need their own pretraining)."""
    from sava_synth.pretrain import shipped_weights

    def shipped(*overrides: str, recipe: str = "quickstart") -> bool:
        cell = plan(REPO / "recipes" / f"{recipe}.yaml", list(overrides)).cells[0].recipe
        return shipped_weights(cell, get_registries()) is not None

    assert all(shipped(recipe=name) for name in ("synth_pretrain", "t2av_synth", "sensitivity"))
    assert shipped() and shipped("model.audio_backbone.params.condition_window=0")
    assert shipped("model.video_backbone.params.condition_window=0")
    assert shipped(
        "model.sampler.params.guidance_scale=5", "model.sampler.params.steps=10", "model.sampler.params.scheduler=dpm"
    )
    assert shipped("model.video_backbone.params.clip_sample=2.0", "model.audio_backbone.params.clip_sample=null")
    assert not shipped("model.audio_backbone.params.layers_per_block=2")
    assert not shipped("model.sampler.params.beta_schedule=linear")
    # a pretraining setting spelled out at its default (as a new option's default is) keeps the key
    assert shipped("pretrain.video.max_grad_norm=null", "pretrain.audio.weight_decay=0.0")
    assert not shipped("pretrain.video.max_grad_norm=1.0")


def test_world_components_answer_on_their_own_device():
    """The media world's text encoder and autoencoders return tensors on the device their weights
    are on (checked on PyTorch's shape-only ``meta`` device, standing in for a GPU)."""
    from sava_synth.models import HashTextEncoder, SynthVideoAE
    from sava_synth.params import HashTextParams, VideoAEParams

    text = HashTextEncoder(HashTextParams()).to("meta")
    emb = text.encode(["a red ball bounces", ""])
    assert {emb.tokens.device.type, emb.mask.device.type, emb.pooled.device.type} == {"meta"}
    video_ae = SynthVideoAE(VideoAEParams()).to("meta")
    grid = video_ae.encode_grid(torch.rand(1, 2, 3, 32, 32, device="meta"))
    assert video_ae.decode_grid(grid).device.type == "meta"
