"""Data-parallel training over several processes or hosts: torchrun's environment, the process group, each rank's
share of the data and DistributedDataParallel. Starting the processes (`--nproc N`) is `bench.train.distributed`'s.

The rule rbench follows (`LR_RULE`, recorded with every distributed run): `--batch-size` is the *global* batch,
split evenly over the processes, and the learning rate is unchanged. DDP averages the gradients of the
processes' equal shares, so one step of N processes at B/N each is the step one process takes at B (exactly so
for nets without BatchNorm, or with SyncBatchNorm); a distributed run is the same experiment as the
single-process one and its curves and checkpoints compare directly. Who raises the global batch raises the
learning rate too, by hand: linearly, with a warm-up (Goyal et al. 2017, "Accurate, Large Minibatch SGD").

Only rank 0 writes checkpoints, history, plots, records and progress. Every collective waits at most
`RBENCH_DIST_TIMEOUT` seconds (default 300), joining the group included, so a lost peer ends every rank
with one line instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from bench.data.batches import Batches, Loaders
from bench.errors import DataProblem, RbenchError, UsageProblem
from bench.train.checkpoint import load_training_checkpoint
from bench.train.evaluate import evaluate as evaluate_split

T = TypeVar("T")
TIMEOUT_ENV = "RBENCH_DIST_TIMEOUT"
#: Set by `launch` in the processes it starts: their errors are printed once, by the launcher.
LAUNCHED_ENV = "RBENCH_LAUNCHED"
#: Set by `launch`: the torch threads a single process would use here; rank 0 measures with them once the others
#: have left (the studies' timing phase).
MEASURE_THREADS_ENV = "RBENCH_MEASURE_THREADS"
DEFAULT_TIMEOUT_S = 300.0
LR_RULE = "global batch = --batch-size, split evenly over the processes; lr unchanged"

_ACTIVE: DistContext | None = None


class DistributedFailure(RbenchError):
    """The process group could not be joined, or broke during the run (a peer failed, was killed, timed out)."""

    exit_code = 1
    rank_specific = True  # each rank's own view of the failure: every rank that has one says it


def _this_rank(exc: BaseException) -> BaseException:
    """Mark `exc` as this rank's own (its GPU, its environment): printed by whichever rank raises it."""
    exc.rank_specific = True  # type: ignore[attr-defined]
    return exc


def _every_rank(exc: BaseException) -> BaseException:
    """Mark `exc` as one every rank raises alike: rank 0 alone prints it (`bench.cli`)."""
    exc.every_rank = True  # type: ignore[attr-defined]
    return exc


def prints_error(exc: BaseException, exit_code: int) -> bool:
    """Whether this process prints `exc`'s one line. In a run of several processes an error every rank hits alike
    (a usage error: every rank was given the same command line; or a decision rank 0 made for all) is printed by
    rank 0 alone, and under `launch` by the launcher alone; a rank's own failure by the rank that has it."""
    if os.environ.get(LAUNCHED_ENV):
        return False  # `launch` prints the failing rank's line, read from its error file
    if not launched_by_torchrun() or os.environ.get("RANK") == "0":
        return True
    if getattr(exc, "every_rank", False):
        return False
    return getattr(exc, "rank_specific", False) or exit_code != 2


def write_error_file(line: str, exit_code: int, kind: str = "") -> None:
    """Leave this rank's one-line error where torchrun's agent reads a worker's failure ($TORCHELASTIC_ERROR_FILE,
    in torch's format): torchrun's summary then names the cause, and `launch` prints it."""
    import json
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not launched_by_torchrun():
        return
    data = {"message": {"message": line, "extraInfo": {"timestamp": str(int(time.time())), "rbench_exit_code": exit_code,
                                                       "rbench_error": kind}}}
    with contextlib.suppress(OSError):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str           # gloo (CPU) | nccl (CUDA)
    device: torch.device   # cpu, or cuda:LOCAL_RANK

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


# --------------------------------------------------------------------------- environment and process group


