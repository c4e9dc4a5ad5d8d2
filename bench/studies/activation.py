"""The activation study: ReLU vs LeakyReLU vs SiLU on one residual net (ResNet-20 at quick, ResNet-50 as the seed
report compared them at standard and full)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.figures import plot_learning_curves
from bench.report.format import (
    accuracy_gap,
    fmt_pct,
    fmt_text,
    image_link,
    latency_ratios,
    markdown_table,
    measurement_columns,
    per_class_table,
    unit_rows,
)
from bench.report.summary import SummaryRow, accuracy_row
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting
from bench.studies.plans import kw

ACTIVATIONS = ("relu", "leaky_relu", "silu")


@dataclass(frozen=True)
class ActivationBudget:
    """The activation study's knobs: the residual net every activation is trained in."""

    model: str = setting("resnet20", "activation_model")  # a registered residual net that takes `act`
    # its builder kwargs, sorted pairs (ResNet-50's CIFAR stem: small_input)
    model_kwargs: tuple[tuple[str, object], ...] = setting((), "activation_model_kwargs")
    # training batches per epoch (None: all): ResNet-50 with the CIFAR stem trains about 45x slower than ResNet-20
    max_batches: int | None = setting(None, "activation_max_batches")


def activation_plan(preset: Preset) -> StudyPlan:
    budget = STUDY.budget_of(preset)
    units = tuple(StudyUnit(act, UnitSpec(budget.model, act=act, kwargs=kw(**dict(budget.model_kwargs)),
                                          max_batches=budget.max_batches))
                  for act in ACTIVATIONS)
    notes = [] if budget.model == "resnet50" else [
        f"This preset trains {budget.model}; the seed report compared the activations on ResNet-50, which "
        "`--preset standard` and `--preset full` run."]
    if budget.max_batches:
        notes.append(f"Each activation trains on at most {budget.max_batches} batches of {preset.batch_size} per "
                     f"epoch ({preset.epochs} epochs), the same for all three, so that {budget.model} fits this "
                     "preset's CPU time; `--preset full` trains on every batch.")
    return StudyPlan("activation", "Activation: ReLU vs LeakyReLU vs SiLU",
                     f"Does the activation change accuracy or latency of one residual net ({budget.model})?", units,
                     notes=tuple(notes))



def activation_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    rows = unit_rows(records, "activation")
    figs = out_dir / "figures"
    cols = [("activation", "label", fmt_text), ("final train error", "final_train_error", fmt_pct),
            ] + measurement_columns(engines)[4:]
    parts = [markdown_table(rows, cols) + "\n\n"]
    per_class = per_class_table(rows, name="activation")
    if per_class:
        n = next((r.get("samples") for r in rows if r.get("samples")), None)
        parts.append(f"**Per class** (torch, test split{f', {n} images' if n else ''}): precision / recall / F1\n\n"
                     + per_class + "\n\n")
    model = next((r.get("model") for r in rows if r.get("model")), "the net")
    parts.append(image_link(plot_learning_curves(rows, figs / "activation_curves.png",
                                                 f"{model}: ReLU vs LeakyReLU vs SiLU"), out_dir, "training curves"))
    findings = []
    scored = [r for r in rows if r.get("top1") is not None]
    if scored:
        relu = next((r for r in rows if r["label"] == "relu"), None)
        for r in rows:
            if relu is not None and r is not relu:
                findings.append(f"{r['label']} vs relu: top-1 {accuracy_gap(r, relu)}; p50 latency of {r['label']} "
                                f"over relu, timed together: {latency_ratios(r, relu, engines)}.")
    return "".join(parts), findings




def activation_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[SummaryRow]:
    """The activation study's rows: each activation's top-1 against ReLU's."""
    rows = unit_rows(records, "activation")
    relu = next((r for r in rows if r["label"] == "relu"), None)
    out = [accuracy_row(f"Is {r['label']} more accurate than relu?", r, relu) for r in rows
           if relu is not None and r is not relu]
    return [row for row in out if row is not None]


STUDY = Study("activation", StudyKind.TIMED, activation_plan, budget=ActivationBudget, section=activation_section,
              seeded=True, summary=activation_summary)
