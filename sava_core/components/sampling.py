"""Diffusion schedules and classifier-free-guided sampling with diffusers schedulers."""

from __future__ import annotations

import torch
from torch import Tensor

from sava_core.components.params import DiffusionSamplerParams
from sava_core.contracts import Backbone, Condition, Sampler


class DiffusersSampler(Sampler):
    """Reverse process with a diffusers scheduler and classifier-free guidance:
    eps = eps(x, uncond) + s * (eps(x, cond) - eps(x, uncond))."""

    Params = DiffusionSamplerParams

    def __init__(self, params: DiffusionSamplerParams):
        self.params = params

    def _config(self) -> dict:
        p = self.params
        return {"num_train_timesteps": p.num_train_timesteps, "beta_schedule": p.beta_schedule,
                "prediction_type": "epsilon"}

    def train_scheduler(self):  # type: ignore[no-untyped-def]
        """The DDPM forward process used to noise training latents (``add_noise``)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self._config())

    def scheduler(self):  # type: ignore[no-untyped-def]
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}[self.params.scheduler]
        return cls(**self._config())

    @torch.no_grad()
    def sample(self, backbone: Backbone, condition: Condition, uncond: Condition, batch_size: int,
               generator: torch.Generator) -> Tensor:
        device = next(backbone.parameters()).device
        scheduler = self.scheduler()
        scheduler.set_timesteps(self.params.steps)
        x = torch.randn((batch_size, *backbone.latent_shape), generator=generator).to(device)
        x = x * scheduler.init_noise_sigma
        s = self.params.guidance_scale
        for t in scheduler.timesteps:
            ts = torch.full((batch_size,), int(t), device=device, dtype=torch.long)
            inp = scheduler.scale_model_input(x, t)
            eps = backbone(inp, ts, condition)
            if s != 1.0:
                eps_u = backbone(inp, ts, uncond)
                eps = eps_u + s * (eps - eps_u)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return x
