"""Where computation runs: the recipe's ``device`` setting, Accelerate's choice of accelerator, and
the device a module sits on."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sava_core.errors import SavaError


def use_cpu(name: str) -> bool:
    """Whether Accelerate runs on the CPU: asked for by the recipe's ``device``, or no CUDA device.
    (On the CPU, several processes from ``accelerate launch`` / ``torchrun`` use gloo.)"""
    if name == "cuda" and not torch.cuda.is_available():
        raise SavaError("device: cuda was asked for but no CUDA device is visible; set device=cpu or device=auto")
    return name == "cpu" or not torch.cuda.is_available()


def accelerator_device(device: str) -> torch.device:
    """This process's device for a recipe's ``device`` setting: its accelerator (Accelerate's choice
    under ``accelerate launch``), or the CPU when the recipe says ``cpu`` or there is none."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(device)).device


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module without tensors)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")
