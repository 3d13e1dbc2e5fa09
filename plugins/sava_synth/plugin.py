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
    for kind, name, target, params, summary in (
        ("video_encoder", "synth_video_ae", "SynthVideoAE", "VideoAEParams", "media world: per-frame conv autoencoder"),
        ("audio_encoder", "synth_audio_ae", "SynthAudioAE", "AudioAEParams", "media world: log-mel conv autoencoder + Griffin-Lim"),
        ("text_encoder", "hash_words", "HashTextEncoder", "HashTextParams", "frozen hashed word embeddings + positions"),
        ("backbone", "synth_unet", "SynthUNet", "SynthUNetParams", "media world: diffusers UNet2DConditionModel denoiser"),
    ):
        registry.register(kind, name, f"sava_synth.models:{target}", params=f"sava_synth.params:{params}", summary=summary)
