"""Registers the animatediff components. Loaded through the ``sava.plugins`` entry point ``animatediff``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    for kind, name, target, params, summary in (
        ("video_encoder", "sd_vae", "SDVAE", "SDVAEParams",
         "Stable Diffusion VAE (diffusers AutoencoderKL) per frame: grid (F, 4, H/8, W/8), pooled sequence"),
        ("text_encoder", "clip_text", "CLIPText", "CLIPTextParams",
         "Stable Diffusion's CLIP text encoder (transformers)"),
        ("backbone", "animatediff", "AnimateDiff", "AnimateDiffParams",
         "AnimateDiff: SD 1.5 UNet + motion adapter (diffusers UNetMotionModel); extra tokens in cross-attention"),
    ):
        registry.register(kind, name, f"sava_animatediff.models:{target}", params=f"sava_animatediff.params:{params}",
                          summary=summary)
