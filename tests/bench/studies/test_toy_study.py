"""Adding a study is one module and one registration: a toy study defined here runs through the runner and the report.

The toy's "module" is this file's `TOY`: its budget (nested in the preset), its kind, its plan and its report
section. Only the measuring of a unit is stubbed (no training); the runner, its dispatch on the kind, the run
folder, run.json and the report are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest

from bench.studies import get_preset, runner, study_names, study_plan
from bench.studies.base import Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting
from bench.studies.registry import preset_settings, registered
from bench.studies.run import RunSetup, run_setup
from tests.conftest import record_of


@dataclass(frozen=True)
class ToyBudget:
    """The toy study's knobs: how many activations it compares."""

    activations: int = setting(2, "toy_activations")


def toy_plan(preset):
    budget = TOY.budget_of(preset)
    acts = ("relu", "silu", "leaky_relu")[:budget.activations]
    units = tuple(StudyUnit(f"toy {act}", UnitSpec("resnet20", act=act), group="toy") for act in acts)
    return StudyPlan("toy", "Toy: activations, accuracy only", "Does a toy study need more than one module?", units,
                     notes=(f"{len(units)} activations at this preset.",))


def toy_section(records, out_dir, engines, preset=None):
    tops = {r["label"]: r["top1"] for r in records if r.get("study") == "toy" and r["kind"] == "accuracy"}
    best = max(tops, key=tops.get)
    return "".join(f"- {label}: {100 * top1:.1f}%\n" for label, top1 in sorted(tops.items())), [f"Best: {best}."]


TOY = Study("toy", StudyKind.ACCURACY, toy_plan, budget=ToyBudget, section=toy_section)


@pytest.fixture
def toy(monkeypatch):
    """TOY registered for one test; a unit's measuring stubbed: a train record and a torch accuracy record."""

    def measure(spec, ctx, work, on_stage=lambda stage: None):
        top1 = {"relu": 0.9, "silu": 0.8, "leaky_relu": 0.7}[spec.act]
        context = runner.unit_context(spec, ctx)
        return [record_of("train", model=spec.model, epochs=1, **context),
                record_of("accuracy", model=spec.model, engine="torch", top1=top1, **context)]

    monkeypatch.setattr(runner, "measure_unit", measure)
    with registered(TOY):
        yield TOY


def test_a_registered_study_runs_through_the_runner_and_the_report(toy, tmp_path):
    preset = dataclasses.replace(get_preset("smoke"), studies={**get_preset("smoke").studies,
                                                               "toy": ToyBudget(activations=3)})
    assert "toy" in study_names()
    plan = study_plan("toy", preset)
    assert plan.kind is StudyKind.ACCURACY and not plan.timed, "the kind comes from the study, not its name"
    assert [u.label for u in plan.units] == ["toy relu", "toy silu", "toy leaky_relu"], "its budget, nested"
    assert preset_settings(preset)["toy_activations"] == 3, "its budget is part of the run's settings"

    ctx = runner.RunContext(dataset="digits", preset=preset, engines=("torch",))
    runner.check_run_folder(tmp_path, ctx, resume=True, plans=[plan])
    result = run_setup(RunSetup([plan], ["toy"], None, ctx, tmp_path, "digits"), title="rbench study toy")

    assert not (tmp_path / "timing" / "toy.jsonl").exists(), "an accuracy study times nothing"
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert {r["label"] for r in records} == {"toy relu", "toy silu", "toy leaky_relu"}
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["studies"][0]["name"] == "toy" and run["studies"][0]["timed"] is False
    report = result.report.read_text()
    assert "## Toy: activations, accuracy only" in report and "> 3 activations at this preset." in report
    assert "- toy relu: 90.0%" in report and "Best: toy relu." in report, "the study's own section and findings"


def test_a_study_runs_at_its_budget_defaults_when_the_preset_names_none(toy):
    assert "toy" not in get_preset("smoke").studies
    assert len(study_plan("toy", get_preset("smoke")).units) == 2
    with pytest.raises(ValueError, match="registered already"):
        from bench.studies.registry import register

        register(TOY)


def test_unregistered_study_is_gone():
    assert "toy" not in study_names()
