"""Registers the synthetic worlds. Loaded through the ``sava.plugins`` entry point ``synth``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register(
        "dataset",
        "factor_world",
        "sava_synth.factor_world:FactorWorld",
        params="sava_synth.params:FactorWorldParams",
        summary="shared / video-only / audio-only factors entangled into frozen encoder latents (ground truth)",
    )
    registry.register(
        "dataset",
        "media_world",
        "sava_synth.media_world:MediaWorld",
        params="sava_synth.params:MediaWorldParams",
        summary="procedural audio-visual clips: a bouncing object seen and heard, silent scenery, off-screen sounds",
    )
