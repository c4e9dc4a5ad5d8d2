"""Timing in worker processes: every entry (source x engine x precision x batch) in fresh processes.

A process can settle into a thread mode for its whole life (unpinned OpenMP threads that share a
core; another engine's pool spinning beside this one's), which rounds inside one process cannot
see. So each entry is timed in several workers (`python -m bench.measure.worker`), a generation at
a time: one worker per entry, started together (untimed), then timed round by round in a new
random order (each engine's entries together), one worker running at a time while the others wait
on a pipe. Generations continue until every ratio's (or the one entry's) interval is within
`Settings.precision_target`, or `Settings.max_time_s` has passed, with at least `Settings.workers` of
them.

Each worker's environment is set before the libraries load: torch with several threads gets
OpenMP threads bound one per core (`OMP_PROC_BIND=spread`, `OMP_PLACES=threads`), unless the
user set their own OMP_*/KMP_* variables, which are kept and recorded. A worker that crashes,
hangs past `Settings.worker_timeout_s` or fails to open its engine makes its entry an error
record; the other entries go on.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure.settings import layer_macs
from bench.measure.worker import THREAD_ENV_PREFIXES
from bench.measure.zygote import ZygoteFailed, module_command, start_mode, zygote_for

#: Untimed runs that re-warm an engine at the start of each later round.
REWARM_RUNS = 2
#: A round's timed length when neither iters nor a duration is given.
ROUND_S = 0.1
#: Most generations of workers, whatever the budget.
MAX_GENERATIONS = 16
#: Variables that place OpenMP threads; when the user set any, rbench sets none of its own.
AFFINITY_KEYS = ("OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "GOMP_CPU_AFFINITY")


#: Idle time before a round whose engine differs from the round before it. Another engine's pool keeps
#: spinning for a while after its round (onnxruntime's and OpenVINO's threads wait for work busily):
#: with no pause, torch rounds after them ran over twice as slow (resnet20, 2 pinned threads); 50 ms of
#: pause removed that mode (results/engine-switch-*; docs/measuring.md, "Engines in turn").
#: RBENCH_ENGINE_SWITCH_GAP_S changes it, to check that finding on another machine.
ENGINE_SWITCH_GAP_S = 0.05
GAP_ENV = "RBENCH_ENGINE_SWITCH_GAP_S"


def engine_switch_gap_s() -> float:
    """The pause before a round of another engine: $RBENCH_ENGINE_SWITCH_GAP_S when set, else the default."""
    import math

    from bench.errors import UsageProblem

    text = os.environ.get(GAP_ENV)
    if text is None:
        return ENGINE_SWITCH_GAP_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 10):
        raise UsageProblem(f"{GAP_ENV}={text!r} is not a pause in seconds from 0 to 10; unset it for the default "
                           f"{ENGINE_SWITCH_GAP_S:g}")
    return value


#: Least time a worker gets to start (import torch and its engine, open the model) before it counts as hung:
#: several workers start at once, and on 2 busy cores that took longer than a short `worker_timeout_s`.
START_TIMEOUT_S = 120.0


class WorkerFailed(Exception):
    """A worker crashed, hung, or reported an error; the message says which, with stderr's tail."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_policy(engine: str, threads: int | None, environ: dict[str, str] | None = None,
                  threads_why: str | None = None) -> dict[str, Any]:
    """The environment a worker for `engine` starts with, beyond the parent's: {"set": {...}, "user": {...},
    "why": str, "threads_why": what chose the thread count (`Settings.threads_for`)}.
    The user's own OMP_*/KMP_* variables are kept as they are (and recorded), never replaced."""
    environ = dict(os.environ if environ is None else environ)
    user = {k: v for k, v in sorted(environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}
    count = threads or usable_cores()
    chosen = {"threads_why": threads_why}
    if engine != "torch" or count < 2:
        return {"set": {}, "user": user, "why": "one thread, or an engine with its own pool: nothing to place",
                **chosen}
    if any(k in user for k in AFFINITY_KEYS):
        return {"set": {}, "user": user, "why": "the user's own OpenMP placement is kept", **chosen}
    return {"set": {"OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}, "user": user,
            "why": "unbound OpenMP threads fall into a slow mode in some processes: one thread per core", **chosen}


def worker_environment(policy: dict[str, Any], root: str | None = None) -> dict[str, str]:
    """The parent's environment with the policy's variables, and this checkout (or the checkout at `root`: another
    version of rbench, `bench.measure.versions`) importable first."""
    env = dict(os.environ)
    env.update(policy["set"])
    root = root or str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class Worker:
    """One worker process and its JSON-lines pipe."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], workdir: Path, timeout_s: float):
        self.timeout_s = timeout_s
        spec_file = Path(tempfile.mkstemp(prefix="worker-", suffix=".json", dir=workdir)[1])
        spec_file.write_text(json.dumps(spec))
        self.stderr = tempfile.TemporaryFile(dir=workdir)
        self.proc = None
        if start_mode() == "fork":
            try:
                self.proc = zygote_for(env).fork(str(spec_file), self.stderr)
            except (ZygoteFailed, OSError):
                self.proc = None  # started by exec below: slower to start, timed alike
        if self.proc is None:
            self.proc = subprocess.Popen(module_command("bench.measure.worker", env, str(spec_file)),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
                                         close_fds=True)
        self._buffer = b""

    def _tail(self) -> str:
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-3:])[-400:]

    def receive(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The worker's next reply; WorkerFailed when it exits, hangs past the timeout or reports an error."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.kill()
                    raise WorkerFailed(f"worker hung: no answer in {timeout_s or self.timeout_s:.0f} s, killed")
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    code = self.proc.wait()
                    tail = self._tail()
                    raise WorkerFailed(f"worker exited with status {code}" + (f": {tail}" if tail else ""))
                self._buffer += chunk
        finally:
            selector.close()
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = json.loads(line)
        if "error" in message:
            self.kill()
            raise WorkerFailed(message["error"])
        return message

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reply (end of output) says why
        return self.receive()

    def stop(self) -> None:
        try:
            self.proc.stdin.write(b'{"cmd": "stop"}\n')
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self.kill()
        self.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class WorkerEntry:
    """One timed entry as the parent sees it: a spec a worker can open, and what its workers measured."""

    source: Any
    engine_name: str
    precision: str
    costs: dict[str, Any]
    peak: dict[str, Any] | None
    spec: dict[str, Any]
    policy: dict[str, Any]
    info: dict[str, Any] | None = None
    device: str = "cpu"
    input_shape: list[int] | None = None
    error: str | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)  # {"rounds": [[ms...]], "threads": {...}, ...}
    own_precision: bool = False

    @property
    def label(self) -> str:
        return f"{self.engine_name} {self.precision}" if self.own_precision else self.engine_name


def portable_spec(src, engine: str, precision: str, batch: int, settings, workdir: Path, index: int, *,
                  by_name: bool = False, costs: dict[str, Any] | None = None) -> dict | None:
    """What a worker needs to open `src` on `engine`, or None when `src` cannot be sent to another process
    (a module that does not pickle). ONNX engines get the ONNX file, made here once for every worker. With
    `by_name`, a zoo net goes by its name, and the worker builds it from its own `nets` (`bench.measure.versions`).
    `costs` (`model_costs`) decide torch's default threads (`Settings.threads_for`)."""
    from bench.engines import ONNX_ENGINES
    from bench.engines.sources import onnx_file

    spec: dict[str, Any] = {"engine": engine, "precision": precision, "batch": batch, "device": settings.device,
                            "workdir": str(workdir),
                            "engine_options": settings.engine_options(engine, layer_macs(costs, batch)),
                            "include_transfers": settings.include_transfers, "seed": 0,
                            "source_options": {"input_shape": list(src.input_shape) if src.input_shape else None,
                                               "name": src.name}}
    if not src.has_module:
        spec["source"] = str(src.path)
        return spec
    if by_name and src.kind == "zoo" and engine not in ONNX_ENGINES:
        spec["source"] = src.name
        return spec
    if engine in ONNX_ENGINES:
        file_precision = "fp32" if engine == "openvino" and precision == "bf16" else precision
        spec["source"] = str(onnx_file(src, file_precision, workdir, batch))
        return spec
    import torch

    module_file = workdir / f"module-{index}.pt"
    try:
        torch.save(src.module(), module_file)
    except Exception:  # noqa: BLE001 - a local class, a lambda, an open file: this module stays in-process
        return None
    spec["module_file"] = str(module_file)
    return spec


def _round_request(settings, first: bool, rounds: int) -> dict[str, Any]:
    request: dict[str, Any] = {"cmd": "round", "warmup": settings.warmup if first else REWARM_RUNS,
                               "warmup_s": settings.warmup_s if first else 0.0}
    if settings.iters:
        request["iters"] = -(-settings.iters // rounds)
    else:
        request["duration_s"] = settings.duration_s / rounds if settings.duration_s else ROUND_S
    if first and settings.compile and request["warmup"] < 2:
        request["warmup"] = 2  # torch.compile compiles at the first runs: keep them untimed
    return request


def generation_cpu(generation: int, cpus: Sequence[int] | None = None) -> int | None:
    """The core every one-thread worker of a generation is pinned to: the usable cores in turn, generation by
    generation, so the entries of one generation share a core (their ratio pairs rounds on the same core) and an
    entry's figure weighs every core alike (a core the host runs slower for a while is sampled evenly, not by
    where the scheduler happened to put each process). None off Linux or with one usable core."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cpus[generation % len(cpus)] if len(cpus) > 1 else None


def _spec_for(entry: WorkerEntry, cpu: int | None) -> dict[str, Any]:
    """The entry's spec, pinned to `cpu` when its engine runs one thread on a CPU (and the user placed nothing)."""
    one_thread = entry.spec.get("engine_options", {}).get("threads") == 1 and entry.spec.get("device", "cpu") == "cpu"
    if cpu is None or not one_thread or any(k in entry.policy.get("user", {}) for k in AFFINITY_KEYS):
        return entry.spec
    return {**entry.spec, "cpus": [cpu]}


def round_order(engines: Sequence[str], rng) -> list[int]:
    """One round's order of entries on `engines`: the engines in a new random order, each one's entries together in a
    new random order. Each change of engine costs a pause (`ENGINE_SWITCH_GAP_S`): grouped, a round changes engine
    once per engine at most, where a free order can change at every step; every entry's place stays random."""
    groups: dict[str, list[int]] = {}
    for index, engine in enumerate(engines):
        groups.setdefault(engine, []).append(index)
    names = list(groups)
    order: list[int] = []
    for g in rng.permutation(len(names)) if len(names) > 1 else range(len(names)):
        members = groups[names[g]]
        order += [members[i] for i in rng.permutation(len(members))] if len(members) > 1 else members
    return order


def _generation(entries: list[WorkerEntry], settings, workdir: Path, rng, progress, index: int = 0) -> None:
    """One worker per live entry, started together in a new random order, then timed round by round, one at a
    time (`round_order`). One-thread workers are pinned to this generation's core (`generation_cpu`).

    The start order is drawn anew so that nothing tied to a worker's place in it (which pages the kernel hands
    it, the order its engine loads) stays with one entry for a whole run, a bias the interval cannot see: in the
    quick suite on the Intel Xeon VM one entry ran 4x slower in all four of its workers than in the next phase,
    and a rerun of that phase did not repeat it (cause not found; results/README.md)."""
    live = [e for e in entries if e.error is None]
    live = [live[i] for i in rng.permutation(len(live))] if len(live) > 1 else live
    cpu = generation_cpu(index)
    started: list[tuple[WorkerEntry, Worker]] = []
    for entry in live:
        started.append((entry, Worker(_spec_for(entry, cpu), worker_environment(entry.policy, entry.spec.get("root")),
                                      workdir, settings.worker_timeout_s)))
    running: list[tuple[WorkerEntry, Worker, dict[str, Any]]] = []
    for entry, worker in started:
        try:
            ready = worker.receive(max(settings.worker_timeout_s, START_TIMEOUT_S))
        except WorkerFailed as exc:
            entry.error = f"worker failed to start: {exc}"
            worker.stop()
            continue
        entry.info, entry.device, entry.input_shape = ready["info"], ready["device"], ready["input_shape"]
        record = {"rounds": [], "threads": ready["threads"], "memory_peak_bytes": 0, "warmup_iters": 0,
                  "warmup_s": 0.0, "timed_wall_s": 0.0}
        running.append((entry, worker, record))
    previous_engine, gap_s = None, engine_switch_gap_s()
    for round_index in range(settings.rounds):
        for i in round_order([entry.engine_name for entry, _, _ in running], rng):
            entry, worker, record = running[i]
            if entry.error is not None:
                continue
            if previous_engine is not None and entry.engine_name != previous_engine:
                time.sleep(gap_s)  # the last engine's spinning threads settle first
            previous_engine = entry.engine_name
            try:
                reply = worker.request(_round_request(settings, round_index == 0, settings.rounds))
            except WorkerFailed as exc:
                entry.error = f"worker failed in round {round_index + 1}: {exc}"
                continue
            record["rounds"].append(reply["latencies_ms"])
            for key in ("warmup_iters", "warmup_s", "timed_wall_s"):
                record[key] += reply[key]
            record["memory_peak_bytes"] = max(record["memory_peak_bytes"], reply["memory_peak_bytes"])
            record.update(memory_kind=reply["memory_kind"], include_transfers=reply["include_transfers"],
                          timer=reply["timer"])
            if progress:
                progress(entry, sum(len(r) for w in entry.workers for r in w["rounds"]) +
                         sum(len(r) for r in record["rounds"]))
    for entry, worker, record in running:
        worker.stop()
        if entry.error is None:
            entry.workers.append(record)


def precision_reached(entries: list[WorkerEntry], target: float) -> bool:
    """Whether every ratio over the first entry (or the one entry's own figure) is within `target`."""
    from bench.measure.intervals import level_interval, ratio_interval, target_met

    ok = [e for e in entries if e.error is None and e.workers]
    if not ok:
        return True
    if len(entries) == 1 or entries[0] not in ok:
        return all(target_met(*level_interval([w["rounds"] for w in e.workers]), target) for e in ok)
    base = [w["rounds"] for w in entries[0].workers]
    return all(target_met(*ratio_interval(base, [w["rounds"] for w in e.workers]), target) for e in ok[1:])


def time_in_workers(entries: list[WorkerEntry], settings, workdir: Path, rng, on_progress=None,
                    extra: Sequence[WorkerEntry] = (), groups: Sequence[list[WorkerEntry]] | None = None
                    ) -> dict[str, Any]:
    """Time every entry in generations of workers until the precision target or the time budget; returns
    {"workers": generations run, "target_met": bool, "elapsed_s": float, "generation_other_cores": the cores
    other processes kept busy during each generation}. Entries are filled in place. `extra`
    entries (the thread check's) are timed in the same generations but never decide when sampling stops.
    `groups` (default: all entries, ratios over the first) are judged each on its own against the target."""
    trackers = {id(e): on_progress(e.label, e.spec["batch"]) if on_progress else None for e in entries}
    started = time.monotonic()

    def progress(entry, done):
        update = trackers.get(id(entry))
        if update:
            update(done, time.monotonic() - started)

    from bench.measure.contention import cores_between, reading

    generations, met, last, others = 0, False, 0.0, []
    while generations < MAX_GENERATIONS:
        begun, before = time.monotonic(), reading()
        _generation([*entries, *extra], settings, workdir, rng, progress, generations)
        others.append(cores_between(before, reading()))  # a busy stretch the whole run's average would hide
        generations += 1
        last = time.monotonic() - begun
        if all(e.error is not None for e in entries):
            break
        if generations >= settings.workers:
            met = all(precision_reached(group, settings.precision_target) for group in (groups or [entries]))
            elapsed = time.monotonic() - started
            if met or elapsed + last > settings.max_time_s:
                break
    return {"workers": generations, "target_met": met, "elapsed_s": round(time.monotonic() - started, 2),
            "generation_other_cores": [None if c is None else round(c, 3) for c in others]}


def watched_in_workers(entries: list[WorkerEntry], settings, workdir: Path, rng, on_progress=None,
                       extra: Sequence[WorkerEntry] = (), groups: Sequence[list[WorkerEntry]] | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """`time_in_workers` watched for contention (`bench.measure.contention.watched`): (its outcome, the records'
    "contention" field). Other processes' CPU is judged over the whole run and over each generation, so one busy
    stretch (a test run beside a minute of timing) is flagged though the minute's average stays low."""
    from bench.measure import contention

    # The parent's own CPU share says nothing about the workers' threads: no thread count for the assessment.
    outcome, state = contention.watched(
        lambda: time_in_workers(entries, settings, workdir, rng, on_progress, extra=extra, groups=groups),
        settings.require_quiet, None,
        more_reasons=lambda result, cores: contention.stretch_reasons(result["generation_other_cores"], cores,
                                                                      "worker generation"))
    state["worker_seconds"] = outcome["elapsed_s"]
    state["generation_other_cores"] = outcome["generation_other_cores"]
    return outcome, state


# -- records ------------------------------------------------------------------------------------
def _pooled_run(entry: WorkerEntry) -> dict[str, Any]:
    workers = entry.workers
    return {"latencies_ms": [v for w in workers for r in w["rounds"] for v in r],
            "iters": sum(len(r) for w in workers for r in w["rounds"]),
            "warmup_iters": sum(w["warmup_iters"] for w in workers), "warmup_s": sum(w["warmup_s"] for w in workers),
            "timed_wall_s": sum(w["timed_wall_s"] for w in workers),
            "include_transfers": workers[0]["include_transfers"], "timer": workers[0]["timer"],
            "memory_peak_bytes": max(w["memory_peak_bytes"] for w in workers), "memory_kind": workers[0]["memory_kind"],
            "rounds": sum(len(w["rounds"]) for w in workers)}


def thread_settings(entry: WorkerEntry) -> dict[str, Any]:
    """What a record's settings say about threads: the policy, what the first worker found itself with, and the
    core each worker was pinned to (None where it was not)."""
    seen = entry.workers[0]["threads"] if entry.workers else {}
    return {"env_set_by_rbench": entry.policy["set"], "env_from_user": entry.policy["user"],
            "why": entry.policy["why"], "threads_why": entry.policy.get("threads_why"), "worker_env": seen.get("env"),
            "affinity": seen.get("affinity"),
            "pinned_cpus": [w["threads"].get("pinned_cpus") for w in entry.workers],
            "main_thread_affinity": seen.get("main_thread_affinity"), "start": seen.get("start"),
            "code": seen.get("code"),
            **{k: v for k, v in seen.items() if k.startswith("torch_")}}


def timing_fields(entry: WorkerEntry, settings, outcome: dict[str, Any]) -> dict[str, Any]:
    """The record fields of worker timing: mode, workers, per-worker medians, modes, the precision target."""
    from bench.measure.intervals import detect_modes, detect_periods

    modes = detect_modes([[v for r in w["rounds"] for v in r] for w in entry.workers])
    periods = detect_periods([w["rounds"] for w in entry.workers])
    return {"timing_mode": "workers", "workers": len(entry.workers),
            "worker_rounds": [[len(r) for r in w["rounds"]] for w in entry.workers],
            "worker_medians_ms": [round(m, 5) for m in modes["worker_medians_ms"]],
            "unstable": modes["unstable"], "modes_ms": [round(m, 5) for m in modes["modes_ms"]],
            "mode_workers": modes["mode_workers"], "slow_periods": periods["slow_periods"],
            "period_modes_ms": [round(m, 5) for m in periods["period_modes_ms"]],
            "period_rounds": periods["period_rounds"], "precision_target": settings.precision_target,
            "target_met": outcome["target_met"]}


def worker_records(entries: list[WorkerEntry], batch: int, settings, outcome: dict[str, Any], contention,
                   context, command) -> list[dict[str, Any]]:
    """One latency record per entry: pooled percentiles, the p50 interval over workers and rounds, the modes."""
    from bench.measure.device import peak_flops_for
    from bench.measure.intervals import HIERARCHICAL_METHOD, level_interval
    from bench.measure.settings import load_average
    from bench.measure.stats import summarize
    from bench.records.builders import latency_record

    records = []
    for entry in entries:
        peak_flops = peak_flops_for(entry.peak, entry.precision)
        info = entry.info or {"backend": entry.engine_name, "version": None, "device": settings.device,
                              "precision": entry.precision, "providers": None, "options": {}}
        base = dict(source=entry.source.describe(), model_config=entry.source.config or None, engine=entry.engine_name,
                    engine_info=info, precision=entry.precision, device=entry.device, batch=batch,
                    input_shape=entry.input_shape or list(entry.source.input_shape or []), profile=entry.costs,
                    settings={**settings.as_record(), "threads_in_workers": thread_settings(entry)},
                    peak_flops_s=peak_flops,
                    peak_source="rbench device (cached)" if entry.peak else "not measured: run `rbench device`",
                    load_average=load_average(), contention=contention, context=context, command=command)
        if entry.error is not None or not entry.workers:
            records.append(latency_record(**base, error=entry.error or "no worker finished",
                                          timing={"timing_mode": "workers", "workers": len(entry.workers)}))
            continue
        run = _pooled_run(entry)
        summary = summarize(run["latencies_ms"], batch, entry.costs["flops"], peak_flops)
        point, low, high = level_interval([w["rounds"] for w in entry.workers])
        p50 = summary["latency_ms_p50"]
        summary.update(latency_ms_p50_ci=[p50 * low / point, p50 * high / point],
                       ci_method=f"p50 {HIERARCHICAL_METHOD} (p99: order statistics of the pooled runs)")
        records.append(latency_record(**base, run=run, summary=summary,
                                      timing=timing_fields(entry, settings, outcome)))
    return records


def worker_comparisons(entries: list[WorkerEntry], records: list[dict[str, Any]], threshold: float, context,
                       command) -> list[dict[str, Any]]:
    """One comparison per entry after the first: hierarchical ratio interval and verdict, or "unstable" with
    the modes when either side's workers fell into separate modes."""
    from bench.measure.intervals import HIERARCHICAL_METHOD, paired_worker_ratio
    from bench.records.builders import comparison_record

    if entries[0].error is not None or not entries[0].workers:
        return []
    base_rounds = [w["rounds"] for w in entries[0].workers]
    comparisons = []
    for entry, record in zip(entries[1:], records[1:]):
        if entry.error is not None or not entry.workers:
            continue
        # The ratio's own modes, worker pair by worker pair: a slow period of the machine fell on both sides
        # alike (they ran interleaved) and is no reason to withhold the ratio; a process in its own mode is.
        c = paired_worker_ratio(base_rounds, [w["rounds"] for w in entry.workers], threshold)
        note = f"{record['model']} / {records[0]['model']}: {c['note']}" if c["unstable"] else None
        comparisons.append(comparison_record(
            records[0], record, ratio=c["ratio"], low=c["low"], high=c["high"], ci_method=HIERARCHICAL_METHOD,
            verdict=c["verdict"], threshold=threshold,
            rounds=record["rounds"], interleaved=True, context=context, command=command,
            timing={"timing_mode": "workers", "workers": min(len(entries[0].workers), len(entry.workers)),
                    "unstable": c["unstable"], "note": note, "ratio_modes": c["ratio_modes"],
                    "precision_target": record["precision_target"], "target_met": record["target_met"]}))
    return comparisons


# -- the thread check ------------------------------------------------------------------------------
#: Engines whose thread count `--threads` sets on a CPU.
THREADED_ENGINES = ("torch", "ort", "openvino")


def entry_threads(entry: WorkerEntry) -> int:
    """The threads an entry's workers run with: those its spec asks for, else every usable core (the default of
    torch, onnxruntime and OpenVINO on a CPU)."""
    return entry.spec.get("engine_options", {}).get("threads") or usable_cores()


def thread_twins(entries: list[WorkerEntry], batch: int, settings) -> list[tuple[int, WorkerEntry]]:
    """(index of the entry, its twin at the other thread count) for the first entry of each threaded engine, when
    the check applies: `settings.thread_check`, batch 1, a CPU with 2 or more usable cores and no `--threads`
    given. The twin runs one thread where the default runs every core, and every core where the default is one
    thread (torch on a small batch: `Settings.threads_for`)."""
    cores = usable_cores()
    if not settings.thread_check or batch != 1 or settings.threads is not None or settings.device != "cpu" \
            or cores < 2:
        return []
    twins, seen = [], set()
    for index, entry in enumerate(entries):
        if entry.engine_name in seen or entry.engine_name not in THREADED_ENGINES:
            continue
        seen.add(entry.engine_name)
        other = 1 if entry_threads(entry) > 1 else cores
        spec = {**entry.spec, "engine_options": {**entry.spec.get("engine_options", {}), "threads": other}}
        twins.append((index, WorkerEntry(entry.source, entry.engine_name, entry.precision, entry.costs, entry.peak,
                                         spec, thread_policy(entry.engine_name, other, threads_why="the thread check"),
                                         device=entry.device, own_precision=entry.own_precision)))
    return twins


def thread_check(entry: WorkerEntry, twin: WorkerEntry, threshold: float) -> dict[str, Any]:
    """What the other thread count gives against the default's, from the same generations: the ratio of the twin's
    p50 over the entry's (hierarchical interval, workers paired) and a verdict of the twin against the default.
    `more_threads_faster`: whether the larger of the two thread counts was measurably faster (False: the output
    says that one thread does as well)."""
    import numpy as np

    from bench.measure.intervals import HIERARCHICAL_METHOD, ratio_interval
    from bench.measure.stats import verdict

    threads, other = entry_threads(entry), entry_threads(twin)
    if entry.error or twin.error or not entry.workers or not twin.workers:
        return {"threads": threads, "other_threads": other, "error": twin.error or entry.error or "no worker finished"}
    ratio, low, high = ratio_interval([w["rounds"] for w in entry.workers], [w["rounds"] for w in twin.workers])
    values = [v for w in twin.workers for r in w["rounds"] for v in r]
    outcome = verdict(low, high, threshold)  # of the twin against the default
    more_faster = outcome == ("faster" if other > threads else "slower")
    return {"threads": threads, "other_threads": other, "other_p50_ms": round(float(np.median(values)), 5),
            "ratio_other_over_default": round(ratio, 4), "ratio_ci": [round(low, 4), round(high, 4)],
            "ci_method": HIERARCHICAL_METHOD, "verdict": outcome, "more_threads_faster": more_faster,
            "workers": min(len(entry.workers), len(twin.workers))}


def measure(items: list[tuple[Any, dict[str, Any], str, str]], batch: int, settings, workdir: Path, rng, *,
            own_precision: bool = False, threshold: float, on_progress=None, context=None, command=None
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(latency records, comparisons) of (source, costs, engine, precision) items timed in workers, or None
    when a source cannot be sent to a worker process (the caller then times in-process)."""
    from bench.measure.settings import cached_peak

    entries = []
    for index, (src, costs, engine, precision) in enumerate(items):
        spec = portable_spec(src, engine, precision, batch, settings, workdir, index, costs=costs)
        if spec is None:
            return None
        threads, why = settings.threads_for(engine, layer_macs(costs, batch))
        entries.append(WorkerEntry(src, engine, precision, costs, cached_peak(settings, engine), spec,
                                   thread_policy(engine, threads, threads_why=why), device=settings.device,
                                   own_precision=own_precision))
    twins = thread_twins(entries, batch, settings)
    outcome, state = watched_in_workers(entries, settings, workdir, rng, on_progress, extra=[t for _, t in twins])
    records = worker_records(entries, batch, settings, outcome, state, context, command)
    for index, twin in twins:
        if records[index].get("error") is None:
            records[index]["thread_check"] = thread_check(entries[index], twin, threshold)
    return records, worker_comparisons(entries, records, threshold, context, command)
