"""The ``core`` plug-in: the core's own Stage I components, the sampler, the paper's stages and the
generation modes, registered through the same ``sava.plugins`` entry point (and hook) a
third-party package uses."""

from sava_core.plugin import hookimpl
from sava_core.registry import Registration

_STAGE1 = "sava_core.components.stage1"
_PARAMS = "sava_core.components.params"


@hookimpl
def sava_register(registry: Registration) -> None:
    registry.register("adapter", "mlp", f"{_STAGE1}:MLPAdapter", params=f"{_PARAMS}:MLPParams",
                      summary="q_V / q_A: per-step MLP, encoder latent -> aligned latent of width d")
    registry.register("mask", "mlp", f"{_STAGE1}:MLPMask", params=f"{_PARAMS}:MaskParams",
                      summary="M_V / M_A: sigmoid MLP; mode none | video_only | joint, soft or hard")
    registry.register("mask", "hard_concrete", f"{_STAGE1}:HardConcreteMask",
                      params=f"{_PARAMS}:HardConcreteMaskParams",
                      summary="M_V / M_A: L0 mask, stretched hard-concrete gates with the expected-L0 penalty")
    registry.register("decoder", "mlp", f"{_STAGE1}:MLPDecoder", params=f"{_PARAMS}:MLPParams",
                      summary="g_A / g_V: per-step MLP, masked latent -> partner's encoder latent")
    registry.register("projector", "mlp", f"{_STAGE1}:MLPProjector", params=f"{_PARAMS}:MLPParams",
                      summary="P_theta: per-step MLP, video latent alone -> masked aligned video latent")
    registry.register("sampler", "diffusers", "sava_core.components.sampling:DiffusersSampler",
                      params=f"{_PARAMS}:DiffusionSamplerParams",
                      summary="diffusers DDIM / DPM-Solver / DDPM with classifier-free guidance")
    for name, target, summary in (
        ("align", "sava_core.stages.align:Align", "Stage I: masked latent alignment (Eq. 7), P_theta, the audit"),
        ("finetune", "sava_core.stages.finetune:Finetune", "Stage II: TV2A / TA2V, LoRA + phi (Eq. 8)"),
        ("generate", "sava_core.stages.generate:Generate", "Stage III: generation in generate.mode, samples, checks"),
    ):
        registry.register("stage", name, target, summary=summary)
    for name, target, summary in (
        ("two_stream", "TwoStream", "T2V and T2A independently from the same text (Table 1's two-stream baseline)"),
        ("cascade", "Cascade", "T2V -> P_theta -> TV2A (SAVA unidirectional)"),
        ("cascade_bidirectional", "CascadeBidirectional", "cascade, then TA2V from the generated audio"),
        ("joint", "Joint", "model.joint_generator makes both streams (joint-generation baseline)"),
        ("v2a", "VideoToAudio", "TV2A on the test clips' real videos and captions (Table 2)"),
    ):
        registry.register("generation_mode", name, f"sava_core.modes:{target}", summary=summary)
