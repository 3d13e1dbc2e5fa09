"""Registers the synthetic worlds, their components and the media world's ``pretrain`` stage, and
answers the core's requests for those components' weights. Loaded through the ``sava.plugins``
entry point ``synth``; torch-free (the targets are imported when used)."""

from __future__ import annotations

from sava_core.plugin import WeightsRequest, hookimpl
from sava_core.registry import Registration


@hookimpl
def sava_component_weights(request: WeightsRequest) -> str | None:
    from sava_synth.pretrain import component_weights

    return component_weights(request)


@hookimpl
def sava_register(registry: Registration) -> None:
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
        (
            "audio_encoder", "synth_audio_ae", "SynthAudioAE", "AudioAEParams",
            "media world: log-mel conv autoencoder + Griffin-Lim",
        ),
        (
            "text_encoder", "hash_words", "HashTextEncoder", "HashTextParams",
            "frozen hashed word embeddings + positions",
        ),
        (
            "backbone", "synth_unet", "SynthUNet", "SynthUNetParams",
            "media world: diffusers UNet2DConditionModel denoiser",
        ),
        (
            "backbone", "synth_latte", "SynthLatte", "SynthLatteParams",
            "media world video: diffusers LatteTransformer3DModel (space-time), time-aligned condition tokens",
        ),
    ):
        registry.register(
            kind, name, f"sava_synth.models:{target}", params=f"sava_synth.params:{params}", summary=summary
        )
    registry.register("stage", "pretrain", "sava_synth.pretrain:Pretrain",
                      summary="media world: train its autoencoders and T2V / T2A once (skipped when the weights exist)")
