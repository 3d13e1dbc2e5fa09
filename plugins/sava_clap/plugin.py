"""Registers the clap components. Loaded through the ``sava.plugins`` entry point ``clap``."""

from sava_core.plugin import hookimpl


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("text_encoder", "clap_text", "sava_clap.models:ClapText",
                      params="sava_clap.params:ClapTextParams",
                      summary="CLAP text tower (transformers): RoBERTa tokens, "
                              "or the pooled embedding AudioLDM v1 uses")
    registry.register("audio_encoder", "clap", "sava_clap.models:ClapAudio",
                      params="sava_clap.params:ClapAudioParams",
                      summary="CLAP audio embeddings of sliding windows "
                              "(transformers ClapModel, or laion-clap checkpoints)")
