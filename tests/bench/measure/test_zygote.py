"""Worker start by fork of a zygote: new processes, the parent's folder and cores, exec when asked or when it fails."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bench.errors import UsageProblem
from bench.measure import workers, zygote
from bench.measure.settings import Settings

PINNED = {"set": {"OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}, "user": {}, "why": "test"}


def _spec(tmp_path: Path, threads: int = 1) -> dict:
    from bench.engines.sources import resolve_source
    from tests.bench.user_models import TinyNet

    src = resolve_source(TinyNet(), input_shape=(3, 8, 8), name="tiny")
    return workers.portable_spec(src, "torch", "fp32", 1, Settings(threads=threads), tmp_path, 0)


def _ready_and_round(worker: workers.Worker) -> dict:
    try:
        ready = worker.receive()
        reply = worker.request({"cmd": "round", "warmup": 1, "iters": 3})
        assert len(reply["latencies_ms"]) == 3 and all(v > 0 for v in reply["latencies_ms"])
    finally:
        worker.stop()
    assert worker.proc.returncode == 0
    return ready


def test_forked_workers_are_new_processes_of_one_zygote_with_the_policy_and_the_parents_cores(tmp_path, monkeypatch):
    monkeypatch.delenv(zygote.START_ENV, raising=False)
    env = workers.worker_environment(PINNED)
    spec = _spec(tmp_path, threads=2)
    first, second = (_ready_and_round(workers.Worker(spec, env, tmp_path, timeout_s=60)) for _ in range(2))
    parent = zygote.zygote_for(env).proc.pid
    for ready in (first, second):
        assert ready["threads"]["start"] == f"fork of zygote {parent}"
        assert ready["threads"]["env"]["OMP_PROC_BIND"] == "spread"
        assert ready["threads"]["affinity"] == sorted(os.sched_getaffinity(0))  # not the zygote's bound main thread
        assert ready["threads"]["torch_threads"] == 2
    assert len({first["threads"]["pid"], second["threads"]["pid"], parent, os.getpid()}) == 4


def test_a_forked_worker_works_in_the_parents_folder_now(tmp_path, monkeypatch):
    monkeypatch.delenv(zygote.START_ENV, raising=False)
    env = workers.worker_environment(PINNED)
    zygote.zygote_for(env)  # started in another folder
    monkeypatch.chdir(tmp_path)
    Path("work").mkdir()
    spec = _spec(Path("work"))  # relative paths: the worker must resolve them where the parent is now
    assert not Path(spec["module_file"]).is_absolute()
    ready = _ready_and_round(workers.Worker(spec, env, Path("work"), timeout_s=60))
    assert ready["threads"]["start"].startswith("fork of zygote")


def test_exec_start_when_asked_or_when_the_zygote_fails(tmp_path, monkeypatch):
    env = workers.worker_environment(PINNED)
    monkeypatch.setenv(zygote.START_ENV, "exec")
    assert _ready_and_round(workers.Worker(_spec(tmp_path), env, tmp_path, timeout_s=60))["threads"]["start"] == "exec"

    def broken(_env):
        raise zygote.ZygoteFailed("the zygote exited")

    monkeypatch.setenv(zygote.START_ENV, "fork")
    monkeypatch.setattr(workers, "zygote_for", broken)
    assert _ready_and_round(workers.Worker(_spec(tmp_path), env, tmp_path, timeout_s=60))["threads"]["start"] == "exec"


def test_an_unknown_start_mode_is_one_line(monkeypatch):
    monkeypatch.setenv(zygote.START_ENV, "spawn")
    with pytest.raises(UsageProblem, match="RBENCH_WORKER_START='spawn' is not one of fork, exec"):
        zygote.start_mode()


def test_a_zygote_that_died_is_replaced(tmp_path, monkeypatch):
    monkeypatch.delenv(zygote.START_ENV, raising=False)
    env = workers.worker_environment(PINNED)
    dead = zygote.zygote_for(env)
    os.kill(dead.proc.pid, signal.SIGKILL)
    dead.proc.wait()
    fresh = zygote.zygote_for(env)
    assert fresh is not dead and fresh.alive()
    assert _ready_and_round(workers.Worker(_spec(tmp_path), env, tmp_path, timeout_s=60))["threads"]["start"] == \
        f"fork of zygote {fresh.proc.pid}"


def test_what_forked_workers_ran_counts_as_ours_not_as_other_work(tmp_path, monkeypatch):
    monkeypatch.delenv(zygote.START_ENV, raising=False)
    env = workers.worker_environment(PINNED)
    zygote.zygote_for(env)
    before = zygote.live_cpu_s()
    worker = workers.Worker(_spec(tmp_path), env, tmp_path, timeout_s=60)
    try:
        worker.receive()
        worker.request({"cmd": "round", "warmup": 0, "duration_s": 0.5})
    finally:
        worker.stop()
    # The worker's half second of timing, once it was reaped (on busy cores it gets less than all of it).
    assert zygote.live_cpu_s() - before >= 0.1
