"""The measuring commands end to end on CPU: few runs, valid records, one-line errors and no record on bad input."""

from __future__ import annotations

import json

import pytest

from bench.engines.torch_engine import cpu_precision_support
from bench.records.io import read_records, validate_record

FAST = ("--warmup", "1", "--iters", "3", "--threads", "1")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module, so resnet20 is exported to ONNX once."""
    return tmp_path_factory.mktemp("rbench-cache")


@pytest.fixture(autouse=True)
def _cache(shared_cache, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(shared_cache))


def test_latency_torch_batches_1_and_4(run_cli, results_dir):
    code, out, err = run_cli("latency", "resnet20", "--engine", "torch", "--batch", "1,4", *FAST, "--out", results_dir, "--json")
    assert code == 0, err
    records = read_records(results_dir / "latency.jsonl")
    assert [r["batch"] for r in records] == [1, 4]
    printed = [json.loads(line) for line in out.splitlines()]
    assert [r["batch"] for r in printed] == [1, 4]
    for record in records:
        validate_record(record)
        assert record["kind"] == "latency" and record["engine"] == "torch" and record["model"] == "resnet20"
        assert record["input_shape"] == [3, 32, 32] and record["precision"] == "fp32"
        assert len(record["latencies_ms"]) == record["iters"] == 3 and record["warmup_iters"] == 1
        assert record["latency_ms_min"] <= record["latency_ms_p50"] <= record["latency_ms_p99"] <= record["latency_ms_max"]
        assert record["throughput_img_s"] > 0 and record["flops"] > 0 and record["macs"] > 0
        assert record["engine_info"]["options"]["threads"] == 1
        assert record["machine"]["cpu"] and isinstance(record["command"], str)


def test_latency_ort_and_table(run_cli, results_dir):
    code, out, err = run_cli("latency", "resnet20", "--engine", "ort", "--batch", "2", *FAST, "--out", results_dir)
    assert code == 0, err
    assert "p50 ms" in out and "ort" in out
    (record,) = read_records(results_dir / "latency.jsonl")
    assert record["engine_info"]["providers"] == ["CPUExecutionProvider"]
    assert record["engine_info"]["options"]["intra_op_threads"] == 1


def test_throughput_and_compare(run_cli, results_dir):
    code, out, err = run_cli("throughput", "resnet20", "--batch", "1,2", *FAST, "--out", results_dir)
    assert code == 0, err
    (record,) = read_records(results_dir / "throughput.jsonl")
    assert record["batch"] in (1, 2) and [s["batch"] for s in record["sweep"]] == [1, 2]
    assert record["throughput_img_s"] == max(s["throughput_img_s"] for s in record["sweep"])

    code, out, err = run_cli("compare", "resnet20", "plain20", "--engine", "torch", *FAST, "--markdown", "--out", results_dir)
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | engine") and len(table) == 3
    assert any("plain20" in line for line in table)


def test_flops_record(run_cli, results_dir):
    code, out, err = run_cli("flops", "resnet20", "--detail", "--out", results_dir)
    assert code == 0, err
    (record,) = read_records(results_dir / "flops.jsonl")
    assert record["kind"] == "flops" and record["params"] > 0
    assert record["flops"] == pytest.approx(2 * record["macs"], rel=0.05)
    assert "layer1" in record["per_module"]


def test_device_and_engines(run_cli, results_dir):
    code, out, err = run_cli("device", "--budget-s", "0.01", "--out", results_dir)
    assert code == 0, err
    (record,) = read_records(results_dir / "device.jsonl")
    assert record["peaks"]["cpu"]["peak_flops_s_fp32"] > 0
    code, out, err = run_cli("engines", "--json")
    assert code == 0 and any(row["engine"] == "trt" for row in json.loads(out))


BAD = [
    (2, ("--batch", "0"), "at least 1"),
    (2, ("--batch", "-4"), "at least 1"),
    (2, ("--batch", "1,x"), "positive integers"),
    (2, ("--engine", "tflite"), "unknown engine"),
    (2, ("--precision", "int3"), "int3"),
    (2, ("--engine", "ort", "--provider", "bogus"), "unknown provider"),
    (2, ("--iters", "0"), "--iters"),
    (2, ("--iters", "3", "--duration", "1"), "not both"),
    (1, ("--device", "cuda"), "GPU"),
    (1, ("--engine", "trt"), "TensorRT"),
]


@pytest.mark.parametrize("expected_code, args, message", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(run_cli, results_dir, expected_code, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if "trt" in args:
        from export.tensorrt import trt_status

        if trt_status()[0]:
            pytest.skip("TensorRT works here")
    code, out, err = run_cli("latency", "resnet20", *args, "--out", results_dir)
    assert code == expected_code, err
    assert err.startswith("rbench: error:") and message in err and len(err.strip().splitlines()) == 1
    assert list(results_dir.iterdir()) == []


def test_fp16_on_this_cpu(run_cli, results_dir):
    ok, why = cpu_precision_support("fp16")
    if ok:
        pytest.skip(f"this CPU runs fp16 ({why})")
    code, out, err = run_cli("latency", "resnet20", "--precision", "fp16", "--out", results_dir)
    assert code == 1 and "fp16" in err and list(results_dir.iterdir()) == []


def test_unknown_model(run_cli, results_dir):
    code, out, err = run_cli("latency", "resnet21", "--out", results_dir)
    assert code == 2 and "resnet20" in err and list(results_dir.iterdir()) == []


def test_out_of_memory_at_one_batch_is_reported_and_the_run_goes_on(run_cli, results_dir, monkeypatch):
    import bench.measure.timing

    real = bench.measure.timing.measure_latency

    def fake(engine, batch, **kw):
        if batch.shape[0] == 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(engine, batch, **kw)

    monkeypatch.setattr(bench.measure.timing, "measure_latency", fake)
    code, out, err = run_cli("latency", "resnet20", "--batch", "1,4,2", *FAST, "--out", results_dir)
    assert code == 0, err
    assert "out of memory at batch 4" in out
    records = read_records(results_dir / "latency.jsonl")
    assert [r["batch"] for r in records] == [1, 4, 2]
    assert records[1]["error"] and records[1]["latency_ms_p50"] is None and records[2]["latency_ms_p50"] > 0
    assert set(records[1]) == set(records[0]), "an error record has the same keys, its metrics None"


# -- --out is checked before any measuring ------------------------------------------------
def _no_measuring(monkeypatch):
    import bench.measure.run

    def refuse(*args, **kwargs):
        raise AssertionError("measured before checking --out")

    for name in ("latency", "compare", "profile"):
        monkeypatch.setattr(bench.measure.run, name, refuse)


@pytest.mark.parametrize("command", [("latency", "resnet20"), ("throughput", "resnet20"),
                                     ("compare", "resnet20", "plain20"), ("flops", "resnet20")])
def test_out_under_a_file_fails_before_measuring(run_cli, tmp_path, monkeypatch, command):
    _no_measuring(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(*command, "--out", blocker / "results")
    assert code == 2, err
    assert err.startswith("rbench: error: --out") and "is a file" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_out_whose_records_file_is_a_folder_fails_before_measuring(run_cli, results_dir, monkeypatch):
    _no_measuring(monkeypatch)
    (results_dir / "latency.jsonl").mkdir()
    code, out, err = run_cli("latency", "resnet20", "--out", results_dir)
    assert code == 2 and "latency.jsonl is a folder" in err and len(err.strip().splitlines()) == 1


def test_out_not_writable_fails_before_measuring(run_cli, tmp_path, monkeypatch):
    import bench.commands.measure as commands

    _no_measuring(monkeypatch)
    monkeypatch.setattr(commands.os, "access", lambda path, mode: False)  # tests may run as root
    code, out, err = run_cli("throughput", "resnet20", "--out", tmp_path / "new" / "results")
    assert code == 1 and "not writable" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_out_that_does_not_exist_yet_is_made(run_cli, tmp_path):
    out = tmp_path / "deep" / "results"
    code, out_text, err = run_cli("latency", "resnet20", *FAST, "--out", out)
    assert code == 0, err
    assert len(read_records(out / "latency.jsonl")) == 1


# -- fp16 on a CPU without fp16 arithmetic: advice that works for each engine ---------------------
def test_ort_fp16_on_cpu_advises_what_ort_takes(run_cli, results_dir, monkeypatch):
    import bench.engines.torch_engine as torch_engine

    monkeypatch.setattr(torch_engine, "cpu_precision_support",
                        lambda precision: (False, "this CPU has no fp16 arithmetic (avx512_fp16/amx_fp16); use "
                                                  "--precision bf16 or --device cuda"))
    code, out, err = run_cli("latency", "resnet20", "--engine", "ort", "--precision", "fp16", "--out", results_dir)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "onnxruntime" in err and "--engine ort --precision fp32" in err and "--engine torch --precision bf16" in err
    assert "use --precision bf16" not in err, "onnxruntime refuses bf16"
    assert list(results_dir.iterdir()) == []
    code, out, err = run_cli("latency", "resnet20", "--engine", "torch", "--precision", "fp16", "--out", results_dir)
    assert code == 1 and "--precision bf16" in err, "for torch, bf16 is the right advice"


def test_ort_fp16_on_this_cpu_is_refused_with_working_advice(run_cli, results_dir):
    ok, why = cpu_precision_support("fp16")
    if ok:
        pytest.skip(f"this CPU runs fp16 ({why})")
    code, out, err = run_cli("latency", "resnet20", "--engine", "ort", "--precision", "fp16", "--out", results_dir)
    assert code == 1 and "--precision fp32" in err and list(results_dir.iterdir()) == []


# -- `rbench device` fails when it cannot save its peak -----------------------------------------
def test_device_with_an_unusable_cache_fails_before_measuring(run_cli, results_dir, tmp_path, monkeypatch):
    import bench.measure.device

    def refuse(*args, **kwargs):
        raise AssertionError("measured a peak that cannot be saved")

    monkeypatch.setattr(bench.measure.device, "measure_peak", refuse)
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("RBENCH_CACHE", str(blocker))
    code, out, err = run_cli("device", "--budget-s", "0.01", "--out", results_dir)
    assert code == 1, err
    assert "cache folder" in err and "RBENCH_CACHE" in err and len(err.strip().splitlines()) == 1
    assert list(results_dir.iterdir()) == []


def test_device_that_cannot_write_its_peak_fails(run_cli, results_dir, tmp_path, monkeypatch):
    import bench.atomic
    import bench.measure.device

    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench.measure.device, "measure_peak", lambda device, budget_s, size: {
        "device": device, "peak_flops_s_fp32": 1e9, "memory_bandwidth_bytes_s": 1e9})

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench.atomic, "write_text", disk_full)
    code, out, err = run_cli("device", "--refresh", "--budget-s", "0.01", "--out", results_dir)
    assert code == 1, err
    assert "cannot save it" in err and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert list(results_dir.iterdir()) == []
