"""Parameters of the synthetic worlds (torch-free)."""

from __future__ import annotations

from pydantic import Field

from sava_core.config import StrictModel


class FactorWorldParams(StrictModel):
    """The paper's causal model (section 2, Eq. 1-2) with known factors.

    Factors follow a linear Gaussian process over ``length`` steps: each group keeps
    ``persistence`` of its own past and is pushed by the past of the other groups with strength
    ``coupling`` (Eq. 1). Observations (the frozen "pretrained encoder outputs", Eq. 2) are random
    ``depth``-layer tanh networks of [Z_C; Z_V] (video) and [Z_C; Z_A] (audio), of width ``d``, plus
    Gaussian noise of std ``noise``; ``strength`` scales the pre-activations (0 = linear mixing).
    """

    n_shared: int = Field(4, ge=1, description="shared factors Z_C (seen and heard)")
    n_video: int = Field(6, ge=0, description="video-only factors Z_V")
    n_audio: int = Field(6, ge=0, description="audio-only factors Z_A")
    d: int = Field(32, ge=2, description="width of each frozen encoder output")
    length: int = Field(8, ge=1, description="time steps L per clip")
    depth: int = Field(2, ge=1, description="layers of the entangling map")
    strength: float = Field(1.5, ge=0, description="gain of the entangling nonlinearity")
    noise: float = Field(0.05, ge=0, description="observation noise std (observations have unit scale)")
    persistence: float = Field(0.8, ge=0, lt=1, description="weight of a group's own past")
    coupling: float = Field(0.1, ge=0, lt=1, description="weight of the other groups' past (Eq. 1)")
    n_train: int = Field(2000, ge=10)
    n_val: int = Field(250, ge=10)
    n_test: int = Field(500, ge=10)
    seed: int = Field(0, description="the world's seed (maps and clips); independent of the run seed")
