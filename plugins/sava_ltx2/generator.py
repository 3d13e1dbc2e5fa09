"""LTX-2 as the "joint generation" baseline: one transformer denoises video and audio latents together
(self-attention per stream, ``audio_to_video_attn`` / ``video_to_audio_attn`` between them), then the
video VAE decodes frames and the audio VAE + vocoder decode the waveform. Wraps diffusers' ``LTX2Pipeline``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sava_core.contracts import JointGenerator
from sava_core.errors import SavaError
from sava_core.pretrained import torch_dtype
from sava_ltx2 import tiny
from sava_ltx2.loading import pipeline_dir
from sava_ltx2.params import LTX2Params

SETTING = "model.joint_generator.params"
#: Call arguments passed to the pipeline only when set (otherwise the pipeline's defaults hold).
GUIDANCE = ("guidance_scale", "audio_guidance_scale", "stg_scale", "audio_stg_scale", "modality_scale",
            "audio_modality_scale", "guidance_rescale", "audio_guidance_rescale", "spatio_temporal_guidance_blocks",
            "use_cross_timestep", "negative_prompt")
#: The released model's sizes (LTX2Pipeline's defaults).
RELEASED_CALL = {"num_frames": 121, "height": 512, "width": 768, "num_inference_steps": 30, "max_sequence_length": 1024}


def load_pipeline(params: LTX2Params) -> Any:
    """The ``LTX2Pipeline`` of ``params`` (tiny build or ``from_pretrained``) in ``params.dtype``."""
    from diffusers import LTX2Pipeline

    dtype = torch_dtype(params.dtype)
    if params.preset == "tiny":
        pipe = tiny.pipeline()
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        pipe = LTX2Pipeline.from_pretrained(str(pipeline_dir(params.pretrained, f"{SETTING}.pretrained")), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LTX2JointGenerator(JointGenerator):
    """Prompts -> (video (B, F, 3, H, W) in [0, 1] at ``fps``, audio (B, C, S) in [-1, 1] at ``sample_rate``).

    ``fps`` is ``frame_rate``; ``sample_rate`` is the vocoder's output rate (24 kHz for LTX-2.0). The
    audio is cut or zero-padded to exactly the video's duration, F / fps seconds (the pipeline's is
    shorter: round(F / fps * 25) audio latents of 4 mel frames of 10 ms, less the causal decoder's 3
    frames; 32 ms short for 121 frames at 24 fps, 45 ms for the tiny preset's 9), and clamped to
    [-1, 1]. Outputs are float32 on the CPU. The same generator state gives the same clip (the
    pipeline's own, bit for bit: tests/test_parity.py). ``forward`` is ``generate``.
    """

    Params = LTX2Params

    def __init__(self, params: LTX2Params):
        super().__init__()
        self.params = params
        self.pipe = load_pipeline(params)
        # Registered as submodules so that .to(), .eval() and state_dict() see the pipeline's models.
        self.models = nn.ModuleDict({k: v for k, v in self.pipe.components.items() if isinstance(v, nn.Module)})
        self.requires_grad_(False).eval()
        sizes = tiny.TINY_CALL if params.preset == "tiny" else RELEASED_CALL
        self.call_sizes = {k: sizes[k] if getattr(params, k) is None else getattr(params, k) for k in sizes}
        self.num_frames = self.call_sizes["num_frames"]
        self.fps = params.frame_rate
        self.sample_rate = int(self.pipe.vocoder.config.output_sampling_rate)
        self._check_sizes()
        if params.vae_tiling:
            self.pipe.vae.enable_tiling()
        if params.vae_slicing:
            self.pipe.vae.enable_slicing()
            self.pipe.audio_vae.enable_slicing()
        if params.enable_model_cpu_offload:
            if not torch.accelerator.is_available():
                raise SavaError(f"{SETTING}.enable_model_cpu_offload: offloading needs a GPU and none is available; "
                                "set it to false")
            self.pipe.enable_model_cpu_offload()

    def _check_sizes(self) -> None:
        temporal, spatial = self.pipe.vae_temporal_compression_ratio, self.pipe.vae_spatial_compression_ratio
        if (self.num_frames - 1) % temporal:
            raise SavaError(f"{SETTING}.num_frames: {self.num_frames} frames; this model generates "
                            f"{temporal}k + 1 frames (e.g. {temporal + 1}, {4 * temporal + 1}, {15 * temporal + 1})")
        for key in ("height", "width"):
            if self.call_sizes[key] % spatial:
                raise SavaError(f"{SETTING}.{key}: {self.call_sizes[key]} is not a multiple of {spatial}, "
                                "the video VAE's spatial compression")

    def to(self, *args: Any, **kwargs: Any) -> LTX2JointGenerator:
        """Move or cast the models, except with model CPU offload, where the offload hooks place them."""
        if self.params.enable_model_cpu_offload:
            return self
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """B prompts -> video (B, F, 3, H, W) in [0, 1], audio (B, C, round(F / fps * sample_rate)) in [-1, 1]."""
        p = self.params
        extra = {k: getattr(p, k) for k in GUIDANCE if getattr(p, k) is not None}
        out = self.pipe(prompt=list(prompts), frame_rate=self.fps, generator=generator, output_type="pt",
                        **self.call_sizes, **extra)
        video = out.frames.float().clamp(0, 1).cpu()
        audio = out.audio.float().clamp(-1, 1).cpu()
        samples = round(self.num_frames / self.fps * self.sample_rate)
        audio = nn.functional.pad(audio, (0, max(samples - audio.shape[-1], 0)))[..., :samples]
        return video, audio

    @torch.no_grad()
    def check_step(self) -> dict[str, tuple[int, ...]]:
        """The first guided denoising step of the pipeline's own schedule at the call sizes, for one clip,
        from zero text embeddings of the text encoder's stacked hidden states (B, L, hidden x (layers + 1)):
        nothing is tokenized or decoded. Returns the shapes of the video and audio latents after it;
        ``sava validate --build`` runs it on the meta device."""
        p, weight = self.params, next(self.pipe.transformer.parameters())
        text = self.pipe.text_encoder.config.get_text_config()
        length = self.call_sizes["max_sequence_length"]
        embeds = torch.zeros(1, length, text.hidden_size * (text.num_hidden_layers + 1), device=weight.device,
                             dtype=weight.dtype)
        mask = torch.ones(1, length, dtype=torch.long, device=weight.device)
        extra = {k: getattr(p, k) for k in GUIDANCE if k != "negative_prompt" and getattr(p, k) is not None}

        def stop(pipe: Any, step: int, timestep: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            pipe._interrupt = True
            return tensors

        out = self.pipe(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=embeds,
                        negative_prompt_attention_mask=mask, frame_rate=self.fps, output_type="latent",
                        callback_on_step_end=stop, **self.call_sizes, **extra)
        return {"video_latents": tuple(out.frames.shape), "audio_latents": tuple(out.audio.shape)}

    def forward(self, prompts: list[str], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.generate(prompts, generator)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the whole pipeline in the diffusers layout (loadable with ``pretrained: <directory>``)."""
        self.pipe.save_pretrained(str(directory))
