"""Contention detection: each reading flags what it should, and --require-quiet refuses a busy machine."""

from __future__ import annotations

import pytest

from bench.measure import contention
from bench.measure.contention import Snapshot, assess, quiet_enough
from bench.records.io import read_records


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def snap(wall=0.0, cpu=0.0, load=0.5, steal=(0, 1000), calibration=3.0, others=0.0):
    return Snapshot(wall, cpu, load, steal, calibration, others)


def test_a_quiet_phase_is_not_flagged():
    state = assess(snap(), snap(wall=1.0, cpu=1.0, steal=(0, 2000)), cores=2, threads=1)
    assert state["contended"] is False and state["reasons"] == [] and state["cpu_share"] == 1.0
    assert state["other_cores"] == 0.0


def test_our_own_workers_and_the_load_they_leave_are_not_other_work():
    """Timing in worker processes: the parent sleeps on a pipe while its (waited-for) children run, and the load
    average they raise lags for a minute. Neither is other work."""
    after = snap(wall=10.0, cpu=0.3, load=5.1, others=0.2)
    state = assess(snap(load=4.0), after, cores=2, threads=None)
    assert not state["contended"], state["reasons"]
    assert state["other_cores"] == pytest.approx(0.02) and state["load_average"] == [4.0, 5.1]


@pytest.mark.parametrize("after, threads, reason", [
    (snap(wall=1.0, cpu=1.0, others=0.6), 1, "other processes used 0.6 of 2 usable cores"),
    (snap(wall=1.0, cpu=1.0, steal=(200, 2000)), 1, "20% of CPU time stolen"),
    (snap(wall=1.0, cpu=0.5), 1, "got 50% of a core"),
    (snap(wall=1.0, cpu=1.0, calibration=6.0), 1, "2.00x slower after the run"),
])
def test_each_reading_flags_contention(after, threads, reason):
    state = assess(snap(), after, cores=2, threads=threads)
    assert state["contended"] and any(reason in r for r in state["reasons"]), state["reasons"]


def test_cpu_share_is_judged_only_for_one_thread_runs():
    assert not assess(snap(), snap(wall=1.0, cpu=0.5), cores=2, threads=2)["contended"]


def test_a_phase_busy_from_start_to_end_shows_against_the_machines_quiet_time(monkeypatch):
    monkeypatch.setattr(contention, "_others_cpu_s", lambda: 5.0)  # nothing else runs (the tests beside this one do)
    assess(snap(calibration=2.0), snap(wall=1.0, cpu=1.0, calibration=2.0), cores=2, threads=1)  # the quiet reference
    state = assess(snap(calibration=4.4), snap(wall=1.0, cpu=1.0, calibration=4.4), cores=2, threads=1)
    assert state["calibration_reference_ms"] == 2.0
    assert any("2.20x its quiet time" in r for r in state["reasons"])
    assert quiet_enough(snap(calibration=4.4), cores=2) and not quiet_enough(snap(calibration=3.0), cores=2)


def test_require_quiet_refuses_and_keeps_nothing(run_cli, results_dir, monkeypatch):
    busy = iter(range(0, 1000, 2))  # another process keeps both cores busy: 2 CPU seconds a call
    monkeypatch.setattr(contention, "_others_cpu_s", lambda: float(next(busy)))
    code, _, err = run_cli("latency", "resnet20", "--iters", "2", "--require-quiet", "--out", results_dir)
    assert code == 1 and "the machine is busy (other processes are using" in err
    assert list(results_dir.iterdir()) == []


def test_records_carry_the_readings_and_the_cli_warns(run_cli, results_dir, monkeypatch):
    readings = iter([snap(), snap(wall=1.0, cpu=0.4)])
    monkeypatch.setattr(contention, "snapshot", lambda: next(readings))
    code, _, err = run_cli("latency", "resnet20", "--iters", "2", "--threads", "1", "--out", results_dir)
    assert code == 0 and "other work competed for the CPU" in err
    (record,) = read_records(results_dir / "latency.jsonl")
    assert record["contention"]["contended"] and record["contention"]["cpu_share"] == 0.4


def test_a_busy_worker_generation_is_flagged_though_the_whole_runs_average_is_low():
    """Other processes busy during one generation of workers only (a short test run beside a minute of
    timing): the run's average stays below the threshold, the generation's does not."""
    assert contention.cores_between((0.0, 10.0), (2.0, 11.2)) == pytest.approx(0.6)
    assert contention.cores_between((0.0, None), (2.0, 11.0)) is None
    per_generation = [0.02, 0.6, 0.03, 0.01, 0.02, 0.01, 0.0, 0.02]
    assert sum(per_generation) / len(per_generation) < contention.OTHER_CORES
    (reason,) = contention.stretch_reasons(per_generation, 2, "worker generation")
    assert reason == "other processes used 0.6 of 2 usable cores during worker generation 2 of 8"
    assert contention.stretch_reasons([0.4, None, 0.3], 2, "worker generation") == [
        "other processes used 0.4 of 2 usable cores during worker generation 1 of 3 (and 1 more of them)"]
    assert contention.stretch_reasons([0.01, None, 0.1], 2, "worker generation") == []


def test_the_stretch_check_makes_a_timing_contended_and_require_quiet_refuses_it(monkeypatch):
    from bench.errors import EnvironmentProblem

    monkeypatch.setattr(contention, "snapshot", lambda: snap())
    monkeypatch.setattr(contention, "_others_cpu_s", lambda: 0.0)  # quiet before: only the stretch can refuse
    result, state = contention.watched(lambda: "timed", False, None,
                                       more_reasons=lambda result, cores: ["busy in generation 2"])
    assert result == "timed" and state["contended"] and state["reasons"] == ["busy in generation 2"]
    with pytest.raises(EnvironmentProblem, match="busy in generation 2"):
        contention.watched(lambda: "timed", True, None, more_reasons=lambda result, cores: ["busy in generation 2"])
    assert not contention.watched(lambda: "timed", False, None, more_reasons=lambda r, c: [])[1]["contended"]
