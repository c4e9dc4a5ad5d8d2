"""A study run as one library call: check every input, prepare and time the units (resuming), write the outputs.

`setup_run` checks every input before the first write (a bad input leaves nothing behind), `run_setup` runs a
checked setup and writes records.jsonl, run.json and report.md (`bench.studies.reporting`), and `run_studies` does
both for one process. `rbench study` and `rbench suite` (`bench.commands.study`) add the progress display and
the multi-process launch; `write_merged` is `rbench report`'s merge of shard folders.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.studies.base import StudyPlan
from bench.studies.context import RunContext, available_engines, check_device, resolve_dataset
from bench.studies.registry import study_plan
from bench.studies.run_folder import RUN_JSON, check_run_folder, check_writable
from bench.studies.runner import EventHook, run_plans


@dataclass
class RunSetup:
    """A run's inputs, every one checked; nothing written yet."""

    plans: list[StudyPlan]
    all_studies: list[str]  # every study asked for (a shard runs some of them)
    shard_spec: Any  # bench.studies.shard.Shard, or None
    ctx: RunContext
    out_dir: Path
    dataset_why: str  # which data set `auto` chose, and why


@dataclass
class RunResult:
    """What a finished run wrote, and how long it took."""

    out_dir: Path
    report: Path
    elapsed: float  # wall seconds of this invocation
    unit_seconds: dict[str, float] = field(default_factory=dict)  # unit id or 'timing:<study>' -> seconds measured


def resolve_device(device: str) -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu; any other value as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_out(kind: str, preset: str, shard: Any = None) -> Path:
    """results/<kind>-<preset>-<machine>[-<shard>]: the run folder when --out is not given."""
    from bench.records.io import machine_slug

    return Path("results") / f"{kind}-{preset}-{machine_slug()}{'-' + shard.slug if shard else ''}"


def parse_engine_list(text: str | None) -> list[str] | None:
    """'torch,ort' -> ['torch', 'ort'] (checked names); None or '' -> None (every engine that works here)."""
    if not text:
        return None
    from bench.measure.run import parse_engines

    return parse_engines(text)


def setup_run(studies: Sequence[str], preset_name: str, dataset: str, data_root: str | None, out: str | None,
              engines: str | None, device: str, kind: str, shard: str | None = None,
              shard_costs: str | None = None) -> RunSetup:
    """Check every input before the first write: a bad input leaves nothing behind.

    Raises:
        UsageProblem: an unknown study, preset, data set, engine or device, a bad shard, or an --out that is a
            file or cannot be written.
        EnvironmentProblem: a device or engine this machine lacks, a data set not found.
    """
    from bench.records.io import current_command
    from bench.studies.presets import get_preset

    preset = get_preset(preset_name)
    dataset_name, dataset_why = resolve_dataset(dataset, data_root)
    check_device(device)  # a GPU asked for and missing: refused here, not at the first unit
    plans = [study_plan(name, preset) for name in studies]
    all_studies = [plan.name for plan in plans]
    shard_spec = None
    if shard is not None:
        from bench.studies.shard import parse_shard, read_costs, shard_plans

        shard_spec = parse_shard(shard)
        plans = shard_plans(plans, shard_spec, preset, read_costs(shard_costs) if shard_costs else None)
    elif shard_costs:
        raise UsageProblem("--shard-costs balances shards: give it with --shard I/N")
    engine_names = available_engines(parse_engine_list(engines), device)
    out_dir = Path(out) if out else default_out(kind, preset.name, shard_spec)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} is a file, not a folder")
    check_writable(out_dir)  # a read-only --out: refused now, not after the first unit's training
    ctx = RunContext(dataset=dataset_name, preset=preset, engines=engine_names, device=device,
                     data_root=data_root, command=current_command(), shard=str(shard_spec) if shard_spec else None)
    ctx.bundle()  # load the data now: a missing data set fails before anything is written
    return RunSetup(plans, all_studies, shard_spec, ctx, out_dir, dataset_why)


