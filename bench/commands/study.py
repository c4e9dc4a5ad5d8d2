"""`rbench study NAME` and `rbench suite`: studies end to end, resumable, one Markdown report.

Each unit of work (one model trained, profiled, exported, measured on every engine) writes its
records in one atomic step to `OUT/units/`; a rerun skips finished units (and measures again one
whose file is unsound). OUT must be new, empty or an rbench run folder holding only rbench's
files: rbench never deletes what it did not write. When every unit is
done, `OUT/records.jsonl` (every record, tagged with its study) and `OUT/report.md` (tables and
PNG plots from `bench.report.render`) are written, again atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.errors import UsageProblem

PRESET_CHOICES = ("smoke", "quick", "standard", "full")

STUDY_HELP = """
\b
Every study trains each net briefly on real data (Fashion-MNIST where installed, else
scikit-learn digits), exports it to ONNX and checks parity with PyTorch, then measures on
every engine: latency (batch 1, p50/p90/p99), throughput (images/s at the preset's batch),
params, MACs (thop) and FLOPs (torch counter, 2 per MAC), and test top-1 / macro-F1.
The ladder study runs `rbench ladder` on its trained nets: every engine and precision
(fp32, bf16, int8, fp16) here, speedup over torch fp32 with its interval, top-1 per rung.
The training-recipe studies (recipe, optimizer) only train and score test top-1 through torch,
every configuration with 2 seeds (3 at full); a difference no larger than the seed spread is
reported as "within seed noise", and a configuration that diverges is recorded as failed.
\b
Presets: smoke (seconds, CI), quick (the suite in under 15 minutes on a 2-core CPU; the recipe
studies reduced to a few tiny units), standard (recipe + optimizer in about 45 minutes on a
2-core CPU, every rung and sweep), full (the whole data set and the seed reports' nets, for a GPU).
"""

SHARD_HELP = """
\b
Across hosts (a Slurm array, a Kubernetes Indexed Job): each host runs
  rbench suite --shard I/N --out runs/shard-I
and, when all are done, one host merges them:
  rbench report runs/shard-* --out runs/merged
A shard holds whole studies, since a study's nets are timed together on one machine.
"""


def _parse_engines(text: str | None) -> list[str] | None:
    if not text:
        return None
    from bench.measure.run import parse_engines

    return parse_engines(text)


def _default_out(kind: str, preset: str, shard=None) -> Path:
    from bench.records.io import machine_slug

    return Path("results") / f"{kind}-{preset}-{machine_slug()}{'-' + shard.slug if shard else ''}"


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Setup:
    """A run's inputs, every one checked; nothing written yet."""

    plans: list
    all_studies: list[str]
    shard_spec: Any
    ctx: Any  # bench.studies.runner.RunContext
    out_dir: Path
    dataset_why: str


def _setup(studies: Sequence[str], preset_name: str, dataset: str, data_root: str | None, out: str | None,
           engines: str | None, device: str, kind: str, shard: str | None, shard_costs: str | None) -> _Setup:
    """Check every input before the first write: a bad input leaves nothing behind."""
    from bench.records.io import current_command
    from bench.studies import get_preset, study_plan
    from bench.studies.runner import RunContext, available_engines, check_device, resolve_dataset

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
    engine_names = available_engines(_parse_engines(engines), device)
    out_dir = Path(out) if out else _default_out(kind, preset.name, shard_spec)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} is a file, not a folder")
    ctx = RunContext(dataset=dataset_name, preset=preset, engines=engine_names, device=device,
                     data_root=data_root, command=current_command(), shard=str(shard_spec) if shard_spec else None)
    ctx.bundle()  # load the data now: a missing data set fails before anything is written
    return _Setup(plans, all_studies, shard_spec, ctx, out_dir, dataset_why)


def run_studies(studies: Sequence[str], preset_name: str, dataset: str, data_root: str | None, out: str | None,
                engines: str | None, resume: bool, device: str, keep_artifacts: bool, title: str,
                kind: str, shard: str | None = None, shard_costs: str | None = None,
                nproc: int | None = None) -> Path | None:
    """Check every input, run the studies' units (resuming), write records.jsonl and report.md.

    With `shard` ('I/N'), only the studies of that shard (`bench.studies.shard.shard_plans`) run;
    `rbench report` merges the shards' folders into one report. Under torchrun with several processes, every
    process trains the units together and rank 0 alone does the rest (`bench.studies.data_parallel`); ranks other
    than 0 return None. `nproc` > 1 starts that on this host (torchrun) and waits for it.
    """
    from rich.console import Console

    from bench.studies.runner import check_run_folder
    from bench.train import distributed

    device = _device(device)
    inputs = (studies, preset_name, dataset, data_root, out, engines, device, kind, shard, shard_costs)
    if nproc is not None and nproc > 1:
        return _launch(nproc, inputs)
    if distributed.launched_by_torchrun() and distributed.active() is None:
        return _run_distributed(inputs, resume, keep_artifacts, title, kind)
    console = Console(stderr=True)
    setup = _setup(*inputs)
    note = check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans)
    return _run(setup, note, keep_artifacts, title, kind, console)


