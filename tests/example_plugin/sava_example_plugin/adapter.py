import torch
from torch import Tensor, nn

from sava_core.contracts import Adapter
from sava_example_plugin.params import GatedLinearParams


class GatedLinearAdapter(Adapter):
    """(B, T, in_dim) -> (B, T, out_dim): W z * sigmoid(G z + b)."""

    Params = GatedLinearParams

    def __init__(self, params: GatedLinearParams, *, in_dim: int, out_dim: int):
        super().__init__()
        self.params = params
        self.value = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(in_dim, out_dim)
        nn.init.constant_(self.gate.bias, params.gate_bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.value(z) * torch.sigmoid(self.gate(z))
