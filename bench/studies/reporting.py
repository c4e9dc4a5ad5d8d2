"""A study run's report: `bench.report.render` with every registered study's own section, and the run's outputs.

`render_report` is what `rbench study`, `rbench suite` and `rbench report` write as report.md; `write_outputs`
writes a run's records.jsonl, run.json and report.md, each atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import render
from bench.studies.base import Record, StudyPlan
from bench.studies.context import RunContext
from bench.studies.registry import get_study, preset_settings, study_names
from bench.studies.run_folder import RUN_JSON, TOOL, check_subfolders
from bench.studies.runner import run_seconds


def sections() -> dict[str, render.Section]:
    """Every registered study's report section, by name (a study without one gets the default table)."""
    return {name: section for name in study_names() if (section := get_study(name).section) is not None}


def summaries() -> dict[str, Any]:
    """Every registered study's summary hook (`Study.summary`), by name (a study without one has no row)."""
    return {name: summary for name in study_names() if (summary := get_study(name).summary) is not None}


def render_report(records: Sequence[Record], run: dict[str, Any], out_dir: str | Path) -> str:
    """The Markdown report of a run (its plots written under `out_dir/figures/`, which must not be a link)."""
    from bench.studies.shard import merge_note

    check_subfolders(Path(out_dir))
    return render.render_report(records, run, out_dir, sections=sections(), summaries=summaries(),
                                notes=[merge_note(run)])


def run_record(plans: Sequence[StudyPlan], ctx: RunContext, out_dir: Path, *, title: str, dataset_note: str,
               elapsed: float, unit_seconds: dict[str, float], shard: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run.json of a run: its settings, its plans, its machine, and how long its work took (totals over every
    invocation that worked on `out_dir`, and this invocation's own)."""
    from bench.records.io import describe_machine

    totals = run_seconds(plans, out_dir)  # from the records on disk: every invocation's work
    run = {
        "tool": TOOL, "title": title, "preset": ctx.preset.name, "dataset": ctx.dataset, "dataset_note": dataset_note,
        "engines": list(ctx.engines), "device": ctx.device,
        # Totals over every invocation that worked on this run folder (a resumed run included).
        "measured_seconds": round(sum(totals.values()), 1), "unit_seconds": totals,
        # This invocation alone: its wall time, and the units and timings it measured.
        "wall_seconds_this_invocation": round(elapsed, 1),
        "measured_seconds_this_invocation": round(sum(unit_seconds.values()), 1),
        "unit_seconds_this_invocation": unit_seconds,
        "command": ctx.command, "studies": [plan.as_record() for plan in plans],
        "preset_settings": preset_settings(ctx.preset),
        "machine": describe_machine(),
    }
    if shard:
        run["shard"] = shard
        run["title"] = f"{title} (shard {shard['spec']}: {', '.join(shard['studies'])})"
    return run


def write_outputs(records: Sequence[Record], run: dict[str, Any], out_dir: Path) -> Path:
    """Write `records` (records.jsonl), `run` (run.json) and the report (report.md) into `out_dir`; return report.md."""
    from bench.atomic import write_text
    from bench.records.io import to_json

    write_text(out_dir / "records.jsonl", "".join(to_json(r) + "\n" for r in records))
    write_text(out_dir / RUN_JSON, json.dumps(run, indent=1, default=str) + "\n")
    write_text(out_dir / "report.md", render_report(records, run, out_dir))
    return out_dir / "report.md"


__all__ = ["render_report", "run_record", "sections", "summaries", "write_outputs"]
