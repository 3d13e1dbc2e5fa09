"""The ``tiny`` preset: LTX-2's upstream classes from small configs with random weights, offline.

Each builder seeds ``torch.manual_seed(0)`` before constructing, so a tiny VAE is the same whether it
is built alone (the encoders) or inside the tiny pipeline (the joint generator). Rates mirror the
released model: audio VAE at 16 kHz with a 160-sample hop (25 latent steps per second), vocoder
output at 24 kHz; the video VAE compresses 2x in time and 8x in space (released: 8x and 32x).
"""

from __future__ import annotations

from typing import Any

import torch

from sava_core.pretrained import tiny_tokenizer

TEXT_HIDDEN = 32
TEXT_LAYERS = 2
SAMPLE_RATE = 16000
HOP = 160
MEL_BINS = 16
#: Generation sizes of the tiny preset (the released model's defaults are in the pipeline).
TINY_CALL = {"num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16}


def text_encoder(vocab_size: int) -> Any:
    """A two-layer ``Gemma3ForConditionalGeneration`` (LTX-2's text encoder class) of width 32."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={"vocab_size": vocab_size, "hidden_size": TEXT_HIDDEN, "intermediate_size": 64,
                     "num_hidden_layers": TEXT_LAYERS, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "head_dim": 16, "sliding_window": 16, "max_position_embeddings": 256,
                     "layer_types": ["sliding_attention", "full_attention"]},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        mm_tokens_per_image=4, boi_token_index=2, eoi_token_index=1, image_token_index=4,
    )
    torch.manual_seed(0)
    return Gemma3ForConditionalGeneration(config).eval()


def connectors() -> Any:
    """``LTX2TextConnectors`` from the tiny Gemma's stacked hidden states to both streams."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    torch.manual_seed(0)
    return LTX2TextConnectors(
        caption_channels=TEXT_HIDDEN, text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_double_precision=False,
        rope_type="split",
    )


def transformer() -> Any:
    """A two-block ``LTX2VideoTransformer3DModel`` with audio-to-video and video-to-audio attention."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        vae_scale_factors=(2, 8, 8), audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, audio_sampling_rate=SAMPLE_RATE, audio_hop_length=HOP,
        num_layers=2, caption_channels=TEXT_HIDDEN, rope_double_precision=False, rope_type="split",
    )


def video_vae() -> Any:
    """``AutoencoderKLLTX2Video``: 4 latent channels, 2x temporal and 8x spatial compression."""
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    return AutoencoderKLLTX2Video(
        latent_channels=4, block_out_channels=(8,), down_block_types=("LTX2VideoDownBlock3D",),
        decoder_block_out_channels=(8,), layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False),
        downsample_type=("spatiotemporal",), upsample_type=("spatiotemporal",), upsample_residual=(False,),
        upsample_factor=(1,), patch_size=4, encoder_causal=True, decoder_causal=False,
    ).eval()


def audio_vae() -> Any:
    """``AutoencoderKLLTX2Audio``: stereo 16-bin log-mel at 16 kHz -> 2 channels x 4 bins, 4x in time."""
    from diffusers import AutoencoderKLLTX2Audio

    torch.manual_seed(0)
    # base_channels = latent_channels * mel_bins / 4: the width of the per-feature latent statistics
    return AutoencoderKLLTX2Audio(
        base_channels=8, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, in_channels=2, resolution=16,
        latent_channels=2, sample_rate=SAMPLE_RATE, mel_hop_length=HOP, mel_bins=MEL_BINS,
    ).eval()


def vocoder() -> Any:
    """``LTX2Vocoder``: 2 x 16 mel channels at 100 frames/s -> stereo 24 kHz (x240)."""
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)
    return LTX2Vocoder(
        in_channels=2 * MEL_BINS, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[12, 15, 16],
        upsample_factors=[6, 5, 8], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3]], output_sampling_rate=24000,
    ).eval()


def scheduler() -> Any:
    """The released pipeline's scheduler (diffusers' conversion script): resolution-shifted flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


def pipeline() -> Any:
    """The whole tiny ``LTX2Pipeline``."""
    from diffusers import LTX2Pipeline

    tokenizer = tiny_tokenizer("gemma")
    pipe = LTX2Pipeline(scheduler=scheduler(), vae=video_vae(), audio_vae=audio_vae(),
                        text_encoder=text_encoder(len(tokenizer)), tokenizer=tokenizer, connectors=connectors(),
                        transformer=transformer(), vocoder=vocoder())
    return pipe
