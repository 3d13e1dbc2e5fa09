"""Diffusion schedules and classifier-free-guided sampling with diffusers schedulers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sava_core.components.params import DiffusionSamplerParams
from sava_core.contracts import Backbone, Condition, Sampler
from sava_core.errors import SavaError

_GENERIC = ("DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler")


def _own_class(config: dict[str, Any]) -> Any:
    """The scheduler class a schedule's config names (``_class_name``) when the schedule has settings
    that no generic scheduler (DDIM, DDPM, DPM-Solver) reads, e.g. CogVideoX's ``snr_shift_scale``
    (which shifts alphas_cumprod): sampling or noising it with a generic class would change the
    schedule. None when the generic classes read all of it."""
    import inspect

    import diffusers

    known: set[str] = set()
    for name in _GENERIC:
        known |= set(inspect.signature(getattr(diffusers, name).__init__).parameters)
    extra = {k for k in config if not k.startswith("_")} - known
    own = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not extra:
        return None
    if own is None:
        raise SavaError("a backbone's scheduler_config has settings no generic scheduler reads "
                        f"({', '.join(sorted(extra))}) "
                        f"and names no diffusers scheduler class (_class_name {config.get('_class_name')!r})")
    return own


class DiffusersSampler(Sampler):
    """Reverse process with a diffusers scheduler and classifier-free guidance:
    eps = eps(x, uncond) + s * (eps(x, cond) - eps(x, uncond)), or, with ``condition_guidance_scale``
    s_c and a condition with extra tokens, text and extra condition guided apart:
    eps = eps(x, uncond) + s * (eps(x, text only) - eps(x, uncond)) + s_c * (eps(x, cond) - eps(x, text only)).

    The noise schedule is the backbone's own (``backbone.scheduler_config``, e.g. CogVideoX's
    zero-SNR v-prediction schedule) when it has one, else this sampler's parameters with the
    backbone's ``clip_sample`` (diffusers clips the predicted clean latent to [-1, 1] unless told
    otherwise, which on unit-scale latents cuts away whatever lies beyond one standard deviation);
    the recipe picks the scheduler class, the number of steps and the guidance. A schedule with settings
    the generic schedulers do not read keeps the class its config names (``_class_name``)."""

    Params = DiffusionSamplerParams
    params: DiffusionSamplerParams

    def __init__(self, params: DiffusionSamplerParams):
        self.params = params

    def _config(self, backbone: Backbone) -> dict[str, Any]:
        if backbone.scheduler_config is not None:
            return {**backbone.scheduler_config, "prediction_type": backbone.prediction_type}
        p = self.params
        return {"num_train_timesteps": p.num_train_timesteps, "beta_schedule": p.beta_schedule,
                "prediction_type": backbone.prediction_type, "clip_sample": backbone.clip_sample is not None,
                "clip_sample_range": backbone.clip_sample or 1.0}

    def train_scheduler(self, backbone: Backbone) -> Any:
        """The forward process used to noise training latents (``add_noise``, ``get_velocity``)."""
        from diffusers import DDPMScheduler

        config = self._config(backbone)
        return (_own_class(config) or DDPMScheduler).from_config(config)

    def scheduler(self, backbone: Backbone) -> Any:
        """The scheduler that samples: the recipe's class, or the schedule's own where it must be kept."""
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}[self.params.scheduler]
        config = self._config(backbone)
        own = _own_class(config)
        if own is not None and self.params.scheduler != "ddim":
            raise SavaError(f"model.sampler.params.scheduler: {type(backbone).__name__} samples with {own.__name__} "
                            "(its noise schedule); set scheduler: ddim")
        return (own or cls).from_config(config)

    @torch.no_grad()
    def sample(self, backbone: Backbone, condition: Condition, uncond: Condition, batch_size: int,
               generator: torch.Generator, *, noise: Tensor | None = None) -> Tensor:
        """Denoised latents (B, *latent_shape), float32, from unit Gaussian noise drawn on the CPU from
        ``generator`` (its first draw) or given as ``noise`` (B, *latent_shape) (e.g. a diffusers
        pipeline's ``latents=``); either is scaled by the scheduler's ``init_noise_sigma``. The
        scheduler's stochastic steps (DDPM) draw from ``generator`` in both cases."""
        param = next(backbone.parameters())
        device, dtype = param.device, param.dtype
        scheduler = self.scheduler(backbone)
        scheduler.set_timesteps(self.params.steps)
        shape = (batch_size, *backbone.latent_shape)
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise of shape {tuple(noise.shape)}; this sampling needs (batch_size, *latent_shape) = "
                             f"{shape}")
        x = noise.to(device, torch.float32) * scheduler.init_noise_sigma
        s, s_c = self.params.guidance_scale, self.params.condition_guidance_scale
        text_only = None
        if s_c is not None and condition.extra is not None:
            text_only = Condition(
                condition.text, condition.text_mask, condition.extra,
                torch.zeros(condition.extra.shape[:2], dtype=torch.bool, device=condition.extra.device),
            )
        for t in scheduler.timesteps:
            ts = torch.full((batch_size,), int(t), device=device, dtype=torch.long)
            inp = scheduler.scale_model_input(x, t).to(dtype)
            eps = backbone(inp, ts, condition).float()
            if text_only is not None:
                eps_t, eps_u = backbone(inp, ts, text_only).float(), backbone(inp, ts, uncond).float()
                eps = eps_u + s * (eps_t - eps_u) + s_c * (eps - eps_t)
            elif s != 1.0:
                eps_u = backbone(inp, ts, uncond).float()
                eps = eps_u + s * (eps - eps_u)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return x
