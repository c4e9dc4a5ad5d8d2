"""Contention detection: each reading flags what it should, and --require-quiet refuses a busy machine."""

from __future__ import annotations

import pytest

from bench.measure import contention
from bench.measure.contention import Snapshot, assess, quiet_enough
from bench.records.io import read_records


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def snap(wall=0.0, cpu=0.0, load=0.5, steal=(0, 1000), calibration=3.0):
    return Snapshot(wall, cpu, load, steal, calibration)


def test_a_quiet_phase_is_not_flagged():
    state = assess(snap(), snap(wall=1.0, cpu=1.0, steal=(0, 2000)), cores=2, threads=1)
    assert state["contended"] is False and state["reasons"] == [] and state["cpu_share"] == 1.0


@pytest.mark.parametrize("after, threads, reason", [
    (snap(wall=1.0, cpu=1.0, load=3.2), 1, "load average up to 3.2 on 2"),
    (snap(wall=1.0, cpu=1.0, steal=(200, 2000)), 1, "20% of CPU time stolen"),
    (snap(wall=1.0, cpu=0.5), 1, "got 50% of a core"),
    (snap(wall=1.0, cpu=1.0, calibration=6.0), 1, "2.00x slower after the run"),
])
def test_each_reading_flags_contention(after, threads, reason):
    state = assess(snap(), after, cores=2, threads=threads)
    assert state["contended"] and any(reason in r for r in state["reasons"]), state["reasons"]


def test_cpu_share_is_judged_only_for_one_thread_runs():
    assert not assess(snap(), snap(wall=1.0, cpu=0.5), cores=2, threads=2)["contended"]


def test_a_phase_busy_from_start_to_end_shows_against_the_machines_quiet_time():
    assess(snap(calibration=2.0), snap(wall=1.0, cpu=1.0, calibration=2.0), cores=2, threads=1)  # the quiet reference
    state = assess(snap(calibration=4.4), snap(wall=1.0, cpu=1.0, calibration=4.4), cores=2, threads=1)
    assert state["calibration_reference_ms"] == 2.0
    assert any("2.20x its quiet time" in r for r in state["reasons"])
    assert quiet_enough(snap(calibration=4.4), cores=2) and not quiet_enough(snap(calibration=3.0), cores=2)


def test_require_quiet_refuses_and_keeps_nothing(run_cli, results_dir, monkeypatch):
    monkeypatch.setattr(contention, "snapshot", lambda: snap(load=7.5))
    code, _, err = run_cli("latency", "resnet20", "--iters", "2", "--require-quiet", "--out", results_dir)
    assert code == 1 and "the machine is busy (load average 7.5" in err
    assert list(results_dir.iterdir()) == []


def test_records_carry_the_readings_and_the_cli_warns(run_cli, results_dir, monkeypatch):
    readings = iter([snap(), snap(wall=1.0, cpu=0.4)])
    monkeypatch.setattr(contention, "snapshot", lambda: next(readings))
    code, _, err = run_cli("latency", "resnet20", "--iters", "2", "--threads", "1", "--out", results_dir)
    assert code == 0 and "other work competed for the CPU" in err
    (record,) = read_records(results_dir / "latency.jsonl")
    assert record["contention"]["contended"] and record["contention"]["cpu_share"] == 0.4
