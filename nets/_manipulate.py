"""Whole-model operations on the zoo's nets: anneal or set the dynamic convs' temperature, fold BatchNorms
into them, switch the form they compute. Layers (`nets.layers`, `nets.channel_agnostic`) define the modules;
this module walks a built net and changes them, so it sits above both.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch.fx
import torch.nn as nn

from nets.channel_agnostic import ChannelAgnosticStem
from nets.errors import ModelConfigError
from nets.layers import DynamicConv2d, check_dynamic_conv_mode

__all__ = ["dynamic_conv_mode", "fold_dynamic_batchnorm", "set_dynamic_conv_mode", "set_temperature",
           "temperature_schedule", "uses_dynamic_conv"]


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the attention temperature of every DynamicConv2d (and dynamic channel-agnostic stem) in `model`;
    returns how many."""
    if temperature <= 0:
        raise ModelConfigError(f"temperature must be positive, got {temperature!r}")
    layers = [m for m in model.modules()
              if isinstance(m, DynamicConv2d) or isinstance(m, ChannelAgnosticStem) and m.dynamic]
    for m in layers:
        m.temperature = float(temperature)
    return len(layers)


def uses_dynamic_conv(model: nn.Module) -> bool:
    """Whether `model` holds any DynamicConv2d."""
    return any(isinstance(m, DynamicConv2d) for m in model.modules())


def fold_dynamic_batchnorm(model: nn.Module, on_skip=None) -> tuple[nn.Module, int]:
    """A copy of the inference-mode `model` in which every BatchNorm2d that only ever follows one
    DynamicConv2d is folded into that layer's K kernels (`DynamicConv2d.fold_batchnorm`) and becomes an
    nn.Identity; returns (the copy, how many were folded). Outputs do not change (to rounding).

    An exporter folds a BatchNorm into a static conv's constant weight by itself; a dynamic conv's weight
    is computed, so its BatchNorm stays a node of its own unless folded here. Which BatchNorm follows which
    layer is read from a torch.fx trace (the dynamic convs kept whole): a pair is folded only where the
    BatchNorm's one input is the conv's output and nothing else reads that output. A net the tracer cannot
    follow is returned uncopied, with 0, and `on_skip` (when given) is called with one line saying why.
    """
    if model.training or not uses_dynamic_conv(model):
        return model, 0

    class _Tracer(torch.fx.Tracer):  # the channel-agnostic stem loops over the input's channels: kept whole too
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (DynamicConv2d, ChannelAgnosticStem)) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow etc.: nothing folded, nothing broken
        if on_skip is not None:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            on_skip(f"no BatchNorm was folded into the dynamic convs: torch.fx could not trace the net ({reason})")
        return model, 0
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        (source, *rest) = node.args or (None,)
        if (rest or node.kwargs or not isinstance(source, torch.fx.Node) or source.op != "call_module"
                or not isinstance(modules.get(source.target), DynamicConv2d) or len(source.users) != 1
                or calls[node.target] != 1 or calls[source.target] != 1):
            continue
        pairs.append((source.target, node.target))
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        folded.get_submodule(conv_name).fold_batchnorm(folded.get_submodule(bn_name))
        parent, _, attr = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, attr, nn.Identity())
    return folded, len(pairs)


def set_dynamic_conv_mode(model: nn.Module, mode: str) -> dict[str, str]:
    """Set the mode of every DynamicConv2d in `model`; returns each one's previous mode by module name.

    "auto" (the default) chooses per layer and context; "grouped" fixes the batch (dynamo exports
    only); "unfold" and "expand" export with a dynamic batch through either exporter (see
    DynamicConv2d). Outputs do not change.
    """
    check_dynamic_conv_mode(mode)
    previous = {}
    for name, m in model.named_modules():
        if isinstance(m, DynamicConv2d):
            previous[name] = m.mode
            m.mode = mode
    return previous


@contextlib.contextmanager
def dynamic_conv_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Run the block with every DynamicConv2d of `model` in `mode`, then restore each one's own mode.

        >>> with dynamic_conv_mode(model, "unfold"):
        ...     torch.onnx.export(model, (x,), path, dynamic_shapes=({0: batch},), dynamo=True)
    """
    previous = set_dynamic_conv_mode(model, mode)
    try:
        yield model
    finally:
        modules = dict(model.named_modules())
        for name, old in previous.items():
            modules[name].mode = old


def temperature_schedule(epoch: int, anneal_epochs: int = 10, start: float = 30.0, end: float = 1.0) -> float:
    """The temperature for `epoch` (0-based): linear from `start` to `end` over `anneal_epochs`.

    Chen et al. (§4.1) anneal 30 -> 1 linearly over the first 10 epochs: near-uniform attention
    early lets every kernel train before the attention grows sharp.
    """
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return end
    return start + (end - start) * max(epoch, 0) / anneal_epochs