def _launch(nproc: int, inputs: tuple) -> Path:
    """`--nproc N`: check what every rank would refuse, then run this command in N processes (torchrun)."""
    from bench.records.io import current_command
    from bench.studies.data_parallel import check_batches
    from bench.studies.runner import unique_units
    from bench.train import distributed

    if distributed.launched_by_torchrun():
        raise UsageProblem("--nproc starts torchrun itself; under torchrun leave it out (torchrun's --nproc-per-node "
                           "says how many processes)")
    device = inputs[6]
    distributed.check_nproc(nproc, device)
    setup = _setup(*inputs)
    check_batches(unique_units(setup.plans), setup.ctx, nproc)
    ctx = click.get_current_context()
    threads = max(1, distributed.available_cores() // nproc)
    distributed.launch(nproc, distributed.command_argv(ctx.command, ctx.params, drop=("nproc",)), threads,
                       command=current_command())
    return setup.out_dir


def _run_distributed(inputs: tuple, resume: bool, keep_artifacts: bool, title: str, kind: str) -> Path | None:
    """One rank of a study run under torchrun: agree on the run, train the units that need it with every
    process, leave the group; rank 0 then measures and reports alone (`bench.studies.data_parallel`)."""
    import contextlib
    import dataclasses

    from rich.console import Console

    from bench.studies.data_parallel import check_batches, train_units
    from bench.studies.runner import check_run_folder, pending_units
    from bench.train import distributed

    with contextlib.ExitStack() as stack:  # rank 0's trained units, until they are measured
        with distributed.session(inputs[6]) as group:
            if group is None:  # torchrun with one process: a plain run
                console = Console(stderr=True)
                setup = _setup(*inputs)
                return _run(setup, check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans),
                            keep_artifacts, title, kind, console)
            console = Console(stderr=True, quiet=not group.is_main)  # rank 0 alone reports
            mine: list[_Setup] = []

            def decide():
                distributed.measure_threads()  # a bad value is refused now, not after the training
                setup = _setup(*inputs)
                note = check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans)
                pending = pending_units(setup.plans, setup.out_dir)
                check_batches(pending, setup.ctx, group.world_size)
                mine.append(setup)
                # The others get the run without rank 0's loaded data: each loads its own.
                return dataclasses.replace(setup, ctx=dataclasses.replace(setup.ctx, _bundles={})), note, pending

            shared, note, pending = distributed.decided_by_main(decide)
            setup = mine[0] if mine else shared
            if pending:
                console.print(f"training {len(pending)} unit(s) with {group.world_size} processes "
                              f"({group.backend}); then rank 0 measures them")

            def on_event(what: str, payload: dict) -> None:
                if what == "train-done":
                    console.print(f"  {payload['unit']}: trained in {payload['seconds']:.1f} s", soft_wrap=True)

            train_units(pending, setup.ctx, setup.out_dir, stack, on_event)
        if not group.is_main:
            return None  # rank 0 measures and writes the rest alone
        threads = distributed.measure_threads()
        if threads:  # the peers are gone: measure with the threads one process would have used
            import torch

            torch.set_num_threads(threads)
        return _run(setup, note, keep_artifacts, title, kind, console)


def _run(setup: _Setup, note: str | None, keep_artifacts: bool, title: str, kind: str, console) -> Path:
    """Measure every unit not yet measured (resuming), time the studies, write the outputs."""
    from bench.studies.runner import unique_units

    plans, ctx, out_dir, shard_spec = setup.plans, setup.ctx, setup.out_dir, setup.shard_spec
    if note:
        console.print(note)
    units = unique_units(plans)
    part = f" (shard {shard_spec} of {', '.join(setup.all_studies)})" if shard_spec else ""
    engine_names = ctx.engines
    console.print(f"[bold]rbench {kind}[/bold]: {', '.join(p.name for p in plans)}{part} at preset "
                  f"[bold]{ctx.preset.name}[/bold]; data: {setup.dataset_why}; engines: {', '.join(engine_names)} "
                  f"on {ctx.device}; {len(units)} units -> {out_dir}")
    start = time.perf_counter()
    unit_seconds: dict[str, float] = {}
    records = _run_with_progress(plans, ctx, out_dir, keep_artifacts, console, unit_seconds)
    elapsed = time.perf_counter() - start
    shard_info = ({"spec": str(shard_spec), "index": shard_spec.index, "count": shard_spec.count,
                   "studies": [p.name for p in plans], "all_studies": setup.all_studies} if shard_spec else None)
    _write_outputs(records, plans, out_dir, ctx, setup.dataset_why, title, elapsed, unit_seconds, shard_info)
    console.print(f"[green]done[/green] in {elapsed / 60:.1f} min: {out_dir / 'report.md'}")
    click.echo(str(out_dir / "report.md"))
    return out_dir


