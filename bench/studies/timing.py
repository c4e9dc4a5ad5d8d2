"""Time a study's prepared units, as its kind says: a timed study's nets together per engine, a ladder's
rungs per net, an accuracy study nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import DataProblem
from bench.studies.base import StudyKind, StudyPlan, UnitSpec, plain_json
from bench.studies.context import RunContext
from bench.studies.measure import CHECKPOINT, unit_context, unit_source
from bench.studies.plans import timed_units
from bench.studies.registry import study_of
from bench.studies.run_folder import artifact_path

#: The suite times each study's nets in worker processes (`bench.measure.workers`), but within its
#: budget: the preset's timed runs split between 4 workers rather than repeated in each, and more workers only
#: while the preset's `timing_extra_s` allows. With 2 workers the interval's Student's t has one degree of
#: freedom (12.7 where 3 have 3.18): every ladder ratio of the quick run at 2 was wider than hi/lo 1.15. Workers
#: forked from a zygote (`bench.measure.zygote`) get ready in a fraction of the time a new interpreter took,
#: which pays for the other two.
SUITE_WORKERS = 4


def _timing_mode(preset) -> str:
    """The preset's timing mode, unless RBENCH_TIMING (the user's, or the tests') says otherwise."""
    import os

    from bench.measure.settings import TIMING_ENV

    return os.environ.get(TIMING_ENV) or preset.timing


def _runs_share(preset) -> int:
    """How many processes share the preset's timed runs: its workers, or the one process when in-process."""
    return 1 if _timing_mode(preset) == "in-process" else SUITE_WORKERS


