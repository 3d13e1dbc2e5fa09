from pydantic import BaseModel, ConfigDict, Field


class GatedLinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate_bias: float = Field(0.0, description="initial bias of the gate logits")


class LoudnessGapParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    floor_db: float = Field(-100.0, description="levels below this count as this (silence), dB FS")
