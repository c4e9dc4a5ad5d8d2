"""The model registry: `register_model` records a builder; `create_model` validates and builds.

A builder's function name is its registry key (timm style). The registry imports no model: each family
module registers its builders when imported, and `nets/__init__.py` imports every family, so any
`import nets...` fills the registry before a name is looked up. Each entry also records what the
CLI and studies need to know without building it: the family, whether it is residual, plain
or dynamic, and the input size it is designed for.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from nets.errors import ModelConfigError, UnknownModelError
from nets.layers import ACTIVATIONS

#: How a net treats its shortcuts: residual (has them), plain (same layers, none),
#: dynamic (built on dynamic convolution), static (no shortcuts by design, e.g. VGG).
KINDS = ("residual", "plain", "dynamic", "static")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model before building it."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    kind: str
    input_size: int  # the resolution it is designed for (32: CIFAR-style, 224: ImageNet-style)
    description: str
    twin: str | None = None  # the residual net of a plain twin and vice versa
    channel_agnostic: bool = False  # builds with in_chans="any" (nets.channel_agnostic)


_MODELS: dict[str, ModelEntry] = {}


def register_model(family: str, kind: str, input_size: int = 32, twin: str | None = None,
                   channel_agnostic: bool = False):
    """Decorator: register `fn` under its own name. A duplicate name is an error.

    `channel_agnostic`: the builder takes in_chans="any" (a stem for any number of channels).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelEntry(name, fn, family, kind, input_size, doc[0] if doc else "", twin, channel_agnostic)
        return fn

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names matching a shell-style `pattern` ('resnet*', '*plain*'), sorted."""
    names = sorted(_MODELS, key=_natural_key)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern.lower())]
    return names


def _natural_key(name: str) -> tuple:
    import re

    return tuple(int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; an unknown name raises UnknownModelError with near matches."""
    try:
        return _MODELS[name]
    except KeyError:
        by_lower = {known.lower(): known for known in _MODELS}  # RESNET20 is near resnet20
        near = [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)]
        hint = f"did you mean {', '.join(near)}?" if near else "see `rbench list` for every name"
        raise UnknownModelError(f"unknown model {name!r}; {hint}") from None


def channel_agnostic_models() -> list[str]:
    """The models that build with in_chans="any" (one model for any number of input channels)."""
    return [n for n in list_models() if _MODELS[n].channel_agnostic]


def check_in_chans(name: str, in_chans: int | str) -> None:
    """Refuse (ModelConfigError, one line) an `in_chans` that model `name` cannot take: not a positive
    integer, or "any" for a net without a channel-agnostic stem (the message names those that have one)."""
    if in_chans == "any":
        if not model_entry(name).channel_agnostic:
            raise ModelConfigError(f"{name} has no channel-agnostic stem, so in_chans='any' does not work for it; "
                                   f"it does for {_agnostic_summary()}")
    elif not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ModelConfigError(f"in_chans must be a positive integer or 'any', got {in_chans!r}")


def create_model(name: str, num_classes: int = 10, in_chans: int | str = 3, act: str = "relu", **kwargs) -> nn.Module:
    """Build model `name` with `num_classes` outputs, `in_chans` input channels and activation `act`.

    `in_chans="any"` builds the net with a channel-agnostic stem (`nets.channel_agnostic`): one model
    for 1, 2, 3 or more channels in any order; `channel_agnostic_models()` names the nets that have one.

    Extra keyword arguments go to the family's builder (e.g. `shortcut_type="B"` for CIFAR
    ResNets, `kernels=4` for dynamic nets). The built module gets a `.config` dict holding
    everything needed to build it again.
    """
    entry = model_entry(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    check_in_chans(name, in_chans)
    if act not in ACTIVATIONS:
        raise ModelConfigError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    try:
        model = entry.builder(num_classes=num_classes, in_chans=in_chans, act=act, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ModelConfigError(f"{name} does not take that setting: {exc}") from None
        raise
    model.config = dict(name=name, num_classes=num_classes, in_chans=in_chans, act=act, **kwargs)
    return model


def _agnostic_summary() -> str:
    """The channel-agnostic nets, grouped by family, for an error message."""
    families: dict[str, list[str]] = {}
    for n in channel_agnostic_models():
        families.setdefault(_MODELS[n].family, []).append(n)
    return "; ".join(f"{fam}: {', '.join(names)}" for fam, names in families.items())