def _run_with_progress(plans, ctx, out_dir: Path, keep_artifacts: bool, console, unit_seconds: dict):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bench.studies.runner import run_plans, unique_units

    total = len(unique_units(plans))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("units", total=total)

        def on_event(kind: str, payload: dict) -> None:
            unit = payload.get("unit")
            if kind == "unit-skip":
                progress.advance(task)
                progress.console.print(f"  {unit}: already measured, skipped", soft_wrap=True)
            elif kind == "unit-redo":
                progress.console.print(f"  {unit}: {payload['reason']}; measuring it again", soft_wrap=True)
            elif kind == "unit-start":
                progress.update(task, description=f"{unit}: start")
            elif kind == "stage":
                progress.update(task, description=f"{unit or payload.get('study')}: {payload['stage']}")
            elif kind == "unit-done":
                unit_seconds[unit] = round(payload["seconds"], 1)
                progress.advance(task)
                progress.console.print(f"  {unit}: done in {payload['seconds']:.1f} s", soft_wrap=True)
            elif kind == "timing-skip":
                progress.console.print(f"  {payload['study']}: already timed, skipped")
            elif kind == "timing-redo":
                progress.console.print(f"  {payload['study']}: {payload['reason']}; timing it again")
            elif kind == "timing-start":
                progress.update(task, description=f"timing the {payload['study']} study ({payload['units']} nets together)")
            elif kind == "timing-done":
                unit_seconds[f"timing:{payload['study']}"] = round(payload["seconds"], 1)
                progress.console.print(f"  {payload['study']}: timed in {payload['seconds']:.1f} s")

        return run_plans(plans, ctx, out_dir, on_event=on_event, keep_artifacts=keep_artifacts)


def _write_outputs(records, plans, out_dir: Path, ctx, dataset_why: str, title: str, elapsed: float,
                   unit_seconds: dict, shard_info: dict | None = None) -> None:
    from dataclasses import asdict

    from bench.atomic import write_text
    from bench.records.io import describe_machine, to_json
    from bench.report import render as report
    from bench.studies.runner import TOOL, run_seconds

    write_text(out_dir / "records.jsonl", "".join(to_json(r) + "\n" for r in records))
    totals = run_seconds(plans, out_dir)  # from the records on disk: every invocation's work
    run = {
        "tool": TOOL, "title": title, "preset": ctx.preset.name, "dataset": ctx.dataset, "dataset_note": dataset_why,
        "engines": list(ctx.engines), "device": ctx.device,
        # Totals over every invocation that worked on this run folder (a resumed run included).
        "measured_seconds": round(sum(totals.values()), 1), "unit_seconds": totals,
        # This invocation alone: its wall time, and the units and timings it measured.
        "wall_seconds_this_invocation": round(elapsed, 1),
        "measured_seconds_this_invocation": round(sum(unit_seconds.values()), 1),
        "unit_seconds_this_invocation": unit_seconds,
        "command": ctx.command, "studies": [asdict(p) for p in plans], "preset_settings": asdict(ctx.preset),
        "machine": describe_machine(),
    }
    if shard_info:
        run["shard"] = shard_info
        run["title"] = f"{title} (shard {shard_info['spec']}: {', '.join(shard_info['studies'])})"
    write_text(out_dir / "run.json", json.dumps(run, indent=1, default=str) + "\n")
    markdown = report.render_report(records, run, out_dir)
    write_text(out_dir / "report.md", markdown)


def _common_options(fn):
    fn = click.option("--nproc", type=click.IntRange(min=1), default=None,
                      help="Train the units data-parallel in N processes on this host (torchrun, DDP), then measure "
                           "in one; the run folder is the one a single process writes. Under torchrun leave it out: "
                           "`torchrun --nproc-per-node N ... -m bench study|suite ...` (rank 0 measures with "
                           "$RBENCH_MEASURE_THREADS torch threads when set).")(fn)
    fn = click.option("--keep-artifacts", is_flag=True, help="Keep each unit's checkpoint and ONNX file in OUT/artifacts/.")(fn)
    fn = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="Where to train and measure (auto: cuda when torch sees a GPU).")(fn)
    fn = click.option("--resume/--no-resume", default=True, show_default=True,
                      help="Continue an interrupted run in OUT, skipping its finished units (a finished run is "
                           "measured again); --no-resume starts over, deleting only rbench's own files.")(fn)
    fn = click.option("--engines", default=None, metavar="LIST",
                      help="Comma-separated engines (torch,ort,trt); default: every engine that works here.")(fn)
    fn = click.option("--out", default=None, metavar="DIR",
                      help="Run folder (default results/<study|suite>-<preset>-<machine>/).")(fn)
    fn = click.option("--data-root", default=None, metavar="DIR", help="Where the data set's files are.")(fn)
    fn = click.option("--dataset", default="auto", show_default=True,
                      help="auto (Fashion-MNIST where installed, else digits), fashion-mnist, digits, cifar10, imagefolder:PATH.")(fn)
    fn = click.option("--preset", default="quick", show_default=True, metavar="|".join(PRESET_CHOICES),
                      help="How much data, training and timing to spend.")(fn)
    return fn


