"""Parameters of the ImageBind encoders (torch-free). ImageBind is CC-BY-NC 4.0: non-commercial use only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sava_core.config import StrictModel, normalise_sha256


class ImageBindWeightsParams(StrictModel):
    """Where the towers' weights come from: ``checkpoint`` (the local ``imagebind_huge.pth``, CC-BY-NC 4.0;
    never downloaded) or ``preset: tiny`` (the same classes small, random weights under seed 0). Exactly one."""

    checkpoint: str | None = Field(
        None, description="local path of imagebind_huge.pth (dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth), "
        "read with torch.load(weights_only=True); never downloaded")
    sha256: str | None = Field(None, description="expected sha256 of the checkpoint (hex); checked when set")
    preset: Literal["tiny"] | None = Field(
        None, description="tiny: the same classes with small widths and random weights (seed 0), for tests")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="dtype of the weights")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return normalise_sha256(value)

    @model_validator(mode="after")
    def _one_source(self) -> ImageBindWeightsParams:
        if (self.checkpoint is None) == (self.preset is None):
            raise ValueError("set exactly one of `checkpoint` (the local imagebind_huge.pth) and `preset: tiny`")
        return self


class ImageBindVisionParams(ImageBindWeightsParams):
    """ImageBind vision embeddings of every frame: an analysis encoder (no latent grid, no decoder)."""

    frame_rate: float = Field(8.0, gt=0, description="frames per second the encoder takes (set it to the dataset's "
                              "fps); one embedding per frame, so it is also the latent step rate")
    size: int = Field(224, ge=14, description="short side resized (bicubic, antialiased) then centre-cropped to this; "
                      "224 is what the published weights were trained at")
    frame_batch_size: int = Field(32, ge=1, description="frames embedded per forward pass (memory)")


class ImageBindAudioParams(ImageBindWeightsParams):
    """ImageBind audio embeddings of 2 s windows (ImageBind's clip length) sliding every ``hop_seconds``."""

    hop_seconds: float = Field(0.5, gt=0, description="seconds between window starts: the latent step period")
    window_batch_size: int = Field(32, ge=1, description="windows embedded per forward pass (memory)")
