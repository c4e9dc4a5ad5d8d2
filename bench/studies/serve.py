"""The serve study: how many queries per second a trained net holds under MLPerf LoadGen's Server scenario.

Its kind is `StudyKind.OWN`: in the suite's timing phase it runs a Server peak search (`bench.scenarios.serve`,
`rbench serve --scenario server --find-peak`) of each unit on one engine, from the weights and ONNX file the unit's
preparation left. Its unit is the depth study's resnet20 (same unit id, so it is trained once for both). Each
step of the search is its own shortened LoadGen run: the figure says what this machine held at the budget's step
length, not an MLPerf-valid result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.format import fmt_ms, fmt_text, markdown_table
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting

NAME = "serve"
#: The fields of a serve record that name files of the LoadGen run: a suite's run keeps no LoadGen logs.
_LOG_FIELDS = ("loadgen_dir", "loadgen_files")
#: Seconds of a peak search beyond its steps: the workers' warm-up, data loading, LoadGen's set-up.
_FIXED_SECONDS = 3.0


@dataclass(frozen=True)
class ServeBudget:
    """The serve study's knobs: which nets, on which engine, and how long its Server peak search may run."""

    models: tuple[str, ...] = setting(("resnet20",), "serve_models")  # CIFAR ResNets trained as the depth study's
    engine: str = setting("ort", "serve_engine")  # served on this engine (else the run's first engine)
    search_duration_s: float = setting(10.0, "serve_search_duration")  # least seconds of each search step
    search_steps: int = setting(10, "serve_search_steps")  # most LoadGen runs in one search
    search_tolerance: float = setting(0.1, "serve_search_tolerance")  # stop when INVALID is this close above VALID
    min_queries: int | None = setting(None, "serve_min_queries")  # fewest queries per step (None: 1000)
    latency_bound_ms: float | None = setting(None, "serve_latency_bound_ms")  # p99 bound (None: MLPerf's 15 ms)
    samples: int | None = setting(None, "serve_samples")  # test images served (None: the preset's test_size)


def serve_plan(preset: Preset) -> StudyPlan:
    """One unit per served net, as the depth study trains it (a net both studies use is trained once)."""
    from bench.studies.plans import require_registered

    budget = STUDY.budget_of(preset)
    require_registered("serve", preset, budget.models)
    _config(budget).validate()  # a bad budget is refused before anything trains
    bound = "MLPerf's 15 ms" if budget.latency_bound_ms is None else f"{budget.latency_bound_ms:g} ms"
    queries = budget.min_queries or "1000"
    notes = (
        f"Each net is served on {budget.engine} (or the run's first engine when {budget.engine} is not among them) "
        "by `rbench serve --scenario server --find-peak` from its trained weights, on "
        f"{budget.samples or preset.test_size or 'all the'} test images: Poisson arrivals at a target QPS, the "
        f"99th percentile latency held under {bound}. The search starts at half the warm-up's capacity, halves or "
        f"doubles, then bisects until the lowest INVALID step is within {budget.search_tolerance:.0%} of the "
        f"highest VALID one, at most {budget.search_steps} steps of at least {budget.search_duration_s:g} s and "
        f"{queries} queries each.",
        "The steps are shortened LoadGen runs (MLPerf asks for 600 s): LoadGen's VALID/INVALID is its verdict on "
        "the settings it was given, not an MLPerf-valid result. The suite keeps no LoadGen logs; "
        "`rbench serve` keeps them in its --out folder.",
    )
    return StudyPlan(
        NAME, "Serving: Server-scenario peak under MLPerf LoadGen",
        "How many queries per second does the trained net hold under LoadGen's Server scenario (Poisson arrivals) "
        "with its 99th percentile latency under the bound, and where does LoadGen call it INVALID?",
        tuple(StudyUnit(name, UnitSpec(name), group="served") for name in budget.models), notes=notes,
    )


def _config(budget: ServeBudget):
    from bench.scenarios.serve.settings import ServeConfig

    return ServeConfig(scenario="server", find_peak=True, search_duration_s=budget.search_duration_s,
                       search_steps=budget.search_steps, search_tolerance=budget.search_tolerance,
                       min_queries=budget.min_queries, latency_bound_ms=budget.latency_bound_ms)


def serve_engine(budget: ServeBudget, engines: Sequence[str]) -> str:
    """The engine the study serves on: the budget's when the run measures it, else the run's first."""
    return budget.engine if budget.engine in engines or not engines else engines[0]


def serve_timing_seconds(plan: StudyPlan, preset: Preset) -> float:
    """The most seconds the peak searches take: every step at its least duration, plus each net's warm-up."""
    budget = STUDY.budget_of(preset)
    return len(plan.units) * (_FIXED_SECONDS + budget.search_steps * budget.search_duration_s)


