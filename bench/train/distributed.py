"""Data-parallel training, the public face: `rbench train/study/suite --nproc N` starts torchrun on this host
(`launch`), and every name of the processes' side (`bench.train.parallel`: the process group, each rank's share
of the data, DDP) reads from here too.

`launch` runs torchrun in-process with one worker per `--nproc`, each given `OMP_NUM_THREADS` (its share of the
cores) and the command line the user typed less `--nproc` (`command_argv`). A worker's failure ends the run with
that worker's own one-line error, read from the error file torchrun's agent keeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from bench.errors import UsageProblem
from bench.train.parallel import (  # noqa: F401  (the processes' side, public here as before the split)
    DEFAULT_TIMEOUT_S,
    LAUNCHED_ENV,
    LR_RULE,
    MEASURE_THREADS_ENV,
    TIMEOUT_ENV,
    DataParallel,
    DistContext,
    DistributedFailure,
    ShardedBatches,
    _every_rank,
    _this_rank,
    active,
    all_finite,
    backend_for,
    data_parallel,
    decided_by_main,
    init,
    launched_by_torchrun,
    measure_threads,
    prints_error,
    process_device,
    session,
    shard_indices,
    timeout_seconds,
    together,
    write_error_file,
)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_nproc(nproc: int, device: str) -> None:
    """One line for a process count this host cannot give each process a core (CPU) or a GPU (CUDA) for."""
    if nproc < 1:
        raise UsageProblem(f"--nproc must be at least 1, got {nproc}")
    if str(device).startswith("cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > gpus:
            raise UsageProblem(f"--nproc {nproc} with --device cuda needs {nproc} GPUs; torch sees {gpus} here")
        return
    cores = available_cores()
    if nproc > cores:
        raise UsageProblem(f"--nproc {nproc} is more than the {cores} CPU core(s) this process may use; use at "
                           f"most --nproc {cores}")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(nproc: int, argv: Sequence[str], threads: int, command: str | None = None) -> None:
    """Run `python -m bench ARGV...` in `nproc` processes on this host through torchrun (standalone rendezvous on
    a free port, no restarts), `threads` torch threads each; a failed rank stops them all: DistributedFailure."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                         "--module", "bench", *argv])
    env = {"OMP_NUM_THREADS": str(threads), "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "FATAL"),
           LAUNCHED_ENV: "1", MEASURE_THREADS_ENV: str(torch.get_num_threads())}
    if command:
        env["RBENCH_COMMAND"] = command
    import logging

    # torchrun's agent logs each stop and failure with tracebacks; rbench says what happened in one line.
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)
    try:
        with _environment(**env):
            run(args)
    except ChildFailedError as exc:
        # The cause, not the ranks the agent then stopped with SIGTERM.
        rank, failure = min(exc.failures.items(), key=lambda kv: (kv[1].exitcode == -signal.SIGTERM,
                                                                  _lost_the_others(kv[1]), kv[1].timestamp))
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        line = _rank_line(failure)  # the rank's own one-line error, when it could say one
        error = DistributedFailure(line or f"rank {rank} of {nproc} (pid {failure.pid}) {how}; every rank was stopped")
        error.exit_code = failure.exitcode if failure.exitcode > 0 else 1
        raise error from None
    finally:
        agent_log.setLevel(level)


def _lost_the_others(failure) -> bool:
    """Whether a rank failed only because another did (its collective broke): a consequence, not the cause."""
    message = getattr(failure, "error_file_data", {}).get("message")
    info = message.get("extraInfo", {}) if isinstance(message, dict) else {}
    return info.get("rbench_error") == DistributedFailure.__name__ and "lost the other processes" in message["message"]


def _rank_line(failure) -> str | None:
    """The one-line error a failed rank left in its error file (`write_error_file`), without 'rbench: error: '."""
    message = getattr(failure, "error_file_data", {}).get("message")
    if not isinstance(message, dict) or "rbench_exit_code" not in message.get("extraInfo", {}):
        return None
    return str(message.get("message", "")).removeprefix("rbench: error: ") or None


def check_launch(nproc: int, batch_size: int, device: str, sync_bn: bool) -> None:
    """Before `launch`: the one-line errors every rank would otherwise print once each."""
    if launched_by_torchrun():
        raise UsageProblem("--nproc starts torchrun itself; under torchrun leave it out (torchrun's --nproc-per-node "
                           "says how many processes)")
    check_nproc(nproc, device)
    if batch_size % nproc:
        raise UsageProblem(f"--batch-size {batch_size} is the global batch and must split evenly over {nproc} "
                           f"processes; use a multiple of {nproc}")
    if sync_bn and not str(device).startswith("cuda"):
        raise UsageProblem("--sync-bn needs CUDA GPUs: torch's SyncBatchNorm trains only on GPUs; on the CPU each "
                           "process normalizes its own share of the batch")


def command_argv(command, params: dict[str, Any], drop: Sequence[str] = (), **override: Any) -> list[str]:
    """The command line that calls click `command` with `params` again (options left at their default left out),
    less the options in `drop` and with `override`'s values: what each process torchrun starts runs."""
    import click

    values = {**params, **override}
    argv = [command.name]
    context = click.Context(command)
    for param in command.params:
        name = param.name
        if name in drop or name not in values:
            continue
        value = values[name]
        if isinstance(param, click.Argument):
            argv.append(str(value))
        elif isinstance(param, click.Option) and value is not None and value != _option_default(param, context):
            if param.is_flag:
                argv.append(param.opts[0] if value else param.secondary_opts[0])
            else:
                argv += [param.opts[0], str(value)]
    return argv


def _option_default(option, context) -> Any:
    """The value `option` takes when left out. `option.default` is not it: click 8.2+ keeps an option declared
    without a default as its UNSET sentinel, and a flag's value (False) never equals that; `get_default` resolves
    the sentinel to what the command receives (False for a flag; for a valued option it may stay a sentinel,
    which no given value equals, and an option not given is None, already left out)."""
    return option.get_default(context, call=True)
