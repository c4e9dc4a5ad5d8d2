"""`rbench study NAME` and `rbench suite`: studies end to end, resumable, one Markdown report.

Each unit of work (one model trained, profiled, exported, measured on every engine) writes its
records in one atomic step to `OUT/units/`; a rerun skips finished units (and measures again one
whose file is unsound). OUT must be new, empty or an rbench run folder holding only rbench's
files: rbench never deletes what it did not write. When every unit is
done, `OUT/records.jsonl` (every record, tagged with its study) and `OUT/report.md` (tables and
PNG plots, each study's section from its module) are written, again atomically. The run itself is the
library's (`bench.studies.run`); this module parses options, shows progress and launches processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
and optimizer studies left out), standard (recipe + optimizer in about 45 minutes on a
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


def run_studies(studies: Sequence[str], preset_name: str, dataset: str, data_root: str | None, out: str | None,
                engines: str | None, resume: bool, device: str, keep_artifacts: bool, title: str,
                kind: str, shard: str | None = None, shard_costs: str | None = None,
                nproc: int | None = None) -> Path | None:
    """`rbench study|suite`: the library's run (`bench.studies.run`) with a progress display.

    With `shard` ('I/N'), only the studies of that shard (`bench.studies.shard.shard_plans`) run;
    `rbench report` merges the shards' folders into one report. Under torchrun with several processes, every
    process trains the units together and rank 0 alone does the rest (`bench.studies.data_parallel`); ranks other
    than 0 return None. `nproc` > 1 starts that on this host (torchrun) and waits for it.
    """
    from rich.console import Console

    from bench.studies.run import resolve_device, setup_run
    from bench.studies.runner import check_run_folder
    from bench.train import distributed

    device = resolve_device(device)
    inputs = (studies, preset_name, dataset, data_root, out, engines, device, kind, shard, shard_costs)
    if nproc is not None and nproc > 1:
        return _launch(nproc, inputs)
    if distributed.launched_by_torchrun() and distributed.active() is None:
        return _run_distributed(inputs, resume, keep_artifacts, title, kind)
    console = Console(stderr=True)
    setup = setup_run(*inputs)
    note = check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans)
    return _run(setup, note, keep_artifacts, title, kind, console)


def _launch(nproc: int, inputs: tuple) -> Path:
    """`--nproc N`: check what every rank would refuse, then run this command in N processes (torchrun)."""
    from bench.records.io import current_command
    from bench.studies.data_parallel import check_batches
    from bench.studies.run import setup_run
    from bench.studies.runner import unique_units
    from bench.train import distributed

    if distributed.launched_by_torchrun():
        raise UsageProblem("--nproc starts torchrun itself; under torchrun leave it out (torchrun's --nproc-per-node "
                           "says how many processes)")
    device = inputs[6]
    distributed.check_nproc(nproc, device)
    setup = setup_run(*inputs)
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
    from bench.studies.run import RunSetup, setup_run
    from bench.studies.runner import check_run_folder, pending_units
    from bench.train import distributed

    with contextlib.ExitStack() as stack:  # rank 0's trained units, until they are measured
        with distributed.session(inputs[6]) as group:
            if group is None:  # torchrun with one process: a plain run
                console = Console(stderr=True)
                setup = setup_run(*inputs)
                return _run(setup, check_run_folder(setup.out_dir, setup.ctx, resume, setup.plans),
                            keep_artifacts, title, kind, console)
            console = Console(stderr=True, quiet=not group.is_main)  # rank 0 alone reports
            mine: list[RunSetup] = []

            def decide():
                distributed.measure_threads()  # a bad value is refused now, not after the training
                setup = setup_run(*inputs)
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


def _run(setup, note: str | None, keep_artifacts: bool, title: str, kind: str, console) -> Path:
    """Run a checked setup (`bench.studies.run.run_setup`) with a progress bar; print where the report is."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bench.studies.run import run_setup
    from bench.studies.runner import unique_units

    plans, ctx, out_dir, shard_spec = setup.plans, setup.ctx, setup.out_dir, setup.shard_spec
    if note:
        console.print(note)
    units = unique_units(plans)
    part = f" (shard {shard_spec} of {', '.join(setup.all_studies)})" if shard_spec else ""
    console.print(f"[bold]rbench {kind}[/bold]: {', '.join(p.name for p in plans)}{part} at preset "
                  f"[bold]{ctx.preset.name}[/bold]; data: {setup.dataset_why}; engines: {', '.join(ctx.engines)} "
                  f"on {ctx.device}; {len(units)} units -> {out_dir}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("units", total=len(units))

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
                progress.advance(task)
                progress.console.print(f"  {unit}: done in {payload['seconds']:.1f} s", soft_wrap=True)
            elif kind == "timing-skip":
                progress.console.print(f"  {payload['study']}: already timed, skipped")
            elif kind == "timing-redo":
                progress.console.print(f"  {payload['study']}: {payload['reason']}; timing it again")
            elif kind == "timing-start":
                progress.update(task, description=f"timing the {payload['study']} study ({payload['units']} nets together)")
            elif kind == "timing-done":
                progress.console.print(f"  {payload['study']}: timed in {payload['seconds']:.1f} s")

        result = run_setup(setup, title=title, keep_artifacts=keep_artifacts, on_event=on_event)
    console.print(f"[green]done[/green] in {result.elapsed / 60:.1f} min: {result.report}")
    click.echo(str(result.report))
    return out_dir


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
    """Run one study end to end: NAME is depth, dynamic, activation, family, ladder, recipe, optimizer or serve.

    \b
    depth       residual vs plain CIFAR ResNets at 20/56(/110) layers: the degradation problem
    dynamic     static vs dynamic convolution (VGG and ResNet form), channel subsets, K ablation
    activation  ReLU vs LeakyReLU vs SiLU on ResNet-20 (ResNet-50, the seed report's net, at standard
                and full)
    family      VGG vs ResNet vs the plain template CNN vs the 4-layer RRDB+attention net
    ladder      precision ladder of ResNet-20 and -56: every engine x precision, speed vs accuracy
    recipe      the recipe ladder on the Keras-style ResNet: augmentation, deeper + early stopping,
                plateau schedule, deeper + dropout, one rung at a time, over seeds
    optimizer   the optimizer sweeps for a VGG-BN and a ResNet: lr, SGD/Adagrad/Adam, augmentation
                on/off, plus VGG without BN under Adam, over seeds
    serve       the queries per second ResNet-20 holds under MLPerf LoadGen's Server scenario (peak search)
    """
    from bench.studies import study_names

    if name not in study_names():
        raise UsageProblem(f"unknown study {name!r}; choose one of {', '.join(study_names())}")
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
    from bench.studies import study_names
    from bench.studies.presets import suite_studies

    run_studies(suite_studies(preset, study_names()), preset, dataset, data_root, out, engines, resume, device, keep_artifacts,
                title="rbench suite", kind="suite", shard=shard, shard_costs=shard_costs, nproc=nproc)



@click.command("report")
@click.argument("folders", nargs=-1, required=True, metavar="DIR...")
@click.option("--out", default=None, metavar="DIR",
              help="Where the merged records.jsonl, run.json, report.md and figures go (needed with several DIRs; "
                   "with one DIR, default: DIR itself, its report rendered again).")
@click.option("--partial", is_flag=True, help="Report what the folders hold even when studies are missing.")
@click.option("--summary", is_flag=True,
              help="Print the summary table of one run folder, from its records, as a Markdown snippet for another "
                   "page to quote (README); writes nothing.")
def report_command(folders, out, partial, summary):
    """Merge finished suite runs (the shards of `rbench suite --shard I/N`) into one report.

    Refuses folders whose preset, data, engines, device or seed differ, and names the studies and
    units no folder holds. Each study's latency comes from the one machine that timed it.
    """
    if summary:
        from bench.errors import UsageProblem
        from bench.studies.reporting import summary_snippet

        if len(folders) != 1 or out:
            raise UsageProblem("--summary quotes one run folder: give one DIR and no --out")
        click.echo(summary_snippet(folders[0]), nl=False)
        return
    from bench.studies.run import write_merged
    from bench.studies.shard import merge_runs

    merged = merge_runs(folders, allow_missing=partial)
    target = write_merged(merged, folders, out)
    if merged.missing_studies:
        click.echo(f"warning: missing studies {', '.join(merged.missing_studies)} "
                   f"(units {', '.join(merged.missing_units) or 'none'})", err=True)
    click.echo(str(target / "report.md"))
