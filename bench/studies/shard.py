"""The suite across hosts: a deterministic, balanced share of the studies per shard, and the merge of the shards.

A shard is a set of whole studies, never part of one: a study's nets are timed together,
interleaved in rounds on one machine (`runner.time_study`), so its latency ratios compare
numbers measured side by side. Splitting a study across hosts would compare latencies from
different machines. The assignment is greedy longest-processing-time over the studies'
estimated costs, where a unit a shard already trains for another study costs it nothing more
(ResNet-20 serves four studies): every host computes the same assignment from the code and
the preset alone, so a job array needs no coordinator. A unit shared by studies on different
shards is trained on each of them; each study's records come from the host that ran it.

`merge_runs` reads finished run folders (one per shard, or any runs of one suite) and returns
the records and run description of one report: it refuses runs whose preset, data or settings
differ, names the studies and units no folder holds, and says which machine timed each study.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DataProblem, UsageProblem
from bench.studies.base import Preset, StudyKind, StudyPlan, UnitSpec
from bench.studies.plans import timed_units

# A rough cost model, fitted on the quick suite committed in results/ (2-core EPYC): preparing a unit
# (training, export, evaluation) takes about 35 s per 10^12 forward FLOPs of training images, dynamic
# convolution about 3x that per FLOP (its per-sample kernels), plus a few seconds of fixed work (export,
# parity, sessions); timing a unit costs a few seconds more, and a ladder unit one pass over its test
# images per rung. Only the ratios between studies matter: they decide the balance, not a schedule.
SECONDS_PER_TFLOP = 35.0
DYNAMIC_FACTOR = 3.0
UNIT_FIXED_SECONDS = 3.0
TIMING_FIXED_SECONDS = 3.0


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based, as `--shard I/N` writes it)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def slug(self) -> str:
        return f"shard{self.index}of{self.count}"


def parse_shard(text: str) -> Shard:
    """`I/N` with 1 <= I <= N; anything else is a one-line usage error."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise UsageProblem(f"--shard {text!r} is not I/N (e.g. 2/4: the second of four shards)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UsageProblem(f"--shard {text}: I must be 1..N and N at least 1 (shards count from 1: "
                           f"with a 0-based array index, pass $((INDEX + 1))/{max(count, 1)})")
    return Shard(index, count)


def unit_cost(spec: UnitSpec, preset: Preset) -> float:
    """Estimated seconds to prepare `spec` at `preset` (train, export, evaluate): see SECONDS_PER_TFLOP."""
    from bench.measure.flops import model_flops

    chans = len(spec.channels) if spec.channels else (3 if spec.rgb else 1)
    size = preset.input_size
    try:
        _, flops = model_flops(spec.model, (chans, size, size), 10, None, **spec.builder_kwargs())
    except Exception:  # noqa: BLE001 - a net the counter cannot build still gets a share: the median-ish guess
        flops = 100e6
    images = preset.epochs * (spec.max_batches * preset.batch_size if spec.max_batches else preset.train_size or 60000)
    images += preset.test_size or 10000
    factor = DYNAMIC_FACTOR if spec.model.startswith("dy_") else 1.0
    return UNIT_FIXED_SECONDS + SECONDS_PER_TFLOP * factor * flops * images / 1e12


def timing_cost(plan: StudyPlan, preset: Preset) -> float:
    """Estimated seconds to time a study's units (a ladder also evaluates every rung on its test images, as its
    study's `timing_flops` says; an accuracy-only unit, such as an extra seed, is not timed)."""
    from bench.studies.registry import study_of

    units = plan.units if plan.kind is StudyKind.LADDER else timed_units(plan)
    seconds = TIMING_FIXED_SECONDS * len(units)
    study = study_of(plan)
    if study is not None and study.timing_flops is not None:
        seconds += SECONDS_PER_TFLOP / 3 * study.timing_flops(plan, preset) / 1e12  # forward passes: a third of a step
    if study is not None and study.timing_seconds is not None:  # a study that times itself says how long it takes
        seconds += study.timing_seconds(plan, preset)
    return seconds


