"""Was the machine busy while we timed? Load, stolen CPU time, our CPU share and a calibration kernel.

A latency measured while other work competes for the cores can be uniformly slower (3.6x was
seen here with a CV of only 4.6%, so a spread check alone misses it). Around every timed phase
rbench reads:
- the CPU time other processes used: the machine's busy time (`/proc/stat`) less this process's and
  its reaped children's (the timing workers) over the phase's wall time;
- the 1-minute load average, recorded but not judged: it lags by up to a minute, and the worker
  processes a phase starts, or the phase before, count in it;
- the CPU time the hypervisor stole (`/proc/stat`, the `steal` column);
- this process's CPU share: CPU seconds over wall seconds, judged only for one-thread runs
  (a multi-threaded engine leaves threads idle on small ops even on a quiet machine);
- a fixed single-thread calibration kernel, timed before and after, and against the fastest
  time ever seen on this machine (cached), so a phase that was busy from start to end shows too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Above this the calibration kernel is "slower than this machine can do": contention. The kernel is
#: a weak signal on a VM whose clock wanders: on this 2-core machine its quiet time ranged from 2.9
#: to 5.0 ms (1.7x), while a core taken by other work doubles it; hence the wide margins.
CALIBRATION_SLOWDOWN = 2.0
#: Before vs after: a phase during which the machine got this much slower was disturbed.
CALIBRATION_DRIFT = 1.8
STEAL_FRACTION = 0.05
CPU_SHARE = 0.85
#: Other processes using more than this many cores on average, while we timed, competed with us.
OTHER_CORES = 0.25
#: How long `quiet_enough` watches an idle moment for other processes' CPU time.
QUIET_SAMPLE_S = 0.3


def _steal() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def _others_cpu_s() -> float | None:
    """CPU seconds every process but this one and its waited-for children (the timing workers) has run:
    all CPUs' busy time in /proc/stat (user, nice, system, irq, softirq) less our own, and less what our live
    zygotes and the workers they forked and reaped ran (`bench.measure.zygote.live_cpu_s`). None off Linux."""
    from bench.measure.zygote import live_cpu_s

    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    own = os.times()
    busy = (fields[0] + fields[1] + fields[2] + sum(fields[5:7])) / ticks
    return busy - (own.user + own.system + own.children_user + own.children_system) - live_cpu_s()


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def calibrate(repeats: int = 5) -> float:
    """Milliseconds of a fixed pure-Python kernel (one thread, no memory traffic): the fastest of `repeats`.

    A short busy spin first: an idle core here runs at a lower clock for a few tens of milliseconds,
    which made the kernel up to 1.5x slower on a quiet machine."""
    spin_until = time.perf_counter() + 0.03
    while time.perf_counter() < spin_until:
        pass
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        total = 0
        for i in range(60_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def _reference_path():
    from bench.cache import cache_root
    from bench.records.io import machine_slug

    return cache_root() / f"calibration-{machine_slug()}.json"


def calibration_reference(latest: float | None = None) -> float | None:
    """The fastest calibration time seen on this machine; `latest` updates it when faster."""
    path = _reference_path()
    try:
        best = float(json.loads(path.read_text())["calibration_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        best = None
    if latest is not None and (best is None or latest < best):
        try:
            from bench.atomic import write_text

            write_text(path, json.dumps({"calibration_ms": latest}) + "\n")
        except OSError:  # a read-only cache only costs the reference
            pass
        return best  # the reference this run is judged against is the one before it
    return best


@dataclass
class Snapshot:
    wall_s: float
    cpu_s: float
    load: float | None
    steal: tuple[int, int] | None
    calibration_ms: float
    #: CPU seconds other processes have run (`_others_cpu_s`).
    others_cpu_s: float | None = None


def snapshot() -> Snapshot:
    """What the machine looks like now (takes a few milliseconds: the calibration kernel)."""
    calibration = calibrate()
    times = os.times()
    return Snapshot(time.perf_counter(), times.user + times.system, _load(), _steal(), calibration, _others_cpu_s())


def other_cores(before: Snapshot, after: Snapshot) -> float | None:
    """Cores other processes kept busy on average between two snapshots (None where it cannot be read)."""
    wall = after.wall_s - before.wall_s
    if before.others_cpu_s is None or after.others_cpu_s is None or wall <= 0:
        return None
    return max(0.0, after.others_cpu_s - before.others_cpu_s) / wall


def reading() -> tuple[float, float | None]:
    """(wall clock, other processes' CPU seconds) now: a cheap reading around one stretch of a run (no kernel)."""
    return time.perf_counter(), _others_cpu_s()


def cores_between(before: tuple[float, float | None], after: tuple[float, float | None]) -> float | None:
    """Cores other processes kept busy on average between two `reading`s (None where it cannot be read)."""
    (start, before_s), (end, after_s) = before, after
    if before_s is None or after_s is None or end <= start:
        return None
    return max(0.0, after_s - before_s) / (end - start)


def stretch_reasons(per_stretch: Sequence[float | None], cores: int, what: str) -> list[str]:
    """Why a run was contended though its average was not: the busiest of its stretches (`what` names them,
    "worker generation") where other processes used more than OTHER_CORES; empty when none did."""
    busy = [(i, c) for i, c in enumerate(per_stretch, 1) if c is not None and c > OTHER_CORES]
    if not busy:
        return []
    index, worst = max(busy, key=lambda item: item[1])
    more = f" (and {len(busy) - 1} more of them)" if len(busy) > 1 else ""
    return [f"other processes used {worst:.1f} of {cores} usable cores during {what} {index} of {len(per_stretch)}"
            f"{more}"]


def quiet_enough(before: Snapshot, cores: int) -> list[str]:
    """Reasons the machine is busy right now (empty when it looks quiet), before any timing: other
    processes' CPU time while this one sleeps a moment, and the calibration kernel."""
    reasons = []
    start, began = _others_cpu_s(), time.perf_counter()
    if start is not None:
        time.sleep(QUIET_SAMPLE_S)
        busy = max(0.0, _others_cpu_s() - start) / (time.perf_counter() - began)
        if busy > OTHER_CORES:
            reasons.append(f"other processes are using {busy:.1f} of {cores} usable cores")
    reference = calibration_reference()
    if reference and before.calibration_ms > CALIBRATION_SLOWDOWN * reference:
        reasons.append(f"calibration kernel {before.calibration_ms / reference:.2f}x its quiet time on this machine")
    return reasons


def assess(before: Snapshot, after: Snapshot, cores: int, threads: int | None) -> dict[str, Any]:
    """The "contention" field of a record: the readings and whether other work competed, with why."""
    reasons = []
    others = other_cores(before, after)
    if others is not None and others > OTHER_CORES:
        reasons.append(f"other processes used {others:.1f} of {cores} usable cores on average")
    steal = None
    if before.steal and after.steal and after.steal[1] > before.steal[1]:
        steal = (after.steal[0] - before.steal[0]) / (after.steal[1] - before.steal[1])
        if steal > STEAL_FRACTION:
            reasons.append(f"{steal:.0%} of CPU time stolen by the hypervisor")
    wall = after.wall_s - before.wall_s
    share = (after.cpu_s - before.cpu_s) / wall if wall > 0 else None
    if threads == 1 and share is not None and wall > 0.2 and share < CPU_SHARE:
        reasons.append(f"this process got {share:.0%} of a core on a one-thread run")
    drift = after.calibration_ms / before.calibration_ms if before.calibration_ms > 0 else None
    if drift is not None and drift > CALIBRATION_DRIFT:
        reasons.append(f"calibration kernel {drift:.2f}x slower after the run than before it")
    reference = calibration_reference(min(before.calibration_ms, after.calibration_ms))
    worst = max(before.calibration_ms, after.calibration_ms)
    if reference and worst > CALIBRATION_SLOWDOWN * reference:
        reasons.append(f"calibration kernel {worst / reference:.2f}x its quiet time on this machine")
    return {"contended": bool(reasons), "reasons": reasons, "load_average": [before.load, after.load],
            "other_cores": None if others is None else round(others, 3),
            "steal_fraction": None if steal is None else round(steal, 4),
            "cpu_share": None if share is None else round(share, 3),
            "calibration_ms": [round(before.calibration_ms, 3), round(after.calibration_ms, 3)],
            "calibration_reference_ms": None if reference is None else round(reference, 3)}


def watched(run: Callable[[], T], require_quiet: bool, threads: int | None,
            more_reasons: Callable[[T, int], list[str]] | None = None) -> tuple[T, dict[str, Any]]:
    """`run()` between two readings of how busy the machine is: (its result, `assess`'s verdict). With
    `require_quiet`, a machine busy before is refused, and a timing other work competed with is not kept.
    `threads`: the timed work's own threads (None where the timing runs in other processes).
    `more_reasons(result, cores)`: reasons the result itself shows (a busy stretch inside the run that the
    run's average hides), judged with the others."""
    from bench.errors import EnvironmentProblem
    from bench.records.io import describe_machine

    cores = describe_machine()["cores_usable"] or 1
    before = snapshot()
    if require_quiet and (busy := quiet_enough(before, cores)):
        raise EnvironmentProblem(f"the machine is busy ({'; '.join(busy)}); measure when it is quiet, "
                                 "or drop --require-quiet")
    result = run()
    state = assess(before, snapshot(), cores, threads)
    if more_reasons is not None and (extra := more_reasons(result, cores)):
        state["reasons"] = [*state["reasons"], *extra]
        state["contended"] = True
    if require_quiet and state["contended"]:
        raise EnvironmentProblem(f"other work competed while timing ({'; '.join(state['reasons'])}); nothing was "
                                 "kept: measure again when the machine is quiet, or drop --require-quiet")
    return result, state
