"""Registers the cogvideox components. Loaded through the ``sava.plugins`` entry point ``cogvideox``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    for kind, name, target, params, summary in (
        ("video_encoder", "cogvideox_vae", "CogVideoXVAE", "CogVideoXVAEParams",
         "CogVideoX 3D VAE (diffusers AutoencoderKLCogVideoX): grid (F_lat, C, H/8, W/8), pooled sequence"),
        ("text_encoder", "t5", "T5Text", "T5Params", "T5 encoder (transformers) padded to max_length, as CogVideoX's"),
        ("backbone", "cogvideox", "CogVideoX", "CogVideoXParams",
         "CogVideoX transformer (diffusers), joint text-video attention; extra tokens in the text padding"),
    ):
        registry.register(kind, name, f"sava_cogvideox.models:{target}", params=f"sava_cogvideox.params:{params}",
                          summary=summary)
