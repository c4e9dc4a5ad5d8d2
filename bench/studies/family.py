"""The family study: VGG vs ResNet vs the plain template CNN vs the 4-layer RRDB + attention net."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.cells import fmt_pct_ci
from bench.report.figures import plot_learning_curves
from bench.report.format import (
    accuracy_gap,
    fmt_pct,
    fmt_text,
    image_row,
    markdown_table,
    measurement_columns,
    ratio_text,
    unit_rows,
)
from bench.report.plots import plot_accuracy_vs_flops, plot_per_class
from bench.report.summary import SummaryRow, status_of
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting
from bench.studies.plans import resolve_role, role_kw


@dataclass(frozen=True)
class FamilyBudget:
    """The family study's knobs."""

    roles: tuple[str, ...] = setting(("template", "rrdb"), "family_roles")  # zoo roles added to VGG and ResNets

    @property
    def model_roles(self) -> tuple[str, ...]:
        """The model roles this budget names (checked against `bench.studies.plans.ROLE_MODELS`)."""
        return self.roles


def family_plan(preset: Preset) -> StudyPlan:
    vgg = resolve_role("vgg", preset)
    deep = resolve_role("resnet_deep", preset)
    units = [StudyUnit(vgg, UnitSpec(vgg, kwargs=role_kw(preset, "vgg")), group="VGG")]
    if deep != "resnet20":
        units.append(StudyUnit("resnet20", UnitSpec("resnet20"), group="ResNet"))
    units.append(StudyUnit(deep, UnitSpec(deep, kwargs=role_kw(preset, "resnet_deep")), group="ResNet (target)"))
    groups = {"template": "plain template CNN", "keras_resnet": "Keras bottleneck ResNet",
              "rrdb": "4-layer RRDB + attention"}
    for role in STUDY.budget_of(preset).roles:
        name = resolve_role(role, preset)
        units.append(StudyUnit(name, UnitSpec(name, kwargs=role_kw(preset, role)), group=groups.get(role, role)))
    return StudyPlan(
        "family", "Families: VGG vs ResNet vs plain template CNN vs 4-layer RRDB+attention",
        "How do the families trade accuracy against FLOPs, params and latency? Does the 4-layer RRDB + "
        f"self-attention net reach at least 90% of {deep}'s accuracy (the coursework's target)?",
        tuple(units),
    )



def family_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    rows = unit_rows(records, "family")
    figs = out_dir / "figures"
    cols = [("model", "label", fmt_text), ("family", "group", fmt_text)] + measurement_columns(engines)[1:]
    parts = [markdown_table(rows, cols) + "\n\n",
             image_row(out_dir,
                       (plot_accuracy_vs_flops(rows, figs / "family_acc_flops.png", "Families: accuracy vs FLOPs"),
                        "accuracy vs FLOPs"),
                       (plot_learning_curves(rows, figs / "family_curves.png", "Families: training curves"),
                        "training curves"),
                       (plot_per_class(rows, figs / "family_per_class.png", "Families: per-class F1 (test split)"),
                        "per-class F1"))]
    findings = []
    target = next((r for r in rows if r["group"] == "ResNet (target)"), None)
    rrdb = next((r for r in rows if r["group"] == "4-layer RRDB + attention"), None)
    target_check = coursework_target(rows)
    if target_check is not None:
        share, verdict = target_check
        findings.append(
            f"Coursework target (4-layer net >= {TARGET_SHARE:.0%} of {target['label']}'s accuracy): **{verdict}**: "
            f"{rrdb['label']} {fmt_pct(rrdb['top1'])} vs {target['label']} {fmt_pct(target['top1'])} = "
            f"{share_text(share)} of it, with {ratio_text(rrdb.get('params'), target.get('params'))} the params and "
            f"{ratio_text(rrdb.get('flops'), target.get('flops'))} the FLOPs; top-1 {accuracy_gap(rrdb, target)}.")
    elif target and not rrdb:
        findings.append("The 4-layer RRDB + attention net is not in the model zoo, so the 90% target could not be checked.")
    return "".join(parts), findings




#: The coursework's line: the 4-layer net reaches this share of the target ResNet's test accuracy.
TARGET_SHARE = 0.9


def coursework_target(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """(the 4-layer net's top-1 over the target's, with its paired-bootstrap interval; the verdict): 'MET' when the
    whole interval lies at or above `TARGET_SHARE`, 'NOT MET' when wholly below, else 'not decided at this budget'.
    None when either net is missing or untrained."""
    from bench.report.stats import UNDECIDED, compare_groups

    target = next((r for r in rows if r["group"] == "ResNet (target)"), None)
    rrdb = next((r for r in rows if r["group"] == "4-layer RRDB + attention"), None)
    if not target or not rrdb or not target.get("seeds") or not rrdb.get("seeds"):
        return None
    share = compare_groups(rrdb["seeds"], target["seeds"], ratio=True)
    if share is None:
        return None
    verdict = "MET" if share["low"] >= TARGET_SHARE else "NOT MET" if share["high"] < TARGET_SHARE else UNDECIDED
    return share, verdict


def share_text(share: dict[str, Any]) -> str:
    """'92.4% [88.1, 96.9]': a ratio of accuracies as a share, with its interval."""
    return fmt_pct_ci(share["estimate"], share["low"], share["high"])


def family_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[SummaryRow]:
    """The family study's row: the coursework target, judged by its interval."""
    rows = unit_rows(records, "family")
    check = coursework_target(rows)
    if check is None:
        return []
    share, verdict = check
    target = next(r for r in rows if r["group"] == "ResNet (target)")
    return [SummaryRow(f"Does the 4-layer net reach {TARGET_SHARE:.0%} of {target['label']}'s accuracy?",
                       verdict, f"{share_text(share)} of it", status_of(verdict))]


STUDY = Study("family", StudyKind.TIMED, family_plan, budget=FamilyBudget, section=family_section, seeded=True,
              summary=family_summary)