def assign_studies(plans: Sequence[StudyPlan], count: int, preset: Preset,
                   costs: dict[str, float] | None = None) -> list[list[StudyPlan]]:
    """Split `plans` into `count` shards of whole studies, balanced by estimated cost; deterministic.

    `costs` (unit id or 'timing:<study>' -> seconds, as a run.json's `unit_seconds`) overrides the
    estimates where it has an entry. Studies go, costliest first, to the shard whose load grows
    least (its units already there are free); ties go to the lower shard.
    """
    costs = costs or {}
    if count > len(plans):
        raise UsageProblem(f"--shard N={count}: this run has {len(plans)} studies and a shard holds whole studies "
                           f"(each study's nets are timed together on one machine); use N <= {len(plans)}")

    def unit_seconds(spec: UnitSpec) -> float:
        return costs[spec.unit_id] if spec.unit_id in costs else unit_cost(spec, preset)

    def study_timing(plan: StudyPlan) -> float:
        key = f"timing:{plan.name}"
        return costs[key] if key in costs else timing_cost(plan, preset)

    unit_secs = {u.spec.unit_id: unit_seconds(u.spec) for plan in plans for u in plan.units}

    def standalone(plan: StudyPlan) -> float:
        return study_timing(plan) + sum(unit_secs[i] for i in {u.spec.unit_id for u in plan.units})

    order = sorted(range(len(plans)), key=lambda i: (-standalone(plans[i]), i))
    shards: list[list[int]] = [[] for _ in range(count)]
    held: list[set[str]] = [set() for _ in range(count)]
    load = [0.0] * count
    for i in order:
        ids = {u.spec.unit_id for u in plans[i].units}
        grown = [load[s] + study_timing(plans[i]) + sum(unit_secs[u] for u in ids - held[s]) for s in range(count)]
        # An empty shard takes a study before a busy one grows: every shard gets work when count <= studies.
        empty = [s for s in range(count) if not shards[s]]
        best = min(empty or range(count), key=lambda s: (grown[s], s))
        shards[best].append(i)
        held[best] |= ids
        load[best] = grown[best]
    # Within a shard, the suite's own study order (what a reader of its report expects).
    return [[plans[i] for i in sorted(members)] for members in shards]


def shard_plans(plans: Sequence[StudyPlan], shard: Shard, preset: Preset,
                costs: dict[str, float] | None = None) -> list[StudyPlan]:
    """The studies shard `shard` runs."""
    return assign_studies(plans, shard.count, preset, costs)[shard.index - 1]