def time_study(plan: StudyPlan, ctx: RunContext, out_dir: Path,
               on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """Latency at batch 1 and throughput at the preset's batch of every unit of `plan`, timed together.

    Per engine, all the study's nets are opened and timed interleaved in rounds
    (`bench.measure.run.compare`), so the study's latency ratios compare figures that drift and
    other work hit alike. Reads the weights and ONNX file `measure_unit` left in
    `out_dir/artifacts/<unit>/`. A ladder study times each net's rungs instead (`time_ladder`); an accuracy
    study times nothing. A study's `extra_timing` adds its own records to a timed study's.
    """
    if plan.kind is StudyKind.LADDER:
        return time_ladder(plan, ctx, out_dir, on_stage)
    if plan.kind is StudyKind.ACCURACY:
        return []
    if plan.kind is StudyKind.OWN:  # the study's own timing phase (`Study.timing`)
        study = study_of(plan)
        if study is None or study.timing is None:
            raise DataProblem(f"the {plan.name} study times its units itself but gives no timing")
        return study.timing(plan, ctx, out_dir, on_stage)

    from bench.measure.run import Settings, compare, throughput_records

    specs = list({unit.spec.unit_id: unit.spec for unit in timed_units(plan)}.values())
    sources, contexts = [], []
    for spec in specs:
        source, _ = unit_source(spec, ctx, out_dir)
        sources.append(source)
        contexts.append(unit_context(spec, ctx))
    preset = ctx.preset
    share = _runs_share(preset)
    records: list[dict[str, Any]] = []
    for engine in ctx.engines:
        on_stage(f"latency/{engine}")
        iters = max(1, preset.iters // share)
        settings = Settings(device=ctx.device, warmup=preset.warmup, iters=iters, rounds=max(1, min(10, iters // 4)),
                            workers=SUITE_WORKERS, max_time_s=ctx.preset.timing_extra_s,
                            timing=_timing_mode(ctx.preset))
        latency, _ = compare(sources, [engine], 1, settings, command=ctx.command)
        records += [_with_context(r, c) for r, c in zip(latency, contexts)]
        on_stage(f"throughput/{engine}")
        iters = max(1, preset.throughput_iters // share)
        settings = Settings(device=ctx.device, warmup=max(1, preset.warmup // 5), iters=iters,
                            rounds=max(1, min(10, iters // 2)), workers=SUITE_WORKERS,
                            max_time_s=ctx.preset.timing_extra_s,
                            timing=_timing_mode(ctx.preset))
        sweep, _ = compare(sources, [engine], preset.throughput_batch, settings, command=ctx.command)
        records += [_with_context(throughput_records([r], command=ctx.command)[0], c) for r, c in zip(sweep, contexts)]
    study = study_of(plan)
    if study is not None and study.extra_timing is not None:
        records += study.extra_timing(plan, sources, contexts, ctx, on_stage)
    return records



#: The field every record of the ladder's timing phase carries: its rung ('ort int8'; a comparison's candidate).
RUNG_FIELD = "rung"
#: The field of each net's reference latency record (torch fp32, batch 1) that holds the ladder's rows
#: (every rung, those not run here with the reason), the int8 check and the settings: what the report draws.
LADDER_FIELD = "ladder"


def _ladder_budget(plan: StudyPlan, ctx: RunContext) -> Any:
    """A ladder study's budget in the run's preset: rungs, test_limit, calibration, warmup, iters, rounds and
    throughput_batch (`bench.studies.ladder.LadderBudget`)."""
    study = study_of(plan)
    if study is None:
        raise DataProblem(f"no registered study makes the ladder plan {plan.name!r}")
    return study.budget_of(ctx.preset)


def time_ladder(plan: StudyPlan, ctx: RunContext, out_dir: Path,
                on_stage: Callable[[str], None] = lambda stage: None) -> list[dict[str, Any]]:
    """The precision ladder (`bench.scenarios.ladder.run_ladder`) of every unit of `plan`, at the preset's budget.

    Each net's ladder starts from the training checkpoint `measure_unit` left in
    `out_dir/artifacts/<unit>/checkpoint.pt`; its ONNX, int8 and engine files go to a locked work
    folder in `artifacts/` that is removed when the net is done. Returns the ladder's latency,
    comparison and accuracy records with the unit's context and their rung; the first (torch
    fp32 at batch 1) also carries the rows, int8 check and settings under `LADDER_FIELD`.
    """
    from bench.atomic import work_dir
    from bench.measure.run import Settings
    from bench.scenarios.ladder import parse_rungs, run_ladder

    budget = _ladder_budget(plan, ctx)
    rungs = parse_rungs(budget.rungs)
    settings, throughput_settings = (
        Settings(device=ctx.device, warmup=budget.warmup, iters=max(1, iters // _runs_share(ctx.preset)),
                 rounds=min(budget.rounds, max(1, iters // _runs_share(ctx.preset))), workers=SUITE_WORKERS,
                 max_time_s=ctx.preset.timing_extra_s, timing=_timing_mode(ctx.preset))
        for iters in (budget.iters, budget.throughput_runs))
    records: list[dict[str, Any]] = []
    for spec in list({unit.spec.unit_id: unit.spec for unit in plan.units}.values()):
        checkpoint = artifact_path(out_dir, spec) / CHECKPOINT
        if not checkpoint.is_file():
            raise DataProblem(f"{checkpoint} is missing: the ladder needs the unit's training checkpoint; "
                              "run the same command again to prepare the unit again")
        with work_dir(out_dir / "artifacts", f"{plan.name}-{spec.unit_id}") as work:
            result = run_ladder(checkpoint, workdir=work, rungs=rungs, model_name=spec.model, data_root=ctx.data_root,
                                calibration=str(budget.calibration), batch=1,
                                throughput_batch=budget.throughput_batch, settings=settings,
                                throughput_settings=throughput_settings,
                                test_limit=budget.test_limit, device=ctx.device,
                                on_stage=lambda stage, u=spec.unit_id: on_stage(f"ladder {u}: {stage}"),
                                command=ctx.command)
        records += _ladder_records(result, plan, spec, ctx, checkpoint.relative_to(out_dir).as_posix(), settings,
                                   throughput_settings)
    return records


def _ladder_records(result, plan: StudyPlan, spec: UnitSpec, ctx: RunContext, checkpoint: str, settings,
                    throughput_settings=None) -> list[dict[str, Any]]:
    """`result`'s records with the unit's context and rung; the first carries the rows (`LADDER_FIELD`)."""
    context = unit_context(spec, ctx)
    records = []
    for record in result.records:
        if record["kind"] == "comparison":
            rung = f"{record['candidate'].get('engine')} {record['candidate'].get('precision')}"
        else:
            rung = f"{record.get('engine')} {record.get('precision')}"
        if record["kind"] == "accuracy":
            record = {**record, "checkpoint": checkpoint}  # not the work folder's path: it is gone
        records.append(_with_context(record, {**context, RUNG_FIELD: rung}))
    if not records:
        raise DataProblem(f"the precision ladder of {spec.unit_id} measured nothing")
    rows = [{k: v for k, v in row.items() if k != "file"} for row in result.rows]  # its files are gone
    int8 = dict(result.int8) if result.int8 else None
    for key in ("path", "source_path"):
        if int8 and int8.get(key):
            int8[key] = Path(int8[key]).name
    budget = _ladder_budget(plan, ctx)
    payload = {"rows": rows, "int8": int8, "test_limit": budget.test_limit,
               "calibration_images": budget.calibration, "throughput_batch": budget.throughput_batch,
               "settings": settings.as_record(),
               "throughput_settings": (throughput_settings or settings).as_record()}
    first = records[0]
    records[0] = _with_context(first, {LADDER_FIELD: _finite(plain_json(payload))})
    return records


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (records are strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _with_context(record: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    from bench.records.io import validate_record

    record = {**record, **context}
    validate_record(record)
    return record

