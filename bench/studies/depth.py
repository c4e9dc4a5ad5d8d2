"""The depth study: residual vs plain CIFAR ResNets at 20/56(/110) layers, the degradation problem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.figures import plot_accuracy_vs_depth, plot_learning_curves
from bench.report.format import (
    SEED_COLUMN,
    accuracy_gap,
    engines_in,
    fmt_count,
    fmt_ms,
    fmt_pct,
    fmt_text,
    image_row,
    latency_ratios,
    markdown_table,
    model_depth,
    ratio_text,
    unit_rows,
)
from bench.report.plots import plot_cost_vs_depth
from bench.report.summary import SummaryRow, accuracy_row, latency_row
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting


@dataclass(frozen=True)
class DepthBudget:
    """The depth study's knobs."""

    depths: tuple[int, ...] = setting((20, 56), "depths")  # CIFAR ResNet / plain depths (6n+2)


def depth_plan(preset: Preset) -> StudyPlan:
    budget = STUDY.budget_of(preset)
    units = []
    for depth in budget.depths:
        units.append(StudyUnit(f"resnet{depth}", UnitSpec(f"resnet{depth}"), group="residual"))
        units.append(StudyUnit(f"plain{depth}", UnitSpec(f"plain{depth}"), group="plain"))
    return StudyPlan(
        "depth", "Depth: residual vs plain",
        "Does a deeper plain net train worse than a shallower one (the degradation problem), and do "
        "shortcuts fix it? What do depth and shortcuts cost in latency and FLOPs?",
        tuple(units),
        notes=(f"Depths {', '.join(map(str, budget.depths))} (CIFAR-style 6n+2 nets, He et al. 2016 §4.2).",),
    )



def depth_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """The depth study: learning curves, error vs depth, latency vs depth, and the degradation verdict."""
    rows = unit_rows(records, "depth")
    figs = out_dir / "figures"
    parts = []
    cols = [("model", "label", fmt_text), ("shortcuts", "group", fmt_text), ("params", "params", fmt_count),
            ("FLOPs", "flops", fmt_count), ("final train error", "final_train_error", fmt_pct),
            ("final val error", "final_val_error", fmt_pct), ("test error", "test_error", fmt_pct), SEED_COLUMN]
    cols += [(f"p50 ms {e}", f"latency_p50_{e}", fmt_ms) for e in engines]
    parts.append(markdown_table(rows, cols) + "\n\n")
    parts.append(image_row(
        out_dir, (plot_learning_curves(rows, figs / "depth_curves.png", "Residual vs plain: training curves"),
                  "training curves"),
        (plot_accuracy_vs_depth(rows, figs / "depth_accuracy.png"), "accuracy vs depth"),
        (plot_cost_vs_depth(rows, engines, figs / "depth_cost.png"), "latency and FLOPs vs depth")))
    findings = []
    by = {r["label"]: r for r in rows}
    depths = sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])})
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        p_lo, p_hi, r_lo, r_hi = (by.get(f"plain{lo}"), by.get(f"plain{hi}"), by.get(f"resnet{lo}"), by.get(f"resnet{hi}"))
        if p_lo and p_hi and p_lo.get("final_train_error") is not None and p_hi.get("final_train_error") is not None:
            worse = p_hi["final_train_error"] > p_lo["final_train_error"]
            findings.append(
                f"Degradation {'shown' if worse else 'not shown'} here: plain{hi} ends with {fmt_pct(p_hi['final_train_error'])} "
                f"training error vs {fmt_pct(p_lo['final_train_error'])} for plain{lo} "
                f"(test error {fmt_pct(p_hi.get('test_error'))} vs {fmt_pct(p_lo.get('test_error'))}; test error "
                f"{accuracy_gap(p_hi, p_lo, as_error=True)}).")
        if r_lo and r_hi and r_lo.get("final_train_error") is not None and r_hi.get("final_train_error") is not None:
            findings.append(
                f"With shortcuts: resnet{hi} {fmt_pct(r_hi['final_train_error'])} training error vs "
                f"{fmt_pct(r_lo['final_train_error'])} for resnet{lo} "
                f"(test error {fmt_pct(r_hi.get('test_error'))} vs {fmt_pct(r_lo.get('test_error'))}; test error "
                f"{accuracy_gap(r_hi, r_lo, as_error=True)}).")
    for d in depths:  # at one depth too (smoke): a pair's accuracy and latency need no second depth
        r, p = by.get(f"resnet{d}"), by.get(f"plain{d}")
        if r and p:
            lat = latency_ratios(r, p, engines)
            findings.append(
                f"At {d} layers the shortcuts change test error by {accuracy_gap(r, p, as_error=True)}; "
                f"p50 latency of the residual net over the plain net's, timed together: {lat}; "
                f"FLOPs ratio {ratio_text(r.get('flops'), p.get('flops'))}.")
    if len(depths) >= 2 and by.get(f"resnet{depths[0]}") and by.get(f"resnet{depths[-1]}"):
        lo, hi = depths[0], depths[-1]
        r_lo, r_hi = by[f"resnet{lo}"], by[f"resnet{hi}"]
        lat = latency_ratios(r_hi, r_lo, engines)
        findings.append(f"Going from resnet{lo} to resnet{hi} multiplies FLOPs by "
                        f"{ratio_text(r_hi.get('flops'), r_lo.get('flops'))}; p50 latency: {lat}.")
    return "".join(parts), findings




def depth_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[SummaryRow]:
    """The depth study's rows of the opening table: shortcuts at each depth, the degradation, the cost of depth."""
    rows = unit_rows(records, "depth")
    by = {r["label"]: r for r in rows}
    depths = sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])})
    engines = engines_in(records)
    out = [accuracy_row(f"Do shortcuts help at {d} layers?", by[f"resnet{d}"], by[f"plain{d}"])
           for d in depths if f"resnet{d}" in by and f"plain{d}" in by]
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        if f"plain{lo}" in by and f"plain{hi}" in by:
            out.append(accuracy_row(f"Degradation: is plain{hi} less accurate than plain{lo}?", by[f"plain{hi}"],
                                    by[f"plain{lo}"]))
        if f"resnet{lo}" in by and f"resnet{hi}" in by and engines:
            out.append(latency_row(f"Latency of resnet{hi} over resnet{lo}", by[f"resnet{hi}"], by[f"resnet{lo}"],
                                   engines[0]))
    return [row for row in out if row is not None]


STUDY = Study("depth", StudyKind.TIMED, depth_plan, budget=DepthBudget, section=depth_section, seeded=True,
              summary=depth_summary)