def serve_timing(plan: StudyPlan, ctx, out_dir: Path,
                 on_stage: Callable[[str], None] = lambda stage: None) -> list[Record]:
    """A Server peak search of every unit of `plan`: one `serve` record each, with the unit's context.

    Serves the weights and ONNX file `measure_unit` left in `out_dir/artifacts/<unit>/`, on the unit's own test
    split normalized as it was trained. LoadGen writes into a locked work folder in `artifacts/`, removed when the
    search is done (the record keeps LoadGen's verdict, latencies and every step; not the log files). Without
    LoadGen installed, each unit gets a record that says so (`error`) instead.
    """
    from bench.errors import MissingDependency
    from bench.scenarios.serve.settings import import_loadgen
    from bench.studies.measure import unit_context
    from bench.studies.plans import timed_units

    budget = STUDY.budget_of(ctx.preset)
    engine = serve_engine(budget, ctx.engines)
    records = []
    for spec in list({unit.spec.unit_id: unit.spec for unit in timed_units(plan)}.values()):
        context = unit_context(spec, ctx)
        try:
            import_loadgen()
        except MissingDependency as exc:
            records.append(not_served_record(spec.model, engine, ctx, context, str(exc)))
            continue
        on_stage(f"serve {spec.unit_id}: peak search on {engine}")
        record = _peak_search(spec, engine, budget, ctx, out_dir,
                              lambda text, u=spec.unit_id: on_stage(f"serve {u}: {text}"))
        records.append(_with_context(record, context))
    return records


def _peak_search(spec: UnitSpec, engine: str, budget: ServeBudget, ctx, out_dir: Path,
                 on_stage: Callable[[str], None]) -> Record:
    """One unit's Server peak search from its prepared weights and ONNX file, LoadGen's logs dropped."""
    from bench.atomic import work_dir
    from bench.scenarios.serve import serve
    from bench.scenarios.serve.data import ServedModel
    from bench.scenarios.serve.qsl import SampleLibrary
    from bench.studies.measure import unit_source

    source, bundle = unit_source(spec, ctx, out_dir)
    test = ctx.test_split(bundle, budget.samples)
    library = SampleLibrary(test, bundle.mean, bundle.std, name=f"{bundle.name} test")
    dataset = {"name": bundle.name, "source": bundle.source, "split": "test", "samples": library.total_count,
               "num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape),
               "mean": list(bundle.mean), "std": list(bundle.std)}
    served = ServedModel(source, library, dataset, bundle.num_classes, tuple(bundle.class_names or ()) or None)
    with work_dir(out_dir / "artifacts", f"{NAME}-{spec.unit_id}") as work:
        record = serve(served, engine, _config(budget), out=work, device=ctx.device, on_stage=on_stage,
                       command=ctx.command)
    record = {**record, **dict.fromkeys(_LOG_FIELDS)}  # its files are gone
    record["peak_search"] = [{**step, "loadgen_dir": None} for step in record.get("peak_search") or []]
    return record


def not_served_record(model: str, engine: str, ctx, context: dict[str, Any], why: str) -> Record:
    """A `serve` record of a unit that could not be served here (every figure None), with the reason in `error`."""
    from bench.records.io import make_record
    from bench.records.schema import FIELDS

    values = dict.fromkeys(FIELDS["serve"])
    values.update(model=model, engine=engine, device=ctx.device, precision="fp32", scenario="server",
                  mode="find_peak")
    return _with_context({**make_record("serve", command=ctx.command, **values), "error": why}, context)


def _with_context(record: Record, context: dict[str, Any]) -> Record:
    from bench.records.io import validate_record

    record = {**record, **context}
    validate_record(record)
    return record


# --------------------------------------------------------------------------- the report


def serve_rows(records: Sequence[Record], study: str = NAME) -> list[dict[str, Any]]:
    """One row per serve record of `study`: the net, its engine, the peak search's outcome and the run's settings."""
    rows = []
    for r in records:
        if r.get("kind") != "serve" or r.get("study") != study:
            continue
        steps = r.get("peak_search") or []
        peak = next((s for s in steps if s.get("target_qps") == r.get("peak_qps") and s.get("result") == "VALID"), {})
        settings = r.get("loadgen_settings") or {}
        rows.append({"label": r.get("label") or r.get("model"), "engine": r.get("engine"), "error": r.get("error"),
                     "peak_qps": r.get("peak_qps"), "invalid_above": r.get("peak_invalid_above"),
                     "peak_samples_s": peak.get("samples_per_s"), "peak_p99": peak.get("latency_ms_p99"),
                     "bound": r.get("latency_bound_ms"), "steps": len(steps), "workers": r.get("workers"),
                     "pool": f"{_num(r.get('workers'))} x {_num(r.get('threads'))}",
                     "threads": r.get("threads"), "max_batch": r.get("max_batch"),
                     "step_s": settings.get("min_duration_s"), "shortened": r.get("shortened") or [],
                     "search": steps})
    return rows


