"""Records -> a report a person reads: the run's head, each study's section, the key findings, export parity.

`render_report` puts a whole study or suite run together and returns the Markdown text; the caller writes it.
Each study's section comes from the caller (`sections`: the studies' own, `bench.studies.reporting`); the
formatting they share is `bench.report.format`, the plots `bench.report.plots`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.report.format import (
    Record,
    engines_in,
    fmt_pct,
    fmt_text,
    image_link,
    is_ladder_record,
    markdown_table,
    measurement_columns,
    records_of,
    unit_rows,
)
from bench.report.summary import Summary, summary_table


def parity_table(records: Sequence[Record]) -> str:
    """One row per unique unit: exporter, parity verdict and worst error, engine agreement."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "export":
            seen.setdefault(r["unit"], {"label": r["unit"], "exporter": r.get("exporter"),
                                        "parity": "passed" if r.get("parity_passed") else "FAILED",
                                        "err": r.get("parity_max_abs_err")})
        if is_ladder_record(r):
            continue  # a ladder's rungs are compared in its own section
        if r.get("kind") == "accuracy" and r.get("engine") != r.get("reference_engine") and not r.get("eval_channels"):
            if r["unit"] in seen:
                seen[r["unit"]][f"agree_{r['engine']}"] = r.get("agreement")
    engines = sorted({k[6:] for row in seen.values() for k in row if k.startswith("agree_")})
    cols = [("unit", "label", fmt_text), ("exporter", "exporter", fmt_text), ("ONNX parity", "parity", fmt_text),
            ("max abs err", "err", lambda v: "n/a" if v is None else f"{v:.2g}")]
    cols += [(f"prediction agreement {e}", f"agree_{e}", fmt_pct) for e in engines]
    return markdown_table(list(seen.values()), cols)


def training_schedules(records: Iterable[Record]) -> list[str]:
    """The learning-rate schedules the run's nets trained with (from their train records), in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        if r.get("kind") == "train":
            schedule = (r.get("train_config") or {}).get("schedule")
            if schedule:
                seen.setdefault(schedule, None)
    return list(seen)


def schedule_note(records: Iterable[Record], preset: dict[str, Any]) -> str:
    """', cosine schedule' for the preset line: what the train records ran, else what the preset names, else ''."""
    schedules = training_schedules(records) or ([preset["schedule"]] if preset.get("schedule") else [])
    if not schedules:
        return ""
    return f", {' / '.join(schedules)} schedule{'s' if len(schedules) > 1 else ''}"


#: A contention reason's words (its figures left to the records) -> the kind of evidence it is.
_EVIDENCE = (("other processes", "other processes used the CPU"), ("load average", "load average above the cores"),
             ("stolen", "CPU time stolen by the hypervisor"), ("of a core", "a one-thread run got less than a core"),
             ("calibration kernel", "the calibration kernel ran slow"))


def _evidence(reason: str) -> str:
    return next((kind for words, kind in _EVIDENCE if words in reason),
                re.sub(r"\s+", " ", re.sub(r"[\d.]+(x|%)?", "", reason)).strip())


def contention_note(records: Sequence[Record]) -> str:
    """A warning line when some timings were taken while other work competed for the CPU, else ''."""
    timed = {(r.get("unit"), r.get("engine"), r.get("rung"), r.get("batch"), r["kind"]): r for r in records
             if r["kind"] in ("latency", "throughput")}
    busy = [r for r in timed.values() if (r.get("contention") or {}).get("contended")]
    if not busy:
        return ""
    # The kinds of evidence, without each run's figures (the records hold those).
    reasons = sorted({_evidence(reason) for r in busy for reason in r["contention"]["reasons"]})
    return (f"**Warning:** {len(busy)} of {len(timed)} timings were taken while other work competed for the CPU "
            f"({'; '.join(reasons)}); their latencies, and ratios built on them, may be off. "
            "Rerun on a quiet machine (`--require-quiet` on the measuring commands refuses a busy one).\n")


#: section(records, out_dir, engines, preset settings) -> (Markdown, findings): one study's part of a report.
Section = Callable[[Sequence[Record], Path, Sequence[str], dict[str, Any]], tuple[str, list[str]]]


def default_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str], preset: dict[str, Any],
                    study: str = "") -> tuple[str, list[str]]:
    """The section of a study that has none of its own: one table of its units' measurements, no findings."""
    return markdown_table(unit_rows(records, study), measurement_columns(engines)) + "\n\n", []


