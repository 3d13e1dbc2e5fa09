"""Parameter models of the core's components. Torch-free, so recipes validate without torch."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from sava_core.config import StrictModel


class MLPParams(StrictModel):
    """A per-time-step multilayer perceptron (used by adapters, decoders and the projector)."""

    hidden: int = Field(128, ge=1, description="width of the hidden layers")
    layers: int = Field(2, ge=1, description="number of linear layers (1 = a single linear map)")
    activation: Literal["gelu", "relu", "silu", "tanh"] = "gelu"
    dropout: float = Field(0.0, ge=0, lt=1)


class MaskParams(StrictModel):
    """Mask networks M_V, M_A (Eq. 4-5) and the leakage mitigations of the joint variant."""

    mode: Literal["none", "video_only", "joint", "predicted"] = Field(
        "joint", description="Table 3: none = direct alignment; video_only = own latent only; joint = both; "
        "predicted = own latent and its own prediction of the partner (trained on the partner, never reads it)"
    )
    hard: bool = Field(False, description="threshold at `threshold` with a straight-through gradient")
    threshold: float = Field(0.5, gt=0, lt=1)
    hidden: int = Field(64, ge=1)
    init_open: float = Field(1.0, description="initial logit bias: masks start at sigmoid(init_open)")
    partner_stop_grad: bool = Field(False, description="joint only: no gradient into the partner input")
    partner_noise: float = Field(
        0.0, ge=0, description="joint only: std of Gaussian noise on the partner input while training"
    )
    partner_dropout: float = Field(
        0.0, ge=0, le=1, description="joint only: probability of zeroing the partner input per clip while training"
    )
    predictor_hidden: int = Field(64, ge=1, description="predicted only: hidden width of the partner predictor")


class HardConcreteMaskParams(StrictModel):
    """An L0 mask (Louizos et al., 2018, "Learning Sparse Neural Networks through L0
    Regularization"): stretched hard-concrete gates whose log-odds an MLP predicts per time step."""

    mode: Literal["video_only", "joint"] = Field(
        "joint", description="video_only = gates from the own latent; joint = from [own; partner]"
    )
    hidden: int = Field(64, ge=1)
    init_open: float = Field(2.0, description="initial log-odds bias of the gates (2: about 88% open)")
    temperature: float = Field(2 / 3, gt=0, description="beta of the concrete distribution (the paper's 2/3)")
    stretch: tuple[float, float] = Field(
        (-0.1, 1.1), description="(gamma, zeta): the gate is stretched to this interval, then clipped to [0, 1]"
    )
    partner_stop_grad: bool = Field(False, description="joint only: no gradient into the partner input")

    @field_validator("stretch")
    @classmethod
    def _stretch_contains_unit_interval(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not (value[0] < 0 and value[1] > 1):
            raise ValueError(f"stretch {list(value)}: gamma must be < 0 and zeta > 1 so gates reach exactly 0 and 1")
        return value


class DiffusionSamplerParams(StrictModel):
    """The noise schedule (shared by training and sampling) and the reverse process (App. C)."""

    # only the reverse process: left out of the synthetic world's pretrain key (changing them keeps its weights)
    after_pretraining: ClassVar[tuple[str, ...]] = ("scheduler", "steps", "guidance_scale", "condition_guidance_scale")

    scheduler: Literal["ddim", "dpm", "ddpm"] = Field("ddim", description="diffusers scheduler used to sample")
    steps: int = Field(25, ge=1, description="denoising steps at sampling time")
    guidance_scale: float = Field(3.0, ge=0, description="classifier-free guidance; 1 = none")
    condition_guidance_scale: float | None = Field(
        None, ge=0, description="guidance on Stage II's extra condition apart from the text: "
        "eps = e(0, 0) + s (e(T, 0) - e(0, 0)) + s_c (e(T, c) - e(T, 0)), three backbone passes per step; "
        "null: one scale for both (two passes). "
        "Fine-tune with finetune.condition_dropout > 0 so that e(T, 0) is trained")
    num_train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
