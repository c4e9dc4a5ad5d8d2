"""The ladder study: every (engine, precision) rung of ResNet-20 and -56, speed vs accuracy.

Its kind is `StudyKind.LADDER`: the runner times each unit's rungs (`bench.studies.timing.time_ladder`, which runs
`bench.scenarios.ladder.run_ladder` on the unit's training checkpoint) with this study's budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.cells import fmt_pct_ci, fmt_ratio
from bench.report.figures import plot_pareto
from bench.report.format import fmt_ms, fmt_num, fmt_pct, image_row, is_ladder_record
from bench.report.stats import wilson_interval
from bench.report.summary import SummaryRow, status_of
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting

NAME = "ladder"


@dataclass(frozen=True)
class LadderBudget:
    """The ladder study's knobs: which nets (CIFAR ResNets trained as the depth study trains them) and its budget."""

    models: tuple[str, ...] = setting(("resnet20", "resnet56"), "ladder_models")
    # 'engine:precision' rungs (None: every rung of bench.scenarios.ladder.RUNGS)
    rungs: tuple[str, ...] | None = setting(None, "ladder_rungs")
    test_limit: int | None = setting(1000, "ladder_test_limit")  # test images each rung is evaluated on (None: all)
    calibration: int = setting(512, "ladder_calibration")  # int8 calibration images (from the training split)
    warmup: int = setting(5, "ladder_warmup")  # untimed runs per rung before its first timed round
    iters: int = setting(30, "ladder_iters")  # timed runs per rung at batch 1 (and at the throughput batch, unless:)
    throughput_iters: int | None = setting(None, "ladder_throughput_iters")  # ... at the throughput batch (None: iters)
    rounds: int = setting(5, "ladder_rounds")  # interleaved rounds (each visits every rung in a new random order)
    throughput_batch: int | None = setting(32, "ladder_throughput_batch")  # batch of the images/s timing (None: skip)

    @property
    def throughput_runs(self) -> int:
        """Timed runs per rung at the throughput batch: `throughput_iters`, or `iters` when that is None."""
        return self.iters if self.throughput_iters is None else self.throughput_iters


def ladder_plan(preset: Preset) -> StudyPlan:
    """Every (engine, precision) rung of `budget.models`, trained as the depth study trains them (one unit each)."""
    from bench.studies.plans import require_registered

    budget = STUDY.budget_of(preset)
    require_registered("ladder", preset, budget.models)
    if budget.rungs is not None:
        from bench.scenarios.ladder import parse_rungs

        parse_rungs(budget.rungs)  # a misspelt rung: refused before anything runs
    units = tuple(StudyUnit(name, UnitSpec(name)) for name in budget.models)
    rungs = "every rung rbench knows" if budget.rungs is None else \
        "torch fp32 (the reference) and " + ", ".join(r.replace(":", " ") for r in budget.rungs)
    test = "the whole test split" if budget.test_limit is None else \
        f"{budget.test_limit} test images (a stratified sample of the test split)"
    throughput = "" if budget.throughput_batch is None else \
        f", then again at batch {budget.throughput_batch} for images/s ({budget.throughput_runs} timed runs)"
    notes = (
        f"Rungs: {rungs}; a rung this machine cannot run is listed with the reason. `--engines` does not narrow "
        "the ladder: the preset names its rungs.",
        "Each net is trained once with the preset's training, as the depth study's nets are (a net both studies "
        f"use is trained once); each rung is evaluated on {test}, int8 is calibrated on "
        f"{budget.calibration} training images, and every rung is timed at batch 1 interleaved with the "
        f"others ({budget.iters} timed runs in {budget.rounds} rounds, {budget.warmup} warm-up "
        f"run{'' if budget.warmup == 1 else 's'} first){throughput}.",
    )
    return StudyPlan(
        "ladder", "Precision ladder: speed vs accuracy per engine and precision",
        "For one trained net, how much faster is each engine and precision (fp32, bf16, int8, fp16) than torch "
        "fp32, and how much task accuracy does each give up?",
        units, notes=notes,
    )