def engines_not_run(records: Sequence[Record]) -> list[str]:
    """What this machine could not run, once for the whole report: one line per reason, naming the engine and
    precisions it kept out (from the precision ladders' rows that did not run)."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for r in records:
        for row in (r.get("ladder") or {}).get("rows") or []:
            if not row.get("runs"):
                reason = row.get("reason") or "unknown reason"
                precisions = by_reason.setdefault(reason, {}).setdefault(row["engine"], [])
                if row["precision"] not in precisions:
                    precisions.append(row["precision"])
    return [", ".join(f"{engine} {'/'.join(precisions)}" for engine, precisions in engines.items()) + f": {reason}"
            for reason, engines in by_reason.items()]


def timing_failures(records: Sequence[Record]) -> list[str]:
    """The timings that failed (their cells read n/a), once for the whole report: one entry per study, engine and
    reason, naming the nets (a net whose latency failed is not named again for its throughput). A record's error
    is the worker's or engine's own one-line message."""
    by_reason: dict[tuple[str, str, str], list[str]] = {}
    failed_latency = {(r.get("study"), r.get("engine"), r.get("label")) for r in records
                      if r.get("kind") == "latency" and r.get("error")}
    for r in records:
        if r.get("kind") == "throughput" and (r.get("study"), r.get("engine"), r.get("label")) in failed_latency:
            continue  # the latency's reason is the throughput's too: said once
        if r.get("kind") in ("latency", "throughput") and r.get("error"):
            reason = " ".join(str(r["error"]).split())
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            nets = by_reason.setdefault((r.get("study") or "?", r.get("engine") or "?", reason), [])
            if r.get("label") not in nets:
                nets.append(r.get("label"))
    return [f"{', '.join(str(n) for n in nets)} on {engine} ({study}): {reason}"
            for (study, engine, reason), nets in by_reason.items()]


def parity_line(records: Sequence[Record]) -> str:
    """Export parity and engine agreement: one line when every export passed, else the table of every unit."""
    exports = {r["unit"]: r for r in records if r.get("kind") == "export"}
    if not exports:
        return ""
    failed = [u for u, r in exports.items() if not r.get("parity_passed")]
    if failed:
        return f"## Export parity\n\n{len(failed)} of {len(exports)} ONNX exports FAILED parity.\n\n" \
               + parity_table(records) + "\n"
    worst = max((r.get("parity_max_abs_err") or 0.0) for r in exports.values())
    agree: dict[str, list[float]] = {}
    for r in records:
        if r.get("kind") == "accuracy" and r.get("engine") != r.get("reference_engine") and not r.get("eval_channels") \
                and not is_ladder_record(r) and r.get("agreement") is not None:
            agree.setdefault(r["engine"], []).append(r["agreement"])
    agreement = "; ".join(f"{e} predicts torch's class on at least {fmt_pct(min(v))} of the test images "
                          f"({len(v)} nets)" for e, v in agree.items())
    return (f"Export parity: all {len(exports)} ONNX exports passed (worst max abs error {worst:.2g})"
            f"{'; ' + agreement if agreement else ''}.\n")


def training_note(records: Sequence[Record], studies: Sequence[str]) -> str:
    """How each study's nets trained, from their train records (what ran, not what the preset names): 'Training:
    3 epoch(s) of adam, cosine schedule, up to 2700 images per epoch, seeds 0, 1, best-validation weights measured
    (depth, family); ...' ('' without train records)."""
    budgets: dict[tuple[Any, ...], list[str]] = {}
    for study in studies:
        trains = [r for r in records if r.get("kind") == "train" and r.get("study") == study and r.get("epochs")]
        if not trains:
            continue
        configs = [r.get("train_config") or {} for r in trains]
        key = (tuple(sorted({r["epochs"] for r in trains})),
               max((r.get("train_images_per_epoch") or 0) for r in trains) or None,
               tuple(dict.fromkeys(str(c["optimizer"]) for c in configs if c.get("optimizer"))),
               tuple(dict.fromkeys(str(c["schedule"]) for c in configs if c.get("schedule"))),
               tuple(sorted({c["seed"] for c in configs if c.get("seed") is not None})),
               tuple(sorted({bool(c.get("restore_best", True)) for c in configs})))
        budgets.setdefault(key, []).append(study)
    if not budgets:
        return ""
    parts = []
    weights = {(True,): "best-validation weights", (False,): "last epoch's weights",
               (False, True): "best-validation or last epoch's weights, as each configuration says"}
    for (epochs, images, optimizers, schedules, seeds, best), names in budgets.items():
        text = f"{'/'.join(map(str, epochs))} epoch(s)"
        text += f" of {'/'.join(optimizers)}" if optimizers else ""
        text += f", {' / '.join(schedules)} schedule{'s' if len(schedules) > 1 else ''}" if schedules else ""
        text += f", up to {images} images per epoch" if images else ""
        text += f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds else ""
        text += f", {weights[best]} measured"
        parts.append(f"{text} ({', '.join(names)})")
    return "Training (from the train records): " + "; ".join(parts) + ".\n"


