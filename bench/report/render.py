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
    is_ladder_record,
    markdown_table,
    measurement_columns,
    records_of,
    unit_rows,
)


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


def contention_note(records: Sequence[Record]) -> str:
    """A warning line when some timings were taken while other work competed for the CPU, else ''."""
    timed = {(r.get("unit"), r.get("engine"), r.get("rung"), r.get("batch"), r["kind"]): r for r in records
             if r["kind"] in ("latency", "throughput")}
    busy = [r for r in timed.values() if (r.get("contention") or {}).get("contended")]
    if not busy:
        return ""
    # The kinds of evidence, without each run's figures (the records hold those).
    reasons = sorted({re.sub(r"\s+", " ", re.sub(r"[\d.]+(x|%)?", "", reason)).strip()
                      for r in busy for reason in r["contention"]["reasons"]})
    return (f"**Warning:** {len(busy)} of {len(timed)} timings were taken while other work competed for the CPU "
            f"({'; '.join(reasons)}); their latencies, and ratios built on them, may be off. "
            "Rerun on a quiet machine (`--require-quiet` on the measuring commands refuses a busy one).\n")


#: section(records, out_dir, engines, preset settings) -> (Markdown, findings): one study's part of a report.
Section = Callable[[Sequence[Record], Path, Sequence[str], dict[str, Any]], tuple[str, list[str]]]


def default_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str], preset: dict[str, Any],
                    study: str = "") -> tuple[str, list[str]]:
    """The section of a study that has none of its own: one table of its units' measurements, no findings."""
    return markdown_table(unit_rows(records, study), measurement_columns(engines)) + "\n\n", []


def render_report(records: Sequence[Record], run: dict[str, Any], out_dir: str | Path,
                  sections: Mapping[str, Section] | None = None, notes: Sequence[str] = ()) -> str:
    """The Markdown report of a run (its plots written under `out_dir/figures/`).

    `run` is the run's run.json (title, preset settings, its studies' plans); `sections` gives each study's section
    by name (a study without one gets `default_section`); `notes` are lines for the report's head (a merged run's
    origin). `bench.studies.reporting.render_report` passes every registered study's section."""
    sections = sections or {}
    out_dir = Path(out_dir)
    engines = engines_in(records) or list(run.get("engines") or [])
    machine = run.get("machine") or (records[0]["machine"] if records else {})
    preset = run.get("preset_settings", {})
    studies = run.get("studies", [])
    minutes = (run.get("measured_seconds") or 0) / 60
    lines = [f"# {run.get('title', 'rbench report')}: preset {run.get('preset')}\n",
             f"Data: {run.get('dataset_note', run.get('dataset'))}. Engines: {', '.join(engines)} on "
             f"{run.get('device', 'cpu')}. Machine: {machine.get('cpu')} ({machine.get('cores_usable')} usable cores"
             f"{', GPU ' + machine['gpu']['name'] if machine.get('gpu') else ''}), torch "
             f"{machine.get('versions', {}).get('torch')}, onnxruntime {machine.get('versions', {}).get('onnxruntime')}.\n",
             f"Measured time of all units: {minutes:.1f} min (wall time of the last invocation: "
             f"{run.get('wall_seconds_this_invocation', 0) / 60:.1f} min). Command: `{run.get('command')}`.\n",
             f"Preset: {preset.get('train_size') or 'all'} train+val images, {preset.get('test_size') or 'all'} test "
             f"images, {preset.get('epochs')} epoch(s) of {preset.get('optimizer')} (lr {preset.get('lr') or 'default'}"
             f"{schedule_note(records, preset)}), batch {preset.get('batch_size')}, input "
             f"{preset.get('input_size')}x{preset.get('input_size')}; latency = batch 1, {preset.get('warmup')} "
             f"warm-up + {preset.get('iters')} timed runs (p50 shown); throughput = batch {preset.get('throughput_batch')}; "
             f"ONNX exporter: {preset.get('exporter')}.\n",
             "Units: params = all parameters (trainable or not); MACs by thop; FLOPs by torch's flop counter (2 per MAC), per "
             "image; latency in ms; top-1 on the test split through each engine. Records behind every number: "
             "[records.jsonl](records.jsonl).\n",
             "Timing: each study's nets are timed together, per engine, interleaved in rounds (a new random order "
             "each round), after all of them are trained and exported. A latency ratio comes with its bootstrap 95% "
             "interval and says faster or slower only when the whole interval lies beyond 1 \u00b1 3%; otherwise "
             "'no measurable difference'. Accuracy comes from one short training run per net (seed 0) unless the "
             "'over seeds' column gives a mean and min-max over several (the preset's accuracy_seeds: the extra seeds "
             "are trained and scored by torch only, not exported or timed); an accuracy difference no larger than the "
             "spread between seeds is 'within seed noise', and one without a second seed says 'one training run'"
             + ("; the training-recipe studies (recipe, optimizer) train every configuration with several seeds and "
                "call a difference no larger than the spread between seeds 'within seed noise'"
                if any(s.get("timed") is False for s in studies) else "") + ".\n",
             contention_note(records)]
    lines += notes
    all_findings: list[tuple[str, list[str]]] = []
    body = []
    for study in studies:
        name = study["name"]
        body.append(f"## {study['title']}\n\n{study['question']}\n\n")
        for note in study.get("notes", ()):
            body.append(f"> {note}\n\n")
        if not records_of(records, study=name):
            body.append("No records yet.\n\n")
            continue
        if name in sections:
            text, findings = sections[name](records, out_dir, engines, preset)
        else:
            text, findings = default_section(records, out_dir, engines, preset, name)
        if findings:
            body.append("**Findings**\n\n" + "".join(f"- {f}\n" for f in findings) + "\n")
        body.append(text + "\n")
        all_findings.append((study["title"], findings))
    summary = ["## Key findings\n"]
    for title, findings in all_findings:
        summary += [f"- {title}:"] + [f"  - {f}" for f in findings]
    lines.append("\n".join(summary) + "\n")
    lines += body
    if records_of(records, "export"):  # the training-recipe studies export nothing
        lines.append("## Export parity and engine agreement\n\n" + parity_table(records) + "\n")
    return "\n".join(lines)
