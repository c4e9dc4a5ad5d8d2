"""What each study trains and measures, as data: a study is a list of units, a unit is one model.

A unit is one model trained, exported and measured once; units that several studies share
(ResNet-20 with ReLU appears in three) are measured once and reused, because a unit's id is
a function of everything that makes it (model, activation, builder kwargs, input channels, and for the
training-recipe studies its training overrides and seed). The studies' own plans are in their modules
(`bench.studies.depth`, ...); this module holds what they share: the units, the model roles.
"""

from __future__ import annotations

from bench.errors import UsageProblem
from bench.studies.base import TRAIN_OVERRIDES, Preset, StudyKind, StudyPlan, StudyUnit, UnitSpec

__all__ = ["ROLE_MODELS", "TRAIN_OVERRIDES", "StudyKind", "StudyPlan", "StudyUnit", "UnitSpec", "require_registered",
           "resolve_role", "timed_units"]

#: The model that plays each role of a study, unless the preset names another (`Preset.models`).
#: Every name is a registered model (tests check it); the defaults are what `--preset full` runs.
ROLE_MODELS: dict[str, str] = {
    "vgg": "vgg19_bn",  # the VGG form of the dynamic and family studies
    "dy_vgg": "dy_vgg19",  # its dynamic-convolution twin
    "resnet_deep": "resnet34",  # the family study's target net
    "template": "template_cnn",  # the coursework's plain template CNN
    "rrdb": "rrdb_attention_net",  # the 4-layer RRDB + self-attention net
    "keras_resnet": "keras_resnet",  # the Keras-style CIFAR bottleneck ResNet
    "sweep_vgg": "vgg19_bn",  # the optimizer study's VGG-BN (the optimizer seed report's VGG19-BN)
    "sweep_vgg_nobn": "vgg19",  # ... and the same VGG without BatchNorm (the vanishing-gradient test)
    "sweep_resnet": "resnet50",  # the optimizer study's ResNet (the optimizer seed report's ResNet-50)
}


def resolve_role(role: str, preset: Preset) -> str:
    """The registered model name that plays `role` in `preset` (its `models` entry, else `ROLE_MODELS`).

    Raises:
        UsageProblem: `role` is not a role, or the name given for it is not a registered model.
    """
    import nets

    if role not in ROLE_MODELS:
        raise UsageProblem(f"unknown model role {role!r} in preset {preset.name!r}; roles: {', '.join(ROLE_MODELS)}")
    name = preset.models.get(role, ROLE_MODELS[role])
    try:
        nets.model_entry(name)
    except nets.UnknownModelError as exc:
        raise UsageProblem(f"role {role!r} of preset {preset.name!r} names no registered model: {exc}") from None
    return name


def kw(**kwargs: object) -> tuple[tuple[str, object], ...]:
    """Builder kwargs or training overrides as `UnitSpec` keeps them: sorted pairs (hashable)."""
    return tuple(sorted(kwargs.items()))


_kw = kw  # the name the plans were written with


def role_kw(preset: Preset, role: str, **extra: object) -> tuple[tuple[str, object], ...]:
    """The preset's builder kwargs for `role` (`Preset.model_kwargs`) plus `extra`, as `kw` gives them."""
    return kw(**{**preset.model_kwargs.get(role, {}), **extra})


def timed_units(plan: StudyPlan) -> tuple[StudyUnit, ...]:
    """The units of `plan` its timing phase measures: none for an accuracy study, never an accuracy-only extra seed."""
    return tuple(unit for unit in plan.units if plan.timed and not unit.spec.accuracy_only)


def require_registered(study: str, preset: Preset, names) -> None:
    """Refuse, before anything trains, a model a study's budget names that the zoo does not hold."""
    import nets

    for name in names:
        try:
            nets.model_entry(name)
        except nets.UnknownModelError as exc:
            raise UsageProblem(f"{study} model of preset {preset.name!r} is no registered model: {exc}") from None
