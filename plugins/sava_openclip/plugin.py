"""Registers the openclip components. Loaded through the ``sava.plugins`` entry point ``openclip``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("video_encoder", "openclip", "sava_openclip.models:OpenCLIPVideo",
                      params="sava_openclip.params:OpenCLIPVideoParams",
                      summary="OpenCLIP frame embeddings (B, F, D): an analysis encoder for Stage I, no latent grid")
    registry.register("text_encoder", "openclip_text", "sava_openclip.models:OpenCLIPText",
                      params="sava_openclip.params:OpenCLIPTextParams",
                      summary="OpenCLIP text features: projected token outputs and the text embedding")
