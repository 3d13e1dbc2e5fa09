"""The ``core`` plug-in: the core's own Stage I components, registered through the same
``sava.plugins`` entry point (and hook) a third-party package uses."""

from sava_core.plugin import hookimpl

_STAGE1 = "sava_core.components.stage1"
_PARAMS = "sava_core.components.params"


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("adapter", "mlp", f"{_STAGE1}:MLPAdapter", params=f"{_PARAMS}:MLPParams",
                      summary="q_V / q_A: per-step MLP, encoder latent -> aligned latent of width d")
    registry.register("mask", "mlp", f"{_STAGE1}:MLPMask", params=f"{_PARAMS}:MaskParams",
                      summary="M_V / M_A: sigmoid MLP; mode none | video_only | joint, soft or hard")
    registry.register("decoder", "mlp", f"{_STAGE1}:MLPDecoder", params=f"{_PARAMS}:MLPParams",
                      summary="g_A / g_V: per-step MLP, masked latent -> partner's encoder latent")
    registry.register("projector", "mlp", f"{_STAGE1}:MLPProjector", params=f"{_PARAMS}:MLPParams",
                      summary="P_theta: per-step MLP, video latent alone -> masked aligned video latent")
    registry.register("sampler", "diffusers", "sava_core.components.sampling:DiffusersSampler",
                      params=f"{_PARAMS}:DiffusionSamplerParams",
                      summary="diffusers DDIM / DPM-Solver / DDPM with classifier-free guidance")
