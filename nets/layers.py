"""Layers shared by the families; `get_act_layer` is the only place that picks an activation."""

from __future__ import annotations

import torch.nn as nn

from nets.errors import ModelConfigError

#: The activations every net accepts, by the name the CLI uses.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


def get_act_layer(act: str) -> type[nn.Module]:
    """The activation class for `act` ('relu', 'leaky_relu', 'silu')."""
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ModelConfigError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def create_act(act: str, inplace: bool = True) -> nn.Module:
    """A new activation module; in-place where the activation supports it."""
    cls = get_act_layer(act)
    return cls(inplace=inplace)
