"""Measurement records validate against the schema and survive a JSON round trip."""

from __future__ import annotations

import json

import pytest

from bench.commands.measure import Settings, flops_record, measure_model, throughput_records
from bench.results import to_json, validate_record


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path))


def test_latency_and_throughput_records_validate():
    settings = Settings(warmup=1, iters=2, threads=1)
    records = measure_model("resnet20", ["torch"], [1, 2], settings)
    assert len(records) == 2
    for record in records:
        validate_record(record)
        assert json.loads(to_json(record)) == record
        assert record["settings"]["iters"] == 2 and record["timer"]
        assert record["peak_flops_s"] is None or record["percent_of_peak"] is not None
    (best,) = throughput_records(records)
    validate_record(best)
    assert best["kind"] == "throughput" and len(best["sweep"]) == 2


def test_flops_record_validates():
    record = flops_record("resnet20", (3, 32, 32))
    validate_record(record)
    assert record["units"]["macs"].startswith("multiply-accumulates")


def test_a_broken_metric_is_rejected():
    record = measure_model("resnet20", ["torch"], [1], Settings(warmup=0, iters=1, threads=1))[0]
    record["latency_ms_p50"] = "fast"
    with pytest.raises(ValueError, match="latency_ms_p50"):
        validate_record(record)
