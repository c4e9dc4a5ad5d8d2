"""Result records carry the machine and refuse what is not plain, finite JSON."""

from __future__ import annotations

import json
import os

import pytest

from bench.records import io as results
from tests.conftest import record_of


def test_make_record_has_header_and_machine():
    record = record_of("latency", model="resnet20", latency_ms_p50=1.5, command="rbench latency resnet20")
    for key in results.REQUIRED_FIELDS:
        assert key in record
    machine = record["machine"]
    assert machine["cores_logical"] >= 1 and machine["cpu"]
    assert machine["versions"]["torch"]
    assert record["command"] == "rbench latency resnet20"


def test_the_machine_says_which_allocator_and_thread_settings_were_set(monkeypatch):
    """Allocator and thread-pool variables change timings without a code change (glibc's MALLOC_MMAP_MAX_ moves
    dy_vgg11's batch-8 latency, see results/dynamic-conv-*): a result says which were set."""
    for name in [k for k in os.environ if k.startswith(results.TUNING_ENV_PREFIXES)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONHASHSEED", "0")  # not a tuning setting
    assert results.tuning_env() == {"MALLOC_MMAP_MAX_": "0", "OMP_NUM_THREADS": "1"}
    results.describe_machine.cache_clear()
    try:
        assert results.describe_machine()["tuning_env"] == {"MALLOC_MMAP_MAX_": "0", "OMP_NUM_THREADS": "1"}
    finally:
        results.describe_machine.cache_clear()  # later tests describe the machine as it really is


def test_unknown_kind_and_nan_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        results.make_record("nonsense")
    with pytest.raises(ValueError, match="NaN"):
        record_of("latency", latency_ms_p50=float("nan"))
    with pytest.raises(ValueError, match="number"):
        record_of("flops", macs="many")


def test_append_and_read_back(tmp_path):
    a = record_of("flops", model="a", macs=1, command="x")
    b = record_of("flops", model="b", macs=2, command="x")
    path = results.append_record(a, tmp_path)
    results.append_record(b, tmp_path)
    assert path.name == "flops.jsonl"
    back = results.read_records(path)
    assert [r["model"] for r in back] == ["a", "b"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_unwritable_results_dir_is_an_environment_problem(tmp_path):
    from bench.errors import EnvironmentProblem

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EnvironmentProblem, match="cannot write results"):
        results.append_record(record_of("flops", macs=1, command="x"), blocker / "results")


def test_machine_slug_is_file_safe():
    slug = results.machine_slug()
    assert slug and all(c.isalnum() or c == "-" for c in slug)


def test_in_process_cli_records_its_own_command(run_cli, tmp_path):
    code, _, err = run_cli("flops", "resnet20", "--input-size", "16", "--out", tmp_path)
    assert code == 0, err
    [record] = results.read_records(tmp_path / "flops.jsonl")
    assert record["command"].startswith("rbench flops resnet20")


def test_descriptive_fields_beside_metrics_are_free_form():
    # A string beside the metrics (memory_kind, counters_warning) is fine; a metric must be a number.
    record = record_of("latency", peak_memory_source="process_rss_peak", memory_peak_bytes=10, command="x")
    assert record["peak_memory_source"] == "process_rss_peak"
    with pytest.raises(ValueError, match="number"):
        record_of("latency", memory_peak_bytes="10", command="x")
    with pytest.raises(ValueError, match="number"):
        record_of("latency", latency_ms_p99="slow", command="x")
