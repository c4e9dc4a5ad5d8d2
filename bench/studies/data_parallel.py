"""The studies under torchrun: every process trains the units that need training together (DDP), then rank 0 alone
counts, exports, evaluates, times and reports, as one process does.

Training is the only part of a study that several processes speed up; the rest (export, parity, evaluation through
every engine, the interleaved timing) is one process's work, and timing must not share the machine with idle
peers. So a distributed study run goes in two phases:

1. In the process group: rank 0 checks the inputs and the run folder and decides which units need preparing
   (`bench.train.distributed.decided_by_main`: the same answer, or the same one-line error, on every rank). Every rank
   then trains those units in the same order with DistributedDataParallel (`bench.train.loop.train_model` does so
   inside `bench.train.distributed.session`); rank 0 keeps each unit's training files in a locked work folder.
2. The group is left, so no rank waits on a collective through rank 0's long export and timing phases (the
   process-group timeout would fire). Ranks other than 0 are done; rank 0 runs `run_plans`, which finds each
   unit trained (`RunContext.trained`) and measures it, writing the run folder exactly as a one-process run does.

Rank 0 measures with the torch threads one process would use here when `rbench ... --nproc N` started the run
($RBENCH_MEASURE_THREADS, set by the launcher; set it by hand under torchrun, which starts every process with
OMP_NUM_THREADS=1 unless told otherwise). The records say the threads each engine ran with.

A resumed run skips the units already measured on every rank alike (rank 0 decided). A unit trained but not yet
measured when the run was interrupted is trained again, as in one process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.studies.plans import UnitSpec
from bench.studies.runner import RunContext


@dataclass
class Trained:
    """One unit's training by every process: rank 0's files, its model as `train_model` left it, how long it took;
    or the TrainingDiverged it ended with (an accuracy-only unit records that as its result)."""

    folder: Path
    model: Any = None
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


def check_batches(specs: Sequence[UnitSpec], ctx: RunContext, world_size: int) -> None:
    """Refuse a process count that some unit's (global) training batch does not split evenly over."""
    from bench.studies.runner import unit_train_config

    for spec in specs:
        batch = unit_train_config(spec, ctx).batch_size
        if batch % world_size:
            raise UsageProblem(f"unit {spec.unit_id} trains at batch {batch} (the {ctx.preset.name} preset's), which "
                               f"does not split evenly over {world_size} processes; use a process count that "
                               f"divides {batch}")


def train_units(specs: Sequence[UnitSpec], ctx: RunContext, out_dir: Path, stack: contextlib.ExitStack,
                on_event: Callable[[str, dict[str, Any]], None] = lambda kind, payload: None) -> None:
    """Inside `bench.train.distributed.session`, on every rank: train `specs` in order, each with every process (DDP).

    On rank 0 each unit's training files stay in a locked work folder under `out_dir/units/` that `stack` holds
    (closing it removes them) and `ctx.trained` says where; `run_plans` then measures them without training again.
    Every rank builds each unit's net and data exactly as `runner.measure_unit` does.
    """
    import torch

    from bench.atomic import work_dir
    from bench.studies.runner import build_unit_model, unit_seed, unit_train_config
    from bench.train import distributed
    from bench.train.loop import TrainingDiverged, train_model

    main = distributed.active() is None or distributed.active().is_main
    for index, spec in enumerate(specs):
        payload = {"unit": spec.unit_id, "index": index, "total": len(specs)}
        on_event("train-start", payload)
        start = time.perf_counter()
        # The data and net as measure_unit makes them; a data set that fails to load fails alike everywhere.
        bundle = distributed.together(lambda s=spec: ctx.bundle(channels=s.channels or ("RGB" if s.rgb else None)))
        torch.manual_seed(unit_seed(spec, ctx))
        model = build_unit_model(spec, bundle)
        folder = stack.enter_context(work_dir(out_dir / "units", f"{spec.unit_id}.train")) if main else \
            out_dir / "units" / f".{spec.unit_id}.train"  # ranks other than 0 write nothing
        done = Trained(folder / "train")
        try:
            done.result = train_model(model, bundle, unit_train_config(spec, ctx), done.folder, progress=False)
            done.model = model
        except TrainingDiverged as exc:
            if not spec.accuracy_only:
                raise
            done.error = exc  # every rank stopped at the same batch (bench.train.distributed.all_finite)
        done.seconds = time.perf_counter() - start
        if main:
            ctx.trained[spec.unit_id] = done
        on_event("train-done", {**payload, "seconds": done.seconds})