def launched_by_torchrun() -> bool:
    """True in a process torchrun (or a scheduler speaking its protocol) started: RANK and WORLD_SIZE are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def timeout_seconds() -> float:
    """The collective (and joining) timeout in seconds: $RBENCH_DIST_TIMEOUT, else 300."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageProblem(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def measure_threads() -> int | None:
    """$RBENCH_MEASURE_THREADS: the torch threads rank 0 measures with once the other processes have left."""
    text = os.environ.get(MEASURE_THREADS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageProblem(f"{MEASURE_THREADS_ENV}={text!r} must be a positive whole number of threads")
    return int(text)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def process_device(device: str, local_rank: int) -> torch.device:
    """The device of the process with `local_rank` on its host: the CPU, or the GPU of that index."""
    if not str(device).startswith("cuda"):
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local_rank >= count:
        raise _this_rank(UsageProblem(f"local rank {local_rank} needs GPU {local_rank}, but torch sees {count} GPU(s) "
                                      f"on this host; start at most {count} processes per host"))
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(str(text))
    except ValueError:
        raise _this_rank(UsageProblem(f"environment variable {name}={text!r} is not an integer (set by torchrun)")) \
            from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def init(device: str) -> DistContext:
    """Join the process group torchrun's environment describes; gloo on the CPU, nccl on GPUs."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise _this_rank(UsageProblem(f"RANK={rank} is outside WORLD_SIZE={world}"))
    dev = process_device(device, local_rank)
    backend = backend_for(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    seconds = timeout_seconds()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=seconds))
    except (dist.DistError, RuntimeError, ValueError) as exc:
        raise DistributedFailure(f"rank {rank} of {world}: could not join the process group at {where} within "
                                 f"{seconds:g} s ({_first_line(exc)}); check the master address and port and "
                                 f"that every host can reach it") from None
    return DistContext(rank, world, local_rank, backend, dev)


def active() -> DistContext | None:
    """The context of the distributed run this process is part of (inside `session`), else None."""
    return _ACTIVE


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return type(exc) is RuntimeError and any(k in text for k in ("gloo", "Gloo", "NCCL", "Connection", "timed out",
                                                                   "Timed out", "connection"))


@contextlib.contextmanager
def session(device: str) -> Iterator[DistContext | None]:
    """Under torchrun with more than one process: join the group, yield this rank's context, leave the group.
    In one process: yield None and change nothing. A broken collective becomes one DistributedFailure line."""
    global _ACTIVE
    if not launched_by_torchrun() or _env_int("WORLD_SIZE") <= 1:
        yield None
        return
    ctx = init(device)
    _ACTIVE = ctx
    if os.environ.get("RBENCH_COMMAND"):  # `rbench train --nproc N ...` as the user typed it, for the record
        import bench.records.io

        bench.records.io.COMMAND_OVERRIDE = os.environ["RBENCH_COMMAND"]
    try:
        yield ctx
        # Leave together: rank 0 still writes the record while the others would already tear gloo down, and a
        # teardown racing a peer's open connection can abort the process ("terminate called ...", SIGABRT).
        dist.barrier()
    except Exception as exc:
        if _is_collective_failure(exc):
            raise DistributedFailure(f"{ctx.tag}: lost the other processes ({_first_line(exc)}); another rank "
                                     f"failed, was killed or timed out after {timeout_seconds():g} s") from None
        raise
    finally:
        _ACTIVE = None
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _outcome(call: Callable[[], Any]) -> tuple[str, Any, BaseException | None]:
    """('ok', result, None) or ('error', (class, message, exit code), the exception) of `call()`: an rbench error
    becomes data every rank can raise again, anything else a DistributedFailure naming it."""
    try:
        return "ok", call(), None
    except RbenchError as exc:  # the zoo's and export's errors too
        return "error", (type(exc), str(exc), getattr(exc, "exit_code", 2)), exc
    except Exception as exc:
        return "error", (DistributedFailure, f"rank {_ACTIVE.rank if _ACTIVE else 0} failed: "
                                             f"{type(exc).__name__}: {_first_line(exc)}", 1), exc


def _raise(error: tuple[type, str, int]) -> BaseException:
    kind, message, code = error
    try:
        exc = kind(message)
    except TypeError:  # an error class built from other arguments: the line is what counts
        exc = RbenchError(message)
    exc.exit_code = code
    return exc


def decided_by_main(decide: Callable[[], T]) -> T:
    """Inside `session`: rank 0 calls `decide` (it alone reads and writes the run folder) and every rank gets its
    result, or raises its error: the same one line on every rank, printed by rank 0 alone. Outside: `decide()`."""
    ctx = active()
    if ctx is None:
        return decide()
    status, value, exc = _outcome(decide) if ctx.is_main else (None, None, None)
    box: list[Any] = [(status, value)]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        if exc is not None:
            raise exc  # rank 0: its own error, traceback and all
        raise _every_rank(_raise(value))
    return value


def together(call: Callable[[], T]) -> T:
    """Inside `session`: every rank calls `call` (each loads its own data, say) and they agree on how it went: when
    any rank failed, every rank raises the first failing rank's error ('rank R of N: ...' when R is not 0), which
    rank 0 alone prints. Outside: `call()`."""
    ctx = active()
    if ctx is None:
        return call()
    status, value, own = _outcome(call)
    outcomes: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(outcomes, (status, None if status == "ok" else value))
    failed = [(rank, error) for rank, (state, error) in enumerate(outcomes) if state == "error"]
    if not failed:
        return value
    rank, (kind, message, code) = failed[0]
    if rank == 0 and ctx.is_main and own is not None:
        raise own  # rank 0's own error, traceback and all
    if rank:
        message = f"rank {rank} of {ctx.world_size}: {message}"
    exc = _raise((kind, message, code))
    raise _every_rank(exc) if not ctx.is_main else exc


def all_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on this rank and, inside `session`, on every rank (all stop together)."""
    finite = bool(torch.isfinite(value).all())
    ctx = active()
    if ctx is None:
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# --------------------------------------------------------------------------- each rank's share of the data


def shard_indices(order: torch.Tensor, rank: int, world_size: int, pad: bool) -> torch.Tensor:
    """Rank `rank`'s share of `order`, as torch's DistributedSampler takes it: every `world_size`-th index.

    With `pad`, `order` is first extended by its own start to a multiple of `world_size`, so every rank gets
    the same number of items (DDP needs the same number of steps on every rank); without, the shares partition
    `order` exactly (evaluation: nothing counted twice). With the shared order, the first B items of the
    epoch are the first B/N of every rank's share: the global batch one process at B would see."""
    n = len(order)
    if pad and n % world_size:
        extra = world_size - n % world_size
        order = torch.cat([order, order.repeat(math.ceil(extra / max(n, 1)))[:extra]])
    return order[rank::world_size]


class ShardedBatches(Batches):
    """One rank's share of a `Batches`: the epoch's permutation (seeded by seed and epoch) is the same on every
    rank, each takes its `shard_indices`; augmentation then draws from a stream of the rank's own."""

    rank: int
    world_size: int
    pad: bool

    @classmethod
    def of(cls, batches: Batches, rank: int, world_size: int, batch_size: int, pad: bool) -> ShardedBatches:
        """A copy of `batches` (every setting make_loaders gave it) that yields only this rank's share."""
        sharded = cls.__new__(cls)
        vars(sharded).update(vars(batches))
        sharded.batch_size, sharded.rank, sharded.world_size, sharded.pad = batch_size, rank, world_size, pad
        return sharded

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        order = shard_indices(super().epoch_order(generator), self.rank, self.world_size, self.pad)
        generator.manual_seed((self.seed * 100003 + self.epoch) * 1009 + self.rank + 1)  # the rank's own crops/flips
        return order

    def share(self) -> int:
        """How many items this rank sees per epoch."""
        n = len(self.dataset)
        return -(-n // self.world_size) if self.pad else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self.share()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


# --------------------------------------------------------------------------- the training run's distributed part


@dataclass
class DataParallel:
    """What `bench.train.loop.train_model` does differently on one rank of a distributed run."""

    ctx: DistContext
    batch_size: int          # the global batch
    sync_bn: bool = False
    rank_img_s: list[list[float]] = field(default_factory=list)  # per epoch, per rank

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def batch_per_process(self) -> int:
        return self.batch_size // self.ctx.world_size

    def shard(self, loaders: Loaders) -> Loaders:
        """Train: equal padded shares at batch_size / world_size; val: an exact partition."""
        w, r = self.ctx.world_size, self.ctx.rank
        return Loaders(ShardedBatches.of(loaders.train, r, w, self.batch_per_process, pad=True),
                       ShardedBatches.of(loaders.val, r, w, loaders.val.batch_size, pad=False), loaders.test)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around `model` (SyncBatchNorm first with `sync_bn`); `model` itself stays the one to save."""
        from torch.nn.parallel import DistributedDataParallel

        if self.sync_bn:
            _to_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (BatchNorm running statistics) are averaged before each validation instead of broadcast from
        # rank 0 at every forward: one collective per epoch, and statistics of all the data.
        import inspect

        quiet = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                 else "broadcast_buffers")  # torch 2.14's name for it, else the older one
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, **{quiet: False})

    def unwrap(self, model: nn.Module) -> None:
        """SyncBatchNorm back to BatchNorm2d, so the trained model exports and runs in one process."""
        if self.sync_bn:
            _to_batchnorm(model)

    def read_checkpoint(self, path) -> dict[str, Any]:
        """Rank 0 reads `path` (it wrote it) and hands it to every rank; a missing or foreign file is the same
        one-line error on every rank."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                if not path.is_file():
                    raise UsageProblem(f"nothing to resume: {path} does not exist")
                box[0] = load_training_checkpoint(path)
            except (UsageProblem, DataProblem) as exc:
                box[0] = (type(exc).__name__, str(exc))
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], tuple):
            kind, message = box[0]
            raise (UsageProblem if kind == "UsageProblem" else DataProblem)(message)
        return box[0]

    def _gather(self, values: Sequence[float]) -> torch.Tensor:
        """(world_size, len(values)): every rank's values, on every rank."""
        mine = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        parts = [torch.zeros_like(mine) for _ in range(self.ctx.world_size)]
        dist.all_gather(parts, mine)
        return torch.stack(parts).cpu()

    def epoch_totals(self, loss: float, acc: float, seen: int, seconds: float) -> tuple[float, float, int, float]:
        """Every rank's (mean loss, accuracy, images, seconds) of an epoch -> the run's; per-rank img/s kept."""
        table = self._gather([loss * seen, acc * seen, seen, seconds])
        self.rank_img_s.append([round(float(s / t), 1) if t > 0 else 0.0 for _, _, s, t in table.tolist()])
        total = float(table[:, 2].sum())
        return (float(table[:, 0].sum()) / total, float(table[:, 1].sum()) / total, int(total),
                float(table[:, 3].max()))

    def average_buffers(self, model: nn.Module) -> None:
        """Average the floating buffers (BatchNorm running statistics) over the ranks."""
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.ctx.world_size)

    def evaluate(self, model: nn.Module, batches: ShardedBatches, amp: bool) -> tuple[float, float]:
        """(mean loss, accuracy) over the whole split: each rank scores its share, the sums are combined."""
        self.average_buffers(model)
        seen = batches.share()
        loss, acc = evaluate_split(model, batches, self.device, amp) if seen else (0.0, 0.0)
        table = self._gather([loss * seen, acc * seen, seen])
        total = float(table[:, 2].sum())
        if not total:
            return float("nan"), float("nan")
        return float(table[:, 0].sum()) / total, round(float(table[:, 1].sum())) / total

    def describe(self) -> dict[str, Any]:
        """The record's distributed fields."""
        epochs = self.rank_img_s
        per_rank = [round(sum(e[r] for e in epochs) / len(epochs), 1) for r in range(self.ctx.world_size)] \
            if epochs else None
        return {"world_size": self.ctx.world_size, "backend": self.ctx.backend,
                "batch_per_process": self.batch_per_process, "rank_train_img_s": per_rank, "lr_rule": LR_RULE,
                "sync_bn": self.sync_bn}


def data_parallel(batch_size: int, sync_bn: bool = False) -> DataParallel | None:
    """The distributed part of a training run inside `session`, else None (and the run is a plain one)."""
    ctx = active()
    if ctx is None:
        if sync_bn:
            raise UsageProblem("--sync-bn synchronizes BatchNorm across processes; it needs --nproc 2 or more, "
                               "or torchrun with several processes")
        return None
    if batch_size % ctx.world_size:
        raise UsageProblem(f"--batch-size {batch_size} is the global batch and must split evenly over "
                           f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    if sync_bn and ctx.device.type != "cuda":
        raise UsageProblem("--sync-bn needs CUDA GPUs: torch's SyncBatchNorm trains only on GPUs; on the CPU each "
                           "process normalizes its own share of the batch")
    return DataParallel(ctx, batch_size, sync_bn)


def _to_sync_batchnorm(model: nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            _to_sync_batchnorm(child)


def _to_batchnorm(model: nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats).to(next(child.buffers()).device)
            plain.load_state_dict(child.state_dict())
            setattr(model, name, plain)
        else:
            _to_batchnorm(child)
