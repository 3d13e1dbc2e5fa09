from pydantic import BaseModel, ConfigDict, Field


class GatedLinearParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate_bias: float = Field(0.0, description="initial bias of the gate logits")