@click.command("study", epilog=STUDY_HELP)
@click.argument("name", metavar="NAME")
@_common_options
def study_command(name, preset, dataset, data_root, out, engines, resume, device, keep_artifacts, nproc):
    """Run one study end to end: NAME is depth, dynamic, activation, family, ladder, recipe or optimizer.

    \b
    depth       residual vs plain CIFAR ResNets at 20/56(/110) layers: the degradation problem
    dynamic     static vs dynamic convolution (VGG and ResNet form), channel subsets, K ablation
    activation  ReLU vs LeakyReLU vs SiLU on ResNet-20
    family      VGG vs ResNet vs the plain template CNN vs the 4-layer RRDB+attention net
    ladder      precision ladder of ResNet-20 and -56: every engine x precision, speed vs accuracy
    recipe      the 001 ladder on the Keras-style ResNet: augmentation, deeper + early stopping,
                plateau schedule, deeper + dropout, one rung at a time, over seeds
    optimizer   the 004 sweeps for a VGG-BN and a ResNet: lr, SGD/Adagrad/Adam, augmentation
                on/off, plus VGG without BN under Adam, over seeds
    """
    from bench.studies import STUDIES

    if name not in STUDIES:
        raise UsageProblem(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    run_studies([name], preset, dataset, data_root, out, engines, resume, device, keep_artifacts,
                title=f"rbench study {name}", kind=f"study-{name}", nproc=nproc)


@click.command("suite", epilog=STUDY_HELP + SHARD_HELP)
@_common_options
@click.option("--shard", default=None, metavar="I/N",
              help="Run only shard I of N (1-based): whole studies, balanced by estimated cost, the same split on "
                   "every host. Merge the shards' folders with `rbench report DIR...`.")
@click.option("--shard-costs", default=None, metavar="RUN.json", type=click.Path(dir_okay=False),
              help="Balance the shards by a finished run's measured unit seconds (its run.json) instead of "
                   "estimates; give every shard the same file.")
def suite_command(preset, dataset, data_root, out, engines, resume, device, keep_artifacts, shard, shard_costs,
                  nproc):
    """The main job: every study (depth, dynamic, activation, family, ladder, recipe, optimizer), one report.

    Interrupt it at any time: a rerun with the same --out resumes after the last finished unit.
    """
    from bench.studies import STUDIES

    run_studies(list(STUDIES), preset, dataset, data_root, out, engines, resume, device, keep_artifacts,
                title="rbench suite", kind="suite", shard=shard, shard_costs=shard_costs, nproc=nproc)



@click.command("report")
@click.argument("folders", nargs=-1, required=True, metavar="DIR...")
@click.option("--out", default=None, metavar="DIR",
              help="Where the merged records.jsonl, run.json, report.md and figures go (needed with several DIRs; "
                   "with one DIR, default: DIR itself, its report rendered again).")
@click.option("--partial", is_flag=True, help="Report what the folders hold even when studies are missing.")
def report_command(folders, out, partial):
    """Merge finished suite runs (the shards of `rbench suite --shard I/N`) into one report.

    Refuses folders whose preset, data, engines, device or seed differ, and names the studies and
    units no folder holds. Each study's latency comes from the one machine that timed it.
    """
    from bench.studies.shard import merge_runs

    merged = merge_runs(folders, allow_missing=partial)
    target = write_merged(merged, folders, out)
    if merged.missing_studies:
        click.echo(f"warning: missing studies {', '.join(merged.missing_studies)} "
                   f"(units {', '.join(merged.missing_units) or 'none'})", err=True)
    click.echo(str(target / "report.md"))


def write_merged(merged, folders: Sequence[str], out: str | None) -> Path:
    """Write a merged run's records.jsonl, run.json and report.md (atomically) into `out`; return it."""
    from bench.atomic import write_text
    from bench.records.io import to_json
    from bench.report import render as report
    from bench.studies.runner import RUN_JSON

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
    write_text(target / "report.md", report.render_report(merged.records, merged.run, target))
    return target