def summary_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The serve study's rows of a run's summary: per net, its Server peak (VALID) and the INVALID step above it."""
    return [{"study": NAME, "label": row["label"], "engine": row["engine"],
             "metric": "Server peak QPS (LoadGen VALID, p99 under the bound)",
             "value": row["peak_qps"], "invalid_above": row["invalid_above"], "error": row["error"]}
            for row in serve_rows(records)]


def _num(value: Any, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def serve_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                  preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """Each net's Server peak: the peak table (when several nets are served: one net's peak is its finding and a row
    of its search), every search step, and one finding per net."""
    rows = serve_rows(records)
    if not rows:
        return "No serve records.\n\n", []
    served = [r for r in rows if not r["error"]]
    parts, findings = [], []
    for row in rows:
        if row["error"]:
            parts.append(f"{row['label']}: not served here ({row['error']}).\n\n")
            findings.append(f"{row['label']}: not served ({row['error']}).")
    if len(served) > 1:
        cols = [("net", "label", fmt_text), ("engine", "engine", fmt_text),
                ("peak QPS (VALID)", "peak_qps", lambda v: _num(v)),
                ("INVALID at QPS", "invalid_above", lambda v: _num(v)),
                ("samples/s at peak", "peak_samples_s", lambda v: _num(v, ".1f")),
                ("p99 ms at peak", "peak_p99", fmt_ms), ("bound ms", "bound", lambda v: _num(v)),
                ("steps", "steps", lambda v: _num(v, "d")), ("workers x threads", "pool", fmt_text),
                ("max batch", "max_batch", lambda v: _num(v, "d"))]
        parts.append("**Server peak** (the highest VALID step of each net's search below)\n\n")
        parts.append(markdown_table(served, cols) + "\n\n")
    for row in served:
        step_rows = [{"step": i, "target": s.get("target_qps"), "result": s.get("result"),
                      "sps": s.get("samples_per_s"), "p99": s.get("latency_ms_p99"), "queries": s.get("queries"),
                      "why": "; ".join(s.get("result_reasons") or []) or "-"}
                     for i, s in enumerate(row["search"], 1)]
        parts.append(f"**{row['label']} on {row['engine']}: the search** ({row['workers']} worker(s) of "
                     f"{row['threads']} thread(s), dynamic batching up to {row['max_batch']}; one LoadGen run of at "
                     f"least {_num(row['step_s'])} s per step, VALID when its 99th percentile latency stays under "
                     f"the {_num(row['bound'])} ms bound and early stopping confirms it)\n\n")
        parts.append(markdown_table(step_rows, [
            ("step", "step", lambda v: _num(v, "d")), ("target QPS", "target", lambda v: _num(v)),
            ("LoadGen", "result", fmt_text), ("samples/s", "sps", lambda v: _num(v, ".1f")),
            ("p99 ms", "p99", fmt_ms), ("queries", "queries", lambda v: _num(v, "d")),
            ("why INVALID", "why", fmt_text)]) + "\n\n")
        findings.append(_finding(row))
    return "".join(parts), findings


def _finding(row: dict[str, Any]) -> str:
    """What the search shows for one net, stated only as far as its steps support it."""
    label, engine = row["label"], row["engine"]
    short = " (shortened steps: LoadGen's verdict, not an MLPerf-valid result)" if row["shortened"] else ""
    if row["peak_qps"] is None:
        return (f"{label} on {engine}: no step was VALID under the {_num(row['bound'])} ms bound, down to "
                f"{_num(min((s.get('target_qps') or 0) for s in row['search']) if row['search'] else None)} QPS"
                f"{short}.")
    above = (f"; INVALID at {_num(row['invalid_above'])} QPS" if row["invalid_above"] is not None
             else "; no INVALID step above it within the search's steps, so the peak may be higher")
    return (f"{label} on {engine}: holds {_num(row['peak_qps'])} QPS under LoadGen's Server scenario (p99 "
            f"{fmt_ms(row['peak_p99'])} ms under the {_num(row['bound'])} ms bound){above}{short}.")


def serve_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[Any]:
    """The report's opening rows: each served net's Server peak, decided when an INVALID step bounds it from above
    (shortened steps say so: LoadGen's verdict, not an MLPerf-valid one)."""
    from bench.report.summary import DECIDED, UNDECIDED, SummaryRow

    out = []
    for row in serve_rows(records):
        if row["error"]:
            continue
        peak, above = row["peak_qps"], row["invalid_above"]
        answer = "no VALID step" if peak is None else f"{_num(peak)} QPS VALID"
        figure = (f"peak {_num(peak)} QPS, INVALID at {_num(above)} QPS (p99 bound {_num(row['bound'])} ms"
                  f"{'; shortened steps' if row['shortened'] else ''})")
        status = DECIDED if peak is not None and above is not None else UNDECIDED
        out.append(SummaryRow(f"Server peak of {row['label']} on {row['engine']}", answer, figure, status))
    return out


STUDY = Study(NAME, StudyKind.OWN, serve_plan, budget=ServeBudget, section=serve_section, timing=serve_timing,
              timing_seconds=serve_timing_seconds, summary=serve_summary)