def cost_figure(records: Sequence[Record], studies: Sequence[dict[str, Any]], out_dir: Path,
                engines: Sequence[str]) -> str:
    """The latency-vs-FLOPs figure of every net the run's studies timed (a precision ladder's rungs aside), as a
    Markdown image paragraph ('' when nothing was timed)."""
    from bench.report.figures import plot_latency_vs_flops

    ladders = {r.get("study") for r in records if is_ladder_record(r)}  # rungs, not nets: their own section
    rows = [{**row, "study": study["name"]} for study in studies if study["name"] not in ladders
            for row in unit_rows(records, study["name"]) if row.get("flops")]
    path = plot_latency_vs_flops(rows, engines, out_dir / "figures" / "latency_vs_flops.png")
    return image_link(path, out_dir, "latency vs FLOPs")


def method_lines(records: Sequence[Record], run: dict[str, Any]) -> list[str]:
    """How the run measured: the preset, units, training, and the statistics behind every interval and verdict."""
    preset = run.get("preset_settings", {})
    training = training_note(records, [s["name"] for s in run.get("studies", [])])
    # The preset's training settings only before anything trained: a study may train otherwise (the recipe studies'
    # own epochs, optimizers and seeds), and the train records say what ran.
    planned = "" if training else (
        f"{preset.get('epochs')} epoch(s) of {preset.get('optimizer')} (lr {preset.get('lr') or 'default'}"
        f"{schedule_note(records, preset)}), ")
    workers = sorted({r.get("workers") for r in records if r.get("kind") == "latency" and r.get("study") != "ladder"
                      and r.get("timing_mode") == "workers" and r.get("workers")})
    if workers:
        count = str(workers[0]) if workers[0] == workers[-1] else f"{workers[0]} to {workers[-1]}"
        timing = (f"latency = batch 1, {preset.get('iters')} timed runs split between the worker processes of each "
                  f"net ({count} of them; {preset.get('warmup')} warm-up runs in each)")
        statistics = ("a latency ratio of nets timed together in worker processes is a hierarchical bootstrap over "
                      "the workers, paired by generation, and their interleaved rounds; it reads 'unstable: ratio X "
                      "in N processes, Y in M' when the worker pairs' own ratios fall into separate modes")
    else:
        timing = f"latency = batch 1, {preset.get('warmup')} warm-up + {preset.get('iters')} timed runs"
        statistics = "a latency ratio is a bootstrap over the interleaved rounds of nets timed together"
    return [" ".join(part for part in (
        f"Preset: {preset.get('train_size') or 'all'} train+val images, {preset.get('test_size') or 'all'} test "
        f"images, {planned}batch {preset.get('batch_size')}, input {preset.get('input_size')}x"
        f"{preset.get('input_size')}; {timing} (p50); throughput = batch {preset.get('throughput_batch')}; ONNX "
        f"exporter {preset.get('exporter')}. "
        "Params = all parameters; FLOPs by torch's counter (2 per MAC) per image; latency in ms.",
        training.rstrip("\n"),
        f"Statistics: a ratio reads `1.27x [1.11, 1.48]` (95% interval); {statistics}, and it says faster or "
        "slower only when the interval lies beyond 1 \u00b1 3%. A test accuracy carries its Wilson 95% interval for "
        "the test-set size, or the mean and min-max "
        "over its training seeds; a difference between two nets reads `+4.4 pp [+1.2, +7.5]`, a paired bootstrap "
        "over the test images (and seeds, where there are several). 'better', 'worse' and 'MET' appear only when "
        "that interval clears the line; otherwise 'not decided at this budget'.") if part) + "\n"]


