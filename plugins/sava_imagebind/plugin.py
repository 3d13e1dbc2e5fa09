"""Registers the imagebind components. Loaded through the ``sava.plugins`` entry point ``imagebind``.

ImageBind's code and weights are CC-BY-NC 4.0 (non-commercial use only).
"""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register(
        "video_encoder", "imagebind_vision", "sava_imagebind.encoders:ImageBindVision",
        params="sava_imagebind.params:ImageBindVisionParams",
        summary="ImageBind-Huge vision embedding of every frame (B, F, 1024), local imagebind_huge.pth; CC-BY-NC 4.0",
    )
    registry.register(
        "audio_encoder", "imagebind_audio", "sava_imagebind.encoders:ImageBindAudio",
        params="sava_imagebind.params:ImageBindAudioParams",
        summary="ImageBind-Huge audio embeddings of sliding 2 s windows (B, T, 1024), 16 kHz; CC-BY-NC 4.0",
    )
