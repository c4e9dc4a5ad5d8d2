"""The registry of studies: each study's module defines one `Study`, registered here once.

The registry imports no study: `bench.studies` (the package face) imports every study module and registers it,
as timm's model registry does. A test may register a study of its own and unregister it after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bench.errors import UsageProblem
from bench.studies.base import Preset, Study, StudyPlan, StudyUnit, budget_settings
from bench.studies.plans import ROLE_MODELS

_STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add `study` to the registry; a second study of the same name is an error. Returns `study`."""
    if study.name in _STUDIES:
        raise ValueError(f"a study called {study.name!r} is registered already")
    _STUDIES[study.name] = study
    return study


def unregister(name: str) -> None:
    """Remove the study called `name` (a test's own study, once the test is done)."""
    _STUDIES.pop(name, None)


@contextmanager
def registered(study: Study) -> Iterator[Study]:
    """`study` registered for the duration of a `with` block."""
    register(study)
    try:
        yield study
    finally:
        unregister(study.name)


def study_names() -> tuple[str, ...]:
    """Every registered study, in registration order (the order `rbench suite` runs them)."""
    return tuple(_STUDIES)


def get_study(name: str) -> Study:
    """The study called `name`; an unknown name is a one-line usage error."""
    try:
        return _STUDIES[name]
    except KeyError:
        raise UsageProblem(f"unknown study {name!r}; choose one of {', '.join(_STUDIES)}") from None


def study_of(plan: StudyPlan) -> Study | None:
    """The registered study `plan` belongs to (None for a plan no registered study made)."""
    return _STUDIES.get(plan.name)


def budget(name: str, preset: Preset) -> Any:
    """Study `name`'s budget in `preset` (`Study.budget_of`)."""
    return get_study(name).budget_of(preset)


def preset_settings(preset: Preset) -> dict[str, Any]:
    """The preset as settings.json and run.json keep it: its own fields, then every registered study's budget
    under its setting names (`bench.studies.base.setting`), flat."""
    settings = preset.generic_settings()
    for study in _STUDIES.values():
        settings.update(budget_settings(study.budget_of(preset)))
    return settings


def study_plan(name: str, preset: Preset) -> StudyPlan:
    """The plan of study `name` at `preset`, of the study's kind, with its extra accuracy seeds.

    Raises:
        UsageProblem: an unknown study, or a preset that names an unknown role, seed unit or budget.
    """
    study = get_study(name)
    _check_roles(preset)
    _check_seed_units(preset)
    plan = replace(study.plan(preset), kind=study.kind)
    return with_accuracy_seeds(plan, preset) if study.seeded else plan


def seeded_studies() -> tuple[str, ...]:
    """The studies whose accuracy figures may get extra training seeds (`Preset.accuracy_seeds`)."""
    return tuple(name for name, study in _STUDIES.items() if study.seeded)


def with_accuracy_seeds(plan: StudyPlan, preset: Preset) -> StudyPlan:
    """`plan` plus, for each unit `preset.accuracy_seed_units` names (every unit when None), the unit trained again
    with seeds 1 .. accuracy_seeds-1, accuracy only (torch top-1; not exported, not timed), under the same label and
    group: the report gives each label's mean and min-max top-1 over its seeds.

    Raises:
        UsageProblem: the preset names a unit ('study:label') this study does not have.
    """
    if preset.accuracy_seeds < 2:
        return plan
    wanted = None if preset.accuracy_seed_units is None else \
        {entry.split(":", 1)[1] for entry in preset.accuracy_seed_units if entry.split(":", 1)[0] == plan.name}
    labels = {unit.label for unit in plan.units}
    unknown = sorted((wanted or set()) - labels)
    if unknown:
        raise UsageProblem(f"preset {preset.name!r}: accuracy_seed_units names no unit {', '.join(unknown)} of the "
                           f"{plan.name} study; its units: {', '.join(sorted(labels))}")
    extra = [StudyUnit(unit.label, replace(unit.spec, seed=seed, accuracy_only=True, eval_subsets=()), unit.group)
             for unit in plan.units if wanted is None or unit.label in wanted
             for seed in range(1, preset.accuracy_seeds)]
    return replace(plan, units=plan.units + tuple(extra))


def _check_seed_units(preset: Preset) -> None:
    """Every `accuracy_seed_units` entry is 'study:label' of a study that takes extra seeds (a typo changes nothing)."""
    if preset.accuracy_seeds < 1:
        raise UsageProblem(f"preset {preset.name!r}: accuracy_seeds must be at least 1, not {preset.accuracy_seeds}")
    seeded = seeded_studies()
    for entry in preset.accuracy_seed_units or ():
        study, _, label = entry.partition(":")
        if study not in seeded or not label:
            raise UsageProblem(f"preset {preset.name!r}: accuracy_seed_units entry {entry!r} is not 'study:label' "
                               f"with a study of {', '.join(seeded)}")


def _check_roles(preset: Preset) -> None:
    """A role the preset names but no plan asks for (a typo) would silently change nothing: refuse it.

    A budget names roles through its `model_roles` (the family study's extra nets)."""
    unknown_budgets = sorted(set(preset.studies) - set(_STUDIES))
    if unknown_budgets:
        raise UsageProblem(f"preset {preset.name!r} gives a budget to unknown study(ies) {', '.join(unknown_budgets)}; "
                           f"studies: {', '.join(_STUDIES)}")
    named = {*preset.models, *preset.model_kwargs}
    for study in _STUDIES.values():
        named |= set(getattr(study.budget_of(preset), "model_roles", ()))
    unknown = sorted(named - set(ROLE_MODELS))
    if unknown:
        raise UsageProblem(f"preset {preset.name!r} names unknown model role(s) {', '.join(map(repr, unknown))}; "
                           f"roles: {', '.join(ROLE_MODELS)}")