def render_report(records: Sequence[Record], run: dict[str, Any], out_dir: str | Path,
                  sections: Mapping[str, Section] | None = None, summaries: Mapping[str, Summary] | None = None,
                  notes: Sequence[str] = ()) -> str:
    """The Markdown report of a run (its plots written under `out_dir/figures/`).

    It opens with what this machine could not run (said once) and the summary table (every study's `summaries`
    rows, linked to the sections), then how it measured; then each study's section (a study without one in
    `sections` gets `default_section`) with its findings (a finding said once in the whole report). The
    latency-vs-FLOPs figure of every timed net follows the summary table. `run` is the run's run.json
    (title, preset settings, its studies' plans); `notes` are lines for the head (a merged run's origin)."""
    sections, summaries = sections or {}, summaries or {}
    out_dir = Path(out_dir)
    engines = engines_in(records) or list(run.get("engines") or [])
    machine = run.get("machine") or (records[0]["machine"] if records else {})
    preset = run.get("preset_settings", {})
    studies = run.get("studies", [])
    minutes = (run.get("measured_seconds") or 0) / 60
    versions = machine.get("versions", {})
    lines = [f"# {run.get('title', 'rbench report')}: preset {run.get('preset')}\n",
             f"Data: {run.get('dataset_note', run.get('dataset'))}. Engines: {', '.join(engines)} on "
             f"{run.get('device', 'cpu')}; {machine.get('cpu')} ({machine.get('cores_usable')} usable cores"
             f"{', GPU ' + machine['gpu']['name'] if machine.get('gpu') else ''}), torch {versions.get('torch')}, "
             f"onnxruntime {versions.get('onnxruntime')}. Measured time of all units {minutes:.1f} min; command "
             f"{_commands(run)}; records behind every number: [records.jsonl](records.jsonl)."]
    not_run = engines_not_run(records)
    # what this run did not do, in the same paragraph: the engines this machine lacks, the studies this preset
    # leaves out
    missing = ["Not run on this machine: " + "; ".join(not_run) + "." if not_run else "",
               left_out_line(preset).strip()]
    lines[-1] = " ".join([lines[-1], *(m for m in missing if m)]) + "\n"
    failed = timing_failures(records)
    if failed:
        lines.append("**Timings that failed** (n/a in the tables): " + "; ".join(failed) + ".\n")
    lines += [contention_note(records), *notes]
    rows, body, said = [], [], set()
    for study in studies:
        name, title = study["name"], study["title"]
        # A heading needs no blank line after it, nor a paragraph before a block quote.
        body.append(f"## {title}\n{study['question']}\n" + ("> " + " ".join(study["notes"]) + "\n" if study.get("notes")
                                                               else "") + "\n")
        if not records_of(records, study=name):
            body.append("No records yet.\n\n")
            continue
        section = sections.get(name) or (lambda r, o, e, p, _n=name: default_section(r, o, e, p, _n))
        text, findings = section(records, out_dir, engines, preset)
        if name in summaries:
            rows += [(name, title, row) for row in summaries[name](records, preset)]
        findings = [f for f in findings if f not in said]  # a finding is said once in the whole report
        said.update(findings)
        if findings:
            body.append("".join(f"- {f}\n" for f in findings) + "\n")  # under its question: what the study found
        body.append(text + "\n")
    cost = cost_figure(records, studies, out_dir, engines)  # every timed net of every study, beside the summary
    if rows or cost:
        lines.append("## Summary\n" + (summary_table(rows) + "\n\n" if rows else "") + cost)
    lines += ["## Method", *method_lines(records, run)]
    lines += body
    lines.append(parity_line(records))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line for line in lines if line))


def _commands(run: dict[str, Any]) -> str:
    """The command that measured the run, and the one that rendered this report when that was another (`rbench
    report` rendering a finished run again)."""
    measured = list(dict.fromkeys(run.get("run_commands") or []))
    if len(measured) != 1 or measured[0] == run.get("command"):
        return f"`{run.get('command')}`"
    return f"`{measured[0]}` (this report rendered again by `{run.get('command')}`)"


def left_out_line(preset: dict[str, Any]) -> str:
    """The line naming the studies this preset's suite leaves out, and the preset that runs them ('' for none)."""
    left_out = preset.get("suite_leaves_out") or {}
    if not left_out:
        return ""
    return "Left out of this preset's suite: " + "; ".join(f"{name} ({why})" for name, why in dict(left_out).items()) \
        + ".\n"
