"""Model size figures: parameters and multiply-accumulates (conv and linear layers)."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """MACs of one forward pass on ``example_input`` (batch 1), counted over conv and linear layers."""
    total = 0

    def hook(mod: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += int(output[0].numel()) * k
        elif isinstance(mod, nn.Linear):
            total += int(output[0].numel()) * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    return total
