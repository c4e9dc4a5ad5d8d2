"""One timing worker: `python -m bench.measure.worker SPEC.json`, started by `bench.measure.workers`.

It opens one engine on one source (the spec), says it is ready, then times a round for every
"round" line it reads on stdin and answers with one JSON line, until "stop" or end of input. The
protocol has its own file descriptor: the process's stdout goes to stderr, so whatever a library
prints cannot break a reply. Every thread setting the process ended up with (its environment's
OMP_*/KMP_* variables, its CPU affinity, torch's threads) is in the ready line.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

#: Environment variables that decide how OpenMP (torch's CPU kernels) and oneDNN place and wait their threads.
THREAD_ENV_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "DNNL_", "ONEDNN_")


def thread_environment() -> dict[str, str]:
    """This process's thread-placement variables (OMP_*, KMP_*, GOMP_*, MKL_*, DNNL_*)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}


def _affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _source(spec: dict[str, Any]):
    from bench.engines.sources import resolve_source

    options = {k: v for k, v in spec.get("source_options", {}).items() if v is not None}
    if "input_shape" in options:
        options["input_shape"] = tuple(options["input_shape"])
    if spec.get("module_file"):  # a module the parent pickled with torch.save
        import torch

        module = torch.load(spec["module_file"], map_location="cpu", weights_only=False)
        return resolve_source(module, **options)
    return resolve_source(spec["source"], **options)


#: How this process started: by exec (`python -m bench.measure.worker`), or forked by a zygote
#: (`bench.measure.zygote`, which sets it).
START = "exec"
#: The process's CPUs when it started, before any library bound its main thread to one of them.
_START_AFFINITY = _affinity()


def _thread_state(engine_name: str, cpus: list[int] | None = None) -> dict[str, Any]:
    # With OMP_PROC_BIND the main thread is bound to the first place once OpenMP starts: both are worth knowing.
    state: dict[str, Any] = {"env": thread_environment(), "affinity": _START_AFFINITY,
                             "pinned_cpus": sorted(cpus) if cpus else None,
                             "main_thread_affinity": _affinity(), "pid": os.getpid(), "start": START,
                             "code": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    if engine_name == "torch" and "torch" in sys.modules:
        import torch

        state["torch_threads"] = torch.get_num_threads()
        state["torch_interop_threads"] = torch.get_num_interop_threads()
    return state


def serve(spec: dict[str, Any], requests, reply) -> int:
    """Open the spec's engine, then answer requests (iterable of dicts) through `reply(dict)`; the exit status."""
    import numpy as np

    from bench.engines import create_engine
    from bench.measure.timing import is_out_of_memory, measure_latency

    try:
        if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, spec["cpus"])  # before the engine makes its threads: they inherit it
        src = _source(spec)
        engine = create_engine(spec["engine"], src, device=spec.get("device", "cpu"), precision=spec["precision"],
                               workdir=spec.get("workdir"), max_batch=spec["batch"], batch=spec["batch"],
                               **spec.get("engine_options", {}))
        engine.__enter__()
        batch = np.random.default_rng(spec.get("seed", 0)).standard_normal((spec["batch"], *engine.input_shape),
                                                                          dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - the parent turns it into an error record
        reply({"error": " ".join((str(exc) or type(exc).__name__).split())[:400], "oom": is_out_of_memory(exc)})
        return 1
    reply({"ready": True, "info": engine.describe(), "device": engine.device, "input_shape": list(engine.input_shape),
           "threads": _thread_state(spec["engine"], spec.get("cpus"))})
    try:
        for request in requests:
            if request.get("cmd") != "round":
                break
            try:
                run = measure_latency(engine, batch, warmup=request.get("warmup", 0),
                                      warmup_s=request.get("warmup_s", 0.0), iters=request.get("iters"),
                                      duration_s=request.get("duration_s"),
                                      include_transfers=spec.get("include_transfers", False))
                run.update(engine.memory_usage() or {})
            except Exception as exc:  # noqa: BLE001 - reported, and this worker stops
                reply({"error": " ".join((str(exc) or type(exc).__name__).split())[:400],
                       "oom": is_out_of_memory(exc)})
                return 1
            reply({k: run[k] for k in ("latencies_ms", "warmup_iters", "warmup_s", "timed_wall_s", "memory_peak_bytes",
                                       "memory_kind", "include_transfers", "timer")})
    finally:
        engine.__exit__(None, None, None)
    return 0


def main(argv: list[str]) -> int:
    with open(argv[0]) as handle:
        spec = json.load(handle)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what libraries print goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def reply(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    requests = (json.loads(line) for line in sys.stdin if line.strip())
    try:
        return serve(spec, requests, reply)
    except Exception:  # noqa: BLE001 - last resort: the parent reads stderr's tail
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
