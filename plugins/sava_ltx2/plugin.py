"""Registers the ltx2 components. Loaded through the ``sava.plugins`` entry point ``ltx2``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register(
        "joint_generator",
        "ltx2",
        "sava_ltx2.generator:LTX2JointGenerator",
        params="sava_ltx2.params:LTX2Params",
        summary="LTX-2 (diffusers LTX2Pipeline): one model generates video + audio",
    )
    registry.register(
        "video_encoder",
        "ltx2_video_vae",
        "sava_ltx2.encoders:LTX2VideoVAE",
        params="sava_ltx2.params:LTX2VideoVAEParams",
        summary="LTX-2 video VAE: 8k+1 frames -> k+1 pooled latent steps",
    )
    registry.register(
        "audio_encoder",
        "ltx2_audio_vae",
        "sava_ltx2.encoders:LTX2AudioVAE",
        params="sava_ltx2.params:LTX2AudioVAEParams",
        summary="LTX-2 audio VAE on 16 kHz log-mel, 25 steps/s; vocoder decodes",
    )