def ladder_timing_flops(plan: StudyPlan, preset: Preset) -> float:
    """The forward FLOPs of the ladder's timing phase beyond timing itself: every rung evaluates its test images."""
    from bench.measure.flops import model_flops

    budget = STUDY.budget_of(preset)
    rungs = len(budget.rungs) if budget.rungs else 7
    images = budget.test_limit or preset.test_size or 10000
    total = 0.0
    for unit in plan.units:
        try:
            _, flops = model_flops(unit.spec.model, (1, preset.input_size, preset.input_size), 10, None)
        except Exception:  # noqa: BLE001 - a net the counter cannot build still gets a share
            flops = 100e6
        total += flops * images * rungs
    return total




def _rung(row: dict[str, Any]) -> str:
    return f"{row['engine']} {row['precision']}"


def _speed_phrase(row: dict[str, Any]) -> str:
    """What the speedup interval supports: 'is 5.86x [4.10, 6.30] faster than torch fp32', 'is 2.10x [...] slower',
    or 'no measurable difference'."""
    speed, ci, verdict = row.get("speedup"), row.get("speedup_ci") or [None, None], row.get("verdict")
    if speed is None or None in ci:
        return f"not timed ({row.get('error') or 'no timing'})"
    if verdict == "faster":
        return f"is {speed:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] faster than torch fp32"
    if verdict == "slower":  # as a slowdown: torch fp32's speed over this rung's, interval inverted
        return f"is {1 / speed:.2f}x [{1 / ci[1]:.2f}, {1 / ci[0]:.2f}] slower than torch fp32"
    return (f"shows no measurable difference from torch fp32 (speedup {speed:.2f}x, but its 95% CI "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] does not lie wholly beyond 1 \u00b1 3%)")


