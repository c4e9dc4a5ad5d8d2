"""Run studies: prepare each unit (train, FLOPs, export + parity, accuracy per engine), then time each study.

`run_plans` is the I/O layer: it skips units already complete, writes each finished unit's records in one
atomic step (so an interrupted run resumes where it stopped and never leaves half a unit behind), measures
again a unit whose file is unsound, and assembles the records. What a unit's preparation measures is in
`bench.studies.measure`, a study's timing (by its kind) in `bench.studies.timing`, the run folder in
`bench.studies.run_folder`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import suppress as _suppress
from pathlib import Path
from typing import Any

from bench.errors import DataProblem
from bench.studies.base import StudyKind, StudyPlan, UnitSpec
from bench.studies.context import DATASET_AUTO, RunContext, available_engines, check_device, resolve_dataset
from bench.studies.measure import (
    CHECKPOINT,
    DIVERGED,
    ONNX,
    WEIGHTS,
    build_unit_model,
    measure_unit,
    unit_context,
    unit_seed,
    unit_train_config,
)
from bench.studies.plans import timed_units
from bench.studies.run_folder import (
    ARTIFACT_FILES,
    RUN_JSON,
    SETTINGS,
    SUBFOLDERS,
    TOOL,
    _is_our_artifact_dir,
    _remove_artifact_dir,
    _sweep,
    artifact_path,
    check_run_folder,
    known_unit_ids,
    load_unit,
    timing_path,
    timing_state,
    unique_units,
    unit_path,
    unit_state,
)
from bench.studies.timing import LADDER_FIELD, RUNG_FIELD, time_ladder, time_study

__all__ = ["ARTIFACT_FILES", "CHECKPOINT", "DATASET_AUTO", "DIVERGED", "LADDER_FIELD", "ONNX", "RUNG_FIELD", "RUN_JSON",
           "SETTINGS", "SUBFOLDERS", "TOOL", "WEIGHTS", "EventHook", "RunContext", "artifact_path", "available_engines",
           "build_unit_model", "check_device", "check_run_folder", "collect_records", "known_unit_ids", "load_unit",
           "measure_unit", "pending_units", "resolve_dataset", "run_plans", "run_seconds", "time_ladder", "time_study",
           "timed_units", "timing_path", "timing_state", "unique_units", "unit_context", "unit_path", "unit_seed",
           "unit_state", "unit_train_config"]

#: on_event(kind, payload): 'unit-start', 'unit-skip', 'unit-redo' (payload 'reason'), 'stage', 'unit-done',
#: 'timing-start', 'timing-skip', 'timing-redo' (payload 'reason'), 'timing-done'.
EventHook = Callable[[str, dict[str, Any]], None]

def run_plans(plans: Sequence[StudyPlan], ctx: RunContext, out_dir: Path,
              on_event: EventHook = lambda kind, payload: None, keep_artifacts: bool = False) -> list[dict[str, Any]]:
    """Prepare every unit not yet done, time every study not yet timed, then return all records.

    Phase 1, per unit: train, count, export, evaluate (`measure_unit`); its records are written in
    one atomic step, its weights and ONNX file kept in `artifacts/<unit>/`. Phase 2, per study:
    time all its units together (`time_study`), written in one atomic step to `timing/<study>.jsonl`.
    An interruption anywhere resumes at the first unit or study not written. A unit or timing file
    that is empty, cut short or otherwise unsound is measured again ('unit-redo' / 'timing-redo'
    events say why). Every record carries `unit_seconds`: how long the work that wrote it took (the
    unit's preparation; for a timing record, its study's timing phase). Work folders a killed run
    left are removed first; the artifacts are removed at the end unless `keep_artifacts`.
    """
    out_dir = Path(out_dir)
    _sweep(out_dir)
    units = unique_units(plans)
    pending = {spec.unit_id for spec in pending_units(plans, out_dir)}
    laddered = _laddered(plans, out_dir)
    for index, spec in enumerate(units):
        payload = {"unit": spec.unit_id, "index": index, "total": len(units)}
        if spec.unit_id not in pending:
            on_event("unit-skip", payload)
            continue
        bad = unit_state(out_dir, spec)[1]
        if bad:
            on_event("unit-redo", {**payload, "reason": f"units/{bad}"})
        on_event("unit-start", payload)
        start = time.perf_counter() - _seconds_trained_before(ctx, spec)
        _prepare_unit(spec, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage}),
                      keep_checkpoint=spec.unit_id in laddered)
        on_event("unit-done", {**payload, "seconds": time.perf_counter() - start})
    for plan in plans:
        if not plan.timed:
            continue
        payload = {"study": plan.name, "units": len(plan.units)}
        records, bad = timing_state(out_dir, plan)
        if records is not None:
            on_event("timing-skip", payload)
            continue
        if bad:
            on_event("timing-redo", {**payload, "reason": f"timing/{bad}"})
        on_event("timing-start", payload)
        start = time.perf_counter()
        timed = time_study(plan, ctx, out_dir, lambda stage, p=payload: on_event("stage", {**p, "stage": stage}))
        seconds = round(time.perf_counter() - start, 3)
        _write_records(timing_path(out_dir, plan), [{**record, "unit_seconds": seconds} for record in timed])
        on_event("timing-done", {**payload, "seconds": time.perf_counter() - start})
    if not keep_artifacts:
        _remove_artifacts(out_dir, units)
    return collect_records(plans, out_dir)


def _laddered(plans: Sequence[StudyPlan], out_dir: Path) -> set[str]:
    """The units whose training checkpoint a ladder still to run needs."""
    return {unit.spec.unit_id for plan in plans if plan.kind is StudyKind.LADDER and timing_state(out_dir, plan)[0] is None
            for unit in plan.units}


def pending_units(plans: Sequence[StudyPlan], out_dir: Path) -> list[UnitSpec]:
    """The units `run_plans` prepares (trains, then measures): those not measured yet, and those whose weights or
    checkpoint a study still to time needs and no longer has."""
    # A prepared unit's weights are needed again only by studies not timed yet; its checkpoint only by a ladder.
    untimed = {unit.spec.unit_id for plan in plans if timing_state(out_dir, plan)[0] is None
               for unit in timed_units(plan)}  # an extra seed is never timed: its weights are not kept
    laddered = _laddered(plans, out_dir)
    pending = []
    for spec in unique_units(plans):
        folder = artifact_path(out_dir, spec)
        needs_weights = spec.unit_id in untimed and not (folder / WEIGHTS).exists()
        needs_weights |= spec.unit_id in laddered and not (folder / CHECKPOINT).exists()
        if unit_state(out_dir, spec)[0] is None or needs_weights:
            pending.append(spec)
    return pending


def _seconds_trained_before(ctx: RunContext, spec: UnitSpec) -> float:
    """How long the unit's distributed training took (`ctx.trained`), counted in its preparation's time."""
    done = ctx.trained.get(spec.unit_id)
    return done.seconds if done is not None else 0.0


def _remove_artifacts(out_dir: Path, units: Sequence[UnitSpec]) -> None:
    """Remove every artifacts/<unit>/ folder rbench made (of these units or earlier ones), then artifacts/ if empty."""
    folder = out_dir / "artifacts"
    if not folder.is_dir():
        return
    ids = known_unit_ids() | {spec.unit_id for spec in units}
    for entry in sorted(folder.iterdir()):
        if _is_our_artifact_dir(entry, ids):
            _remove_artifact_dir(entry)
    with _suppress(OSError):
        folder.rmdir()


def _prepare_unit(spec: UnitSpec, ctx: RunContext, out_dir: Path, on_stage: Callable[[str], None],
                  keep_checkpoint: bool = False) -> None:
    """measure_unit in a locked scratch folder; then its artifacts, then its records, each moved into place whole.

    The training checkpoint is kept only with `keep_checkpoint` (a ladder still to run needs it)."""
    from bench.atomic import work_dir

    start = time.perf_counter() - _seconds_trained_before(ctx, spec)
    with work_dir(out_dir / "units", spec.unit_id) as work:
        records = measure_unit(spec, ctx, work, on_stage=on_stage)
        for record in records:
            record["unit_seconds"] = round(time.perf_counter() - start, 3)
        target = artifact_path(out_dir, spec)
        with work_dir(target.parent, spec.unit_id) as staging:
            folder = staging / spec.unit_id
            folder.mkdir()
            for name in ARTIFACT_FILES:
                if (work / name).exists() and (name != CHECKPOINT or keep_checkpoint):
                    shutil.move(str(work / name), folder / name)
            _remove_artifact_dir(target)
            folder.rename(target)
        _write_records(unit_path(out_dir, spec), records)


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from bench.atomic import write_text
    from bench.records.io import to_json, validate_record

    for record in records:
        validate_record(record)
    write_text(path, "".join(to_json(r) + "\n" for r in records))


def collect_records(plans: Sequence[StudyPlan], out_dir: Path) -> list[dict[str, Any]]:
    """Every finished unit's records, once per study that uses the unit, and the study's own timings,
    each tagged study/label/group. A unit or timing file that is missing or unsound is a DataProblem."""
    out = []
    for plan in plans:
        timings, bad = timing_state(out_dir, plan)
        if timings is None:
            raise DataProblem(f"{timing_path(out_dir, plan)}: {bad or 'missing'}; run the same command again to time "
                              f"the {plan.name} study again")
        for unit in plan.units:
            records, bad = unit_state(out_dir, unit.spec)
            if records is None:
                raise DataProblem(f"{unit_path(out_dir, unit.spec)}: {bad or 'missing'}; run the same command again "
                                  "to measure the unit again")
            tags = {"study": plan.name, "label": unit.label, "group": unit.group}
            out += [{**record, **tags} for record in records]
            out += [{**record, **tags} for record in timings if record.get("unit") == unit.spec.unit_id]
    return out


def run_seconds(plans: Sequence[StudyPlan], out_dir: Path) -> dict[str, float]:
    """How long each unit's preparation and each study's timing took, whichever invocation ran it (from the
    `unit_seconds` of the records on disk): unit id -> seconds, 'timing:<study>' -> seconds."""
    seconds: dict[str, float] = {}
    for spec in unique_units(plans):
        for record in unit_state(out_dir, spec)[0] or []:
            if isinstance(record.get("unit_seconds"), (int, float)):
                seconds[spec.unit_id] = max(seconds.get(spec.unit_id, 0.0), record["unit_seconds"])
    for plan in plans:
        for record in timing_state(out_dir, plan)[0] or []:
            if isinstance(record.get("unit_seconds"), (int, float)):
                key = f"timing:{plan.name}"
                seconds[key] = max(seconds.get(key, 0.0), record["unit_seconds"])
    return {key: round(value, 1) for key, value in seconds.items()}
