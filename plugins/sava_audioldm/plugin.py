"""Registers the audioldm components. Loaded through the ``sava.plugins`` entry point ``audioldm``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    for kind, name, target, params, summary in (
        ("audio_encoder", "audioldm_vae", "vae:AudioLDMVAE", "AudioLDMVAEParams",
         "AudioLDM / AudioLDM2 log-mel VAE (diffusers AutoencoderKL) + HiFi-GAN vocoder"),
        ("backbone", "audioldm", "backbones:AudioLDM", "AudioLDMParams",
         "AudioLDM v1 UNet: FiLM on the pooled CLAP embedding; Stage II extra tokens widen the FiLM input"),
        ("backbone", "audioldm2", "backbones:AudioLDM2", "AudioLDM2Params",
         "AudioLDM2 UNet: cross-attention to GPT-2 generated and T5 tokens; extra tokens join the GPT-2 stream"),
        ("text_encoder", "audioldm2_text", "text:AudioLDM2Text", "AudioLDM2TextParams",
         "AudioLDM2 conditioning: CLAP + Flan-T5 -> GPT-2 (8 generated tokens), packed with the T5 tokens"),
    ):
        registry.register(kind, name, f"sava_audioldm.{target}", params=f"sava_audioldm.params:{params}",
                          summary=summary)