def ladder_nets(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per net of the ladder study, in plan order: label, unit, and the ladder its records carry
    (`rows`, `int8`, settings: the field `ladder` of its torch fp32 batch-1 latency record)."""
    nets: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("study") != "ladder" or not is_ladder_record(r):
            continue
        label = r.get("label") or r.get("unit")
        net = nets.setdefault(label, {"label": label, "unit": r.get("unit"), "ladder": None})
        if r.get("ladder") and net["ladder"] is None:
            net["ladder"] = r["ladder"]
    return list(nets.values())


def _rung_cells(row: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """One net's cells of a rung: p50 ms, speedup over torch fp32 with its interval and verdict, images/s, and
    top-1 with its agreement with torch fp32."""
    from bench.scenarios.ladder import REFERENCE

    if not row or not row.get("runs"):
        return ("not run", "", "", "")
    ci = row.get("speedup_ci") or [None, None]
    if (row["engine"], row["precision"]) == REFERENCE:
        speed = "1.00x (reference)"
    elif row.get("speedup") is None:
        speed = f"not timed ({row.get('error') or 'no timing'})"
    else:
        speed = f"{fmt_ratio(row['speedup'], *ci)} {row.get('verdict') or ''}".strip()
    failed = (row.get("note") or "").startswith("int8 check failed")
    top1 = f"{fmt_pct(row.get('top1'))} ({fmt_pct(row.get('agreement'))}){' check failed' if failed else ''}"
    return (fmt_ms(row.get("p50_ms")), speed, fmt_num(row.get("images_per_s")), top1)


def _ladder_table(nets: Sequence[dict[str, Any]]) -> str:
    """Every rung that ran on some net, one row each, with each net's cells side by side; '*' after a net's p50
    marks its Pareto front (no other rung both faster and at least as accurate)."""
    rungs: dict[tuple[str, str], None] = {}
    by_net = []
    for net in nets:
        rows = {(r["engine"], r["precision"]): r for r in (net["ladder"] or {}).get("rows") or [] if r.get("runs")}
        rungs.update(dict.fromkeys(rows))
        by_net.append(rows)
    head = ["engine", "precision"]
    for net in nets:
        head += [f"{net['label']} p50 ms", f"{net['label']} speedup vs torch fp32", f"{net['label']} img/s",
                 f"{net['label']} top-1 (agrees w/ fp32)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for rung in rungs:
        cells = list(rung)
        for rows in by_net:
            p50, speed, img_s, top1 = _rung_cells(rows.get(rung))
            cells += [p50 + (" *" if (rows.get(rung) or {}).get("pareto") else ""), speed, img_s, top1]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _int8_line(nets: Sequence[dict[str, Any]]) -> str:
    """The int8 files' calibration and each net's check against fp32, or why there is none, in one paragraph."""
    parts, method = [], ""
    for net in nets:
        int8 = (net["ladder"] or {}).get("int8")
        if not int8:
            continue
        if int8.get("error"):
            parts.append(f"{net['label']} refused ({int8['error']})")
            continue
        check = int8.get("check") or {}
        if not check:
            continue
        method = method or f"{int8.get('method')} calibration on {int8.get('calibration_images')} training images"
        verdict = "**passed**" if check.get("passed") else "**FAILED** (its rungs measured anyway, marked 'check failed')"
        ratio = check.get("accuracy_ratio")
        parts.append(f"{net['label']} {verdict} on {check.get('images')} test images (predicts the fp32 file's class "
                     f"on {fmt_pct(check.get('top1_agreement'))}, needs {fmt_pct(check.get('min_agreement'))}; top-1 "
                     f"{fmt_pct(check.get('int8_accuracy'))} vs {fmt_pct(check.get('fp32_accuracy'))} = ratio "
                     f"{'n/a' if ratio is None else f'{ratio:.3f}'}, needs {check.get('min_accuracy_ratio')})")
    if not parts:
        return ""
    return f"int8 files{': ' + method if method else ''}; their check: {'; '.join(parts)}.\n\n"


def ladder_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """Every net's precision ladder in one table, a Pareto plot per net, the int8 checks, and findings stated only
    where the speedup interval supports them."""
    from bench.scenarios.ladder import REFERENCE

    figs = out_dir / "figures"
    nets = ladder_nets(records)
    missing = [net["label"] for net in nets if not (net["ladder"] or {}).get("rows")]
    nets = [net for net in nets if net["label"] not in missing]
    parts = [f"No ladder rows in the records for {', '.join(missing)}.\n\n"] if missing else []
    if not nets:
        return "".join(parts), []
    first = nets[0]["ladder"]
    ref = next((r for r in first["rows"] if (r["engine"], r["precision"]) == REFERENCE), {})
    n = ref.get("samples") or first.get("test_limit")
    settings = first.get("settings") or {}
    # In worker processes the runs are each worker's (the suite splits a rung's runs between its workers).
    each = f" in each of at least {settings['workers']} worker processes" \
        if settings.get("timing") != "in-process" and settings.get("workers") else ""
    runs = (first.get("throughput_settings") or {}).get("iters")
    throughput = f"; images/s at batch {first['throughput_batch']}" + (f" ({runs} timed runs{each})" if runs else "") \
        if first.get("throughput_batch") else ""
    text = (f"Every rung of a net sees the same {n} test images and is timed at batch 1, interleaved with the "
                 f"others ({settings.get('iters')} timed runs in {settings.get('rounds')} rounds{each}){throughput}. "
                 "Speedup: "
                 "torch fp32's p50 over the rung's, a bootstrap 95% interval over the paired rounds; top-1 with, in "
                 "brackets, the share of images on which it predicts torch fp32's class; '*' marks the Pareto front. "
                 "Rungs not run here are named at the top of the report.")
    figures, accuracy, findings = [], [], []
    for net in nets:
        label, ladder = net["label"], net["ladder"]
        rows = ladder["rows"]
        ref = next((r for r in rows if (r["engine"], r["precision"]) == REFERENCE), {})
        samples = ref.get("samples") or ladder.get("test_limit")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        figures.append((plot_pareto(rows, figs / f"ladder_{slug}.png",
                                    f"{label}: precision ladder (batch 1, {samples} test images)"),
                        f"{label} precision ladder"))
        if ref.get("top1") is not None and samples:
            accuracy.append(f"{label} {fmt_pct_ci(ref['top1'], *wilson_interval(ref['top1'], samples))}")
        findings += _ladder_findings(label, rows, samples)
    if accuracy:
        text += (f" torch fp32 scores {'; '.join(accuracy)}; every rung sees the same images, so its agreement with "
                 "torch fp32 is the sharper measure of what a precision changes.")
    int8 = _int8_line(nets)  # how the table was made and the int8 check: one paragraph under the table
    parts += [_ladder_table(nets) + "\n\n", f"{text} {int8[0].upper()}{int8[1:]}" if int8 else text + "\n\n"]
    parts.append(image_row(out_dir, *figures))
    return "".join(parts), findings


def _ladder_findings(label: str, rows: Sequence[dict[str, Any]], n: Any) -> list[str]:
    """What a net's ladder shows beyond its table: its fastest rung, and the rungs slower than or level with torch
    fp32 (the int8 check and the Pareto front are said once, in the section's text and table)."""
    from bench.scenarios.ladder import REFERENCE

    others = [r for r in rows if r.get("runs") and (r["engine"], r["precision"]) != REFERENCE]
    out = []
    faster = sorted((r for r in others if r.get("verdict") == "faster"), key=lambda r: -(r.get("speedup") or 0))
    if faster:
        best = faster[0]
        out.append(f"{label}: {_rung(best)} {_speed_phrase(best)} at batch 1 (p50 {fmt_ms(best.get('p50_ms'))} ms); "
                   f"top-1 {fmt_pct(best.get('top1'))} on {n} test images, the same class as torch fp32 on "
                   f"{fmt_pct(best.get('agreement'))} of them.")
    elif others:
        out.append(f"{label}: no rung is measurably faster than torch fp32 here.")
    slower = [f"{_rung(r)} ({_speed_phrase(r).removeprefix('is ').removesuffix(' slower than torch fp32')})"
              for r in others if r.get("verdict") == "slower"]
    same = [_rung(r) for r in others if r.get("verdict") == "no measurable difference"]
    unstable = [f"{_rung(r)} ({_modes_text(r)})" for r in others if r.get("verdict") == "unstable"]
    rest = ([f"slower than torch fp32: {', '.join(slower)}"] if slower else []) + \
        ([f"no measurable difference from torch fp32: {', '.join(same)}"] if same else []) + \
        ([f"unstable, the speedup differing between worker processes: {', '.join(unstable)}"] if unstable else [])
    if rest and out:  # one line per net: its fastest rung, then the rungs that are not faster
        out[0] = f"{out[0].removesuffix('.')}; {'; '.join(rest)}."
    elif rest:
        out.append(f"{label}: {'; '.join(rest)}.")
    return out


# --------------------------------------------------------------------------- the training-recipe studies




def _modes_text(row: dict[str, Any]) -> str:
    """'4.2x or 6.8x by process' for a rung whose speedup differed between worker processes."""
    modes = row.get("speedup_modes") or []
    return " or ".join(f"{m:.2f}x" for m in modes) + " by process" if modes else "no modes recorded"


def ladder_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[SummaryRow]:
    """The ladder's rows: per net, its fastest rung's speedup over torch fp32, decided when its interval clears."""
    from bench.scenarios.ladder import REFERENCE

    out = []
    for net in ladder_nets(records):
        rows = [r for r in ((net["ladder"] or {}).get("rows") or [])
                if r.get("runs") and (r["engine"], r["precision"]) != REFERENCE and r.get("speedup")]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["speedup"])
        ci = best.get("speedup_ci") or [None, None]
        verdict = best.get("verdict") or ""
        figure = f"speedup {fmt_ratio(best['speedup'], *ci)}; top-1 {fmt_pct(best.get('top1'))}"
        if verdict == "unstable":  # the interval mixes the values the speedup took in different processes
            answer, figure = f"{_rung(best)}, unstable", f"speedup {_modes_text(best)}; top-1 {fmt_pct(best.get('top1'))}"
        elif verdict == "faster":
            answer = f"{_rung(best)}, {verdict}"
        else:
            answer = f"no rung measurably faster ({verdict})"
        out.append(SummaryRow(f"Fastest rung of {net['label']} vs torch fp32", answer, figure,
                              status_of(verdict, unstable=verdict == "unstable")))
    return out


STUDY = Study(NAME, StudyKind.LADDER, ladder_plan, budget=LadderBudget, section=ladder_section,
              timing_flops=ladder_timing_flops, summary=ladder_summary)