def read_costs(path: str | Path) -> dict[str, float]:
    """Measured seconds per unit and study timing from a finished run's run.json (`unit_seconds`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageProblem(f"--shard-costs {path}: cannot read it as JSON ({exc.__class__.__name__}); "
                           "pass the run.json of a finished run") from None
    seconds = data.get("unit_seconds") if isinstance(data, dict) else None
    if not isinstance(seconds, dict) or not all(isinstance(v, (int, float)) for v in seconds.values()):
        raise UsageProblem(f"--shard-costs {path} has no unit_seconds table; pass the run.json of a finished run")
    return {str(k): float(v) for k, v in seconds.items()}


# --------------------------------------------------------------------------- the merge


#: Settings every merged run must share (the shard and the machine may differ).
MERGE_KEYS = ("preset", "preset_settings", "dataset", "engines", "device", "seed")


@dataclass
class MergedRun:
    """What `merge_runs` returns: every record, the run description for the report, and what is missing."""

    records: list[dict[str, Any]]
    run: dict[str, Any]
    missing_studies: list[str]
    missing_units: list[str]


def _read_run(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.studies.run_folder import RUN_JSON, SETTINGS, TOOL

    run_file, settings_file = folder / RUN_JSON, folder / SETTINGS
    if not folder.is_dir():
        raise UsageProblem(f"{folder} is not a folder; pass the run folders (--out) of finished suite runs")
    if not run_file.is_file():
        raise UsageProblem(f"{folder} holds no finished run (no run.json); finish it with the same `rbench suite` "
                           "command, or leave it out")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
        settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise DataProblem(f"{folder}: run.json or settings.json cannot be read ({exc.__class__.__name__})") from None
    if not isinstance(run, dict) or run.get("tool", TOOL) != TOOL or "studies" not in run:
        raise UsageProblem(f"{folder}/run.json is not an rbench run description")
    return run, settings if isinstance(settings, dict) else {}


def _machine_of(machine: dict[str, Any]) -> str:
    from bench.records.io import machine_slug

    return machine_slug(machine) if machine else "an unrecorded machine"


def _setting(run: dict[str, Any], settings: dict[str, Any], key: str) -> Any:
    if key == "seed":
        return settings.get("seed", 0)
    return run.get(key)


def merge_runs(folders: Sequence[str | Path], allow_missing: bool = False) -> MergedRun:
    """One suite's records from finished run folders (shards, or separate study runs of the same settings).

    Raises:
        UsageProblem: a folder is no finished run; the runs' settings differ (names the setting and
            the folders); a study is in two folders; studies are missing and not `allow_missing`.
    """
    from bench.records.io import current_command, read_records
    from bench.studies.presets import get_preset, suite_studies
    from bench.studies.registry import study_names, study_plan

    if not folders:
        raise UsageProblem("give at least one run folder")
    runs = []
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        runs.append((folder, *_read_run(folder)))
    first_folder, first, first_settings = runs[0]
    for folder, run, settings in runs[1:]:
        differs = [k for k in MERGE_KEYS if _setting(run, settings, k) != _setting(first, first_settings, k)]
        if differs:
            raise UsageProblem(f"{folder} and {first_folder} are runs with different {', '.join(differs)}; "
                               "merge only runs of one suite (same preset, data, engines, device and seed)")
    owner: dict[str, Path] = {}
    plans: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    timed_on: dict[str, str] = {}
    for folder, run, _ in runs:
        names = [s["name"] for s in run["studies"]]
        for name in names:
            if name in owner:
                raise UsageProblem(f"study {name} is in both {owner[name]} and {folder}; pass one run of each study")
            owner[name] = folder
            plans[name] = next(s for s in run["studies"] if s["name"] == name)
        mine = [r for r in read_records(folder / "records.jsonl") if r.get("study") in names]
        for name in names:
            machines = {_machine_of(r.get("machine") or {}) for r in mine
                        if r.get("study") == name and r.get("kind") in ("latency", "throughput")}
            if len(machines) > 1:  # never by rbench's own runs: each study is timed in one go
                raise DataProblem(f"{folder}: the {name} study's timings come from {len(machines)} machines; "
                                  "its latency ratios would compare machines, not nets")
            timed_on[name] = next(iter(machines), _machine_of(run.get("machine") or {}))
        records += mine
    # What the whole suite at this preset holds: every study it runs (not those the preset leaves out of its suite),
    # and the shard layout the runs name.
    preset_name = first.get("preset")
    try:
        expected = [study_plan(name, get_preset(preset_name)) for name in suite_studies(preset_name, study_names())]
    except UsageProblem:  # a preset this rbench no longer has: the runs' own studies are all we know
        expected = []
    if len(runs) == 1 and str(first.get("title", "")).startswith("rbench study "):
        expected = []  # a `rbench study NAME` run, rendered again: its own studies are the whole of it
    missing_studies = [p.name for p in expected if p.name not in owner]
    present_units = {r.get("unit") for r in records}
    missing_units = sorted({u.spec.unit_id for p in expected if p.name in missing_studies for u in p.units}
                           - present_units)
    if missing_studies and not allow_missing:
        shards = sorted({str(run.get("shard", {}).get("spec")) for _, run, _ in runs if run.get("shard")})
        layout = f" (shards given: {', '.join(shards)})" if shards else ""
        raise UsageProblem(f"no run folder holds the {', '.join(missing_studies)} study(ies){layout}: units "
                           f"{', '.join(missing_units) or 'none'} are missing; pass every shard's folder, or "
                           "--partial to report what is there")
    order = [p.name for p in expected if p.name in plans] + [n for n in plans if n not in {p.name for p in expected}]
    machines = sorted(set(timed_on.values()))
    run = {**{k: v for k, v in first.items() if k not in ("shard", "unit_seconds_this_invocation")},
           "title": "rbench suite (merged)" if len(runs) > 1 else first.get("title", "rbench suite"),
           "studies": [plans[name] for name in order],
           "command": current_command(),
           "merged_from": [str(folder) for folder, _, _ in runs],
           "run_commands": [str(r.get("command")) for _, r, _ in runs],
           "timed_on": {name: timed_on[name] for name in order},
           "machines": machines,
           "missing_studies": missing_studies, "missing_units": missing_units,
           "measured_seconds": round(sum(r.get("measured_seconds") or 0 for _, r, _ in runs), 1),
           "wall_seconds_this_invocation": max((r.get("wall_seconds_this_invocation") or 0) for _, r, _ in runs),
           "unit_seconds": {k: v for _, r, _ in runs for k, v in (r.get("unit_seconds") or {}).items()}}
    return MergedRun(records=records, run=run, missing_studies=missing_studies, missing_units=missing_units)


def merge_note(run: dict[str, Any]) -> str:
    """The report's line on where each study was timed, for a merged run ('' for a single run)."""
    sources = run.get("merged_from") or []
    if len(sources) < 2 and not run.get("missing_studies"):
        return ""
    by_machine: dict[str, list[str]] = {}
    for study, machine in (run.get("timed_on") or {}).items():
        by_machine.setdefault(machine, []).append(study)
    where = "; ".join(f"{', '.join(studies)} on {machine}" for machine, studies in by_machine.items())
    runs = ", ".join(f"`{command}`" for command in dict.fromkeys(run.get("run_commands") or []))
    text = (f"Merged from {len(sources)} run folders ({runs}). Each study was trained and timed on one machine ({where}): "
            "latency is compared only within a study, so only between numbers measured on one machine together; "
            "accuracy does not depend on the machine and is pooled.")
    if run.get("missing_studies"):
        text += (f" **Missing** (no folder given holds them): {', '.join(run['missing_studies'])}; units "
                 f"{', '.join(run.get('missing_units') or []) or 'none'}.")
    return text + "\n"