def run_setup(setup: RunSetup, *, title: str, keep_artifacts: bool = False,
              on_event: EventHook = lambda kind, payload: None) -> RunResult:
    """Prepare every unit not yet prepared (resuming), time the studies, write records.jsonl, run.json, report.md.

    The run folder must have been checked (`check_run_folder`). `on_event` sees the runner's events
    (`bench.studies.runner.EventHook`)."""
    from bench.studies.reporting import run_record, write_outputs

    plans, ctx, out_dir, shard_spec = setup.plans, setup.ctx, setup.out_dir, setup.shard_spec
    unit_seconds: dict[str, float] = {}

    def record_seconds(kind: str, payload: dict[str, Any]) -> None:
        if kind == "unit-done":
            unit_seconds[payload["unit"]] = round(payload["seconds"], 1)
        elif kind == "timing-done":
            unit_seconds[f"timing:{payload['study']}"] = round(payload["seconds"], 1)
        on_event(kind, payload)

    start = time.perf_counter()
    records = run_plans(plans, ctx, out_dir, on_event=record_seconds, keep_artifacts=keep_artifacts)
    elapsed = time.perf_counter() - start
    shard_info = ({"spec": str(shard_spec), "index": shard_spec.index, "count": shard_spec.count,
                   "studies": [p.name for p in plans], "all_studies": setup.all_studies} if shard_spec else None)
    run = run_record(plans, ctx, out_dir, title=title, dataset_note=setup.dataset_why, elapsed=elapsed,
                     unit_seconds=unit_seconds, shard=shard_info)
    return RunResult(out_dir, write_outputs(records, run, out_dir), elapsed, unit_seconds)


def run_studies(studies: Sequence[str], *, preset: str = "quick", dataset: str = "auto", data_root: str | None = None,
                out: str | None = None, engines: str | None = None, resume: bool = True, device: str = "auto",
                keep_artifacts: bool = False, title: str | None = None, kind: str | None = None,
                shard: str | None = None, shard_costs: str | None = None,
                on_event: EventHook = lambda kind, payload: None) -> RunResult:
    """Run `studies` end to end in this process: check every input, prepare and time the units (resuming an
    interrupted run in `out`), write records.jsonl, run.json and report.md. What `rbench study`/`suite` do.

    Returns the run's folder, report and timings. Raises the errors `setup_run` and `check_run_folder` raise."""
    kind = kind or ("suite" if len(studies) != 1 else f"study-{studies[0]}")
    setup = setup_run(studies, preset, dataset, data_root, out, engines, resolve_device(device), kind, shard,
                      shard_costs)
    check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans)
    return run_setup(setup, title=title or f"rbench {kind.replace('-', ' ')}", keep_artifacts=keep_artifacts,
                     on_event=on_event)


def write_merged(merged: Any, folders: Sequence[str], out: str | None) -> Path:
    """Write a merged run's (`bench.studies.shard.merge_runs`) records.jsonl, run.json and report.md (atomically)
    into `out` (default: the one folder given, its report rendered again); return the folder.

    Raises:
        UsageProblem: several folders and no --out, an --out that is one of them, a file, or a folder holding
            something other than an earlier merged report.
    """
    from bench.atomic import write_text
    from bench.records.io import to_json
    from bench.studies.reporting import render_report

    sources = {Path(f).resolve() for f in folders}
    if out is None:
        if len(sources) > 1:
            raise UsageProblem("several run folders: say where the merged report goes with --out DIR")
        target = Path(folders[0])
    else:
        target = Path(out)
        if len(sources) > 1 and target.resolve() in sources:
            raise UsageProblem(f"--out {target} is one of the folders being merged; choose a new folder")
        if target.exists() and not target.is_dir():
            raise UsageProblem(f"--out {target} is a file, not a folder")
        if target.resolve() not in sources and target.exists() and any(target.iterdir()):
            previous = target / RUN_JSON
            try:
                ours = "merged_from" in json.loads(previous.read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError):
                ours = False
            if not ours:
                raise UsageProblem(f"--out {target} is not empty and holds no earlier merged report; choose a new "
                                   "or empty folder")
    target.mkdir(parents=True, exist_ok=True)
    if len(sources) > 1 or target.resolve() not in sources:
        write_text(target / "records.jsonl", "".join(to_json(r) + "\n" for r in merged.records))
        write_text(target / RUN_JSON, json.dumps(merged.run, indent=1, default=str) + "\n")
    write_text(target / "report.md", render_report(merged.records, merged.run, target))
    return target
