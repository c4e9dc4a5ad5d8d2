"""One builder per record kind: records validate, keep every raw latency, and the CLI's and the suite's agree."""

from __future__ import annotations

import json

import pytest

import bench
from bench.measure.run import throughput_records
from bench.records.builders import FIELDS, STUDY_FIELDS
from bench.records.io import REQUIRED_FIELDS, to_json, validate_record
from bench.records.schema import OPTIONAL_FIELDS

HEADER = set(REQUIRED_FIELDS) | {"rbench_version"}


def measured_keys(record: dict) -> set[str]:
    """A record's keys less the header and any study context."""
    return set(record) - HEADER - set(STUDY_FIELDS)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path))


def test_latency_and_throughput_records_validate_and_keep_every_latency():
    records = bench.latency("resnet20", engines=["torch"], batches=[1, 2], warmup=1, iters=3, threads=1)
    assert [r["batch"] for r in records] == [1, 2]
    for record in records:
        validate_record(record)
        assert json.loads(to_json(record)) == record
        assert measured_keys(record) == set(FIELDS["latency"]) | set(OPTIONAL_FIELDS["latency"])
        assert len(record["latencies_ms"]) == 3 and record["timer"]
        assert record["settings"]["iters"] == 3
        assert record["source"] == {"kind": "zoo", "name": "resnet20", "path": None, "sha256": None, "checkpoint": None}
        assert record["latency_ms_min"] <= record["latency_ms_p50"] <= record["latency_ms_max"]
    (best,) = throughput_records(records)
    validate_record(best)
    assert measured_keys(best) == set(FIELDS["throughput"])
    assert best["kind"] == "throughput" and [row["batch"] for row in best["sweep"]] == [1, 2]
    assert best["throughput_img_s"] == max(r["throughput_img_s"] for r in records)


def test_percent_of_peak_follows_a_cached_peak(tmp_path):
    """With a cached device peak, % of peak is achieved FLOP/s over it; without one it is None."""
    from bench.measure.device import cache_path

    (plain,) = bench.latency("resnet20", warmup=0, iters=2, threads=1)
    assert plain["peak_flops_s"] is None and plain["percent_of_peak"] is None
    path = cache_path("cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"peak_flops_s_fp32": 1e11}))
    (record,) = bench.latency("resnet20", warmup=0, iters=2, threads=1)
    assert record["peak_flops_s"] == 1e11
    assert record["percent_of_peak"] == pytest.approx(100 * record["flops_s_achieved"] / 1e11)


def test_flops_record_names_its_counters():
    record = bench.profile("resnet20")
    validate_record(record)
    assert measured_keys(record) == set(FIELDS["flops"])
    assert record["counters"]["macs"] == "thop" and record["flops"] > record["macs"] > 0
    assert record["units"]["macs"].startswith("multiply-accumulates")


def test_a_broken_metric_or_a_missing_field_is_rejected():
    (record,) = bench.latency("resnet20", warmup=0, iters=1, threads=1)
    with pytest.raises(ValueError, match="latency_ms_p50"):
        validate_record({**record, "latency_ms_p50": "fast"})
    del record["latencies_ms"]
    with pytest.raises(ValueError, match="latencies_ms"):
        validate_record(record)


def test_builders_refuse_fields_their_kind_does_not_have():
    from bench.records.builders import _record

    with pytest.raises(ValueError, match="no field"):
        _record("flops", {"latency_ms_p50": 1.0}, None, "x")
    with pytest.raises(ValueError, match="study context"):
        _record("flops", {}, {"mood": "good"}, "x")


def test_engine_build_record_from_an_engine_report():
    from bench.records.builders import engine_build_record
    from export.tensorrt import EngineReport

    report = EngineReport(engine_path="m.engine", manifest_path="m.engine.json", onnx_path="m.onnx", onnx_sha256="0" * 64,
                          cache_key="k", reused=False, tensorrt_version="10.16", gpu_name="H100", compute_capability="9.0",
                          precision="fp16", precision_plan={}, input_name="input",
                          profile={"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [64, 3, 32, 32]},
                          workspace_gib=4.0, build_seconds=12.5, engine_bytes=1, timing_cache=None,
                          warnings=["fresh timing cache"])
    record = bench.resolve_source("resnet20")
    built = engine_build_record(report, source=record.describe(), model_config=record.config, precision="fp16",
                                input_shape=(3, 32, 32))
    validate_record(built)
    assert measured_keys(built) == set(FIELDS["engine_build"])
    assert built["batch_range"] == [1, 8, 64] and built["warnings"] == ["fresh timing cache"]


def test_an_accuracy_record_of_many_classes_leaves_out_the_confusion_matrix():
    from bench.records.builders import MAX_CONFUSION_CLASSES, accuracy_record

    for classes, kept in ((10, True), (MAX_CONFUSION_CLASSES + 1, False)):
        matrix = [[0] * classes for _ in range(classes)]
        record = accuracy_record({"top1": 0.5, "confusion_matrix": matrix, "per_class": [{"f1": 0.5}] * classes},
                                 model="m", model_config=None, dataset={"name": "d"})
        assert (record["confusion_matrix"] == matrix) is kept and len(record["per_class"]) == classes
