"""The int8 export from a trained checkpoint, the ladder of (engine, precision) rungs, and their bad inputs."""

from __future__ import annotations

import json

import pytest

from bench.errors import UsageProblem
from bench.records.io import read_records, validate_record

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'rbench[openvino]')")

LENIENT = ("--min-agreement", "0.5", "--min-accuracy-ratio", "0.5")  # a 2-epoch digits net has near ties


@pytest.fixture(scope="module")
def int8_export(trained_digits_run, tmp_path_factory):
    """`rbench export --precision int8` of the shared digits run: (exit code, stdout, stderr, out folder)."""
    from bench.cli import main

    out = tmp_path_factory.mktemp("int8")
    code = main(["export", "resnet20", "--checkpoint", str(trained_digits_run / "best.pt"), "--precision", "int8",
                 "--calibration", "digits:64", "--out", str(out), *LENIENT])
    return code, out


def test_int8_export_writes_a_checked_qdq_file_and_its_manifest(int8_export, capsys):
    from export.quantize import is_quantized, read_input

    code, out = int8_export
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["resnet20-int8.onnx", "resnet20-int8.onnx.json"]
    onnx_file = out / "resnet20-int8.onnx"
    assert is_quantized(onnx_file) and read_input(onnx_file)[1][1:] == [1, 16, 16]  # the size it was trained at
    manifest = json.loads((out / "resnet20-int8.onnx.json").read_text())
    assert manifest["onnx"]["precision"] == "int8" and manifest["onnx"]["file"] == "resnet20-int8.onnx"
    int8 = manifest["int8"]
    assert int8["sha256"] == manifest["onnx"]["sha256"] and int8["method"] == "minmax"
    assert int8["calibration"]["split"] == "train" and int8["calibration"]["dataset"] == "digits"
    assert int8["calibration_images"] == 64 and int8["quantized_ops"]["Conv"] == 19
    check = int8["check"]
    assert check["passed"] and check["images"] > 100 and 0.5 <= check["top1_agreement"] <= 1.0
    assert manifest["parity"]["passed"]  # the fp32 export it came from matched PyTorch


def test_int8_file_measures_on_ort_and_openvino(int8_export, run_cli, results_dir):
    _, out = int8_export
    code, stdout, err = run_cli("latency", out / "resnet20-int8.onnx", "--engine", "ort,openvino", "--precision", "int8",
                                "--iters", "5", "--warmup", "1", "--out", results_dir)
    assert code == 0, err
    records = read_records(results_dir / "latency.jsonl")
    assert [(r["engine"], r["precision"]) for r in records] == [("ort", "int8"), ("openvino", "int8")]
    code, _, err = run_cli("latency", out / "resnet20-int8.onnx", "--engine", "ort", "--iters", "2", "--out", results_dir)
    assert code == 2 and "--precision int8" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, match", [
    (("--precision", "int8"), "--checkpoint"),  # random weights: nothing to calibrate
    (("--precision", "int8", "--calibration", "digits:0", "--checkpoint", "CKPT"), "at least 1 image"),
    (("--calibration", "digits:10", "--checkpoint", "CKPT"), "applies to --precision int8"),
    (("--activations", "s8", "--checkpoint", "CKPT"), "applies to --precision int8"),
])
def test_int8_export_bad_requests_are_one_line_and_write_nothing(run_cli, tmp_path, trained_digits_run, args, match):
    args = [str(trained_digits_run / "best.pt") if a == "CKPT" else a for a in args]
    code, _, err = run_cli("export", "resnet20", *args, "--out", tmp_path / "out")
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_int8_calibration_of_other_images_is_refused(run_cli, tmp_path, trained_digits_run):
    from tests.bench.conftest import make_synthetic_imagefolder

    folder = make_synthetic_imagefolder(tmp_path / "rgb", size=16)  # 3 channels; the net takes 1
    code, _, err = run_cli("export", "resnet20", "--checkpoint", trained_digits_run / "best.pt", "--precision", "int8",
                           "--calibration", f"imagefolder:{folder}:16", "--out", tmp_path / "out")
    assert code == 2 and "calibrate on the data the model was trained on" in err, err
    assert not (tmp_path / "out" / "resnet20-int8.onnx").exists()


def test_ladder_cli_measures_every_chosen_rung(run_cli, tmp_path, trained_digits_run):
    out = tmp_path / "ladder"
    code, stdout, err = run_cli("ladder", "resnet20", "--checkpoint", trained_digits_run / "best.pt", "--rungs",
                                "ort:fp32,ort:int8,openvino:int8,trt:fp16", "--iters", "4", "--warmup", "1",
                                "--rounds", "2", "--throughput-batch", "0", "--test-limit", "120", "--calibration",
                                "digits:64", "--out", out, "-q")
    assert code == 0, err
    assert {"ladder.md", "ladder.png", "ladder.json", "latency.jsonl", "comparison.jsonl", "accuracy.jsonl"} <= \
        {p.name for p in out.iterdir()}
    payload = json.loads((out / "ladder.json").read_text())
    rows = {(r["engine"], r["precision"]): r for r in payload["rows"]}
    assert list(rows) == [("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("openvino", "int8"), ("trt", "fp16")]
    assert not rows[("trt", "fp16")]["runs"] and "TensorRT" in rows[("trt", "fp16")]["reason"]  # listed, with why
    for key in [("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("openvino", "int8")]:
        row = rows[key]
        assert row["runs"] and row["p50_ms"] > 0 and 0 <= row["top1"] <= 1 and row["samples"] == 120
        assert row["size_bytes"] > 0 and row["speedup"] > 0
    assert rows[("torch", "fp32")]["agreement"] == 1.0 and rows[("ort", "fp32")]["agreement"] == 1.0
    assert rows[("ort", "int8")]["size_bytes"] < 0.6 * rows[("ort", "fp32")]["size_bytes"]
    assert any(r.get("pareto") for r in payload["rows"])
    assert payload["int8"]["calibration"]["split"] == "train"
    for name in ("latency", "comparison", "accuracy"):
        for record in read_records(out / f"{name}.jsonl"):
            validate_record(record)
    comparisons = read_records(out / "comparison.jsonl")
    assert len(comparisons) == 3 and all(c["interleaved"] for c in comparisons)
    assert "torch | fp32" in (out / "ladder.md").read_text()


@pytest.mark.parametrize("args, match", [
    (("--rungs", "ort:fp64"), "unknown rung"),
    (("--calibration", "digits:0"), "at least 1 image"),
])
def test_ladder_bad_requests(run_cli, tmp_path, trained_digits_run, args, match):
    code, _, err = run_cli("ladder", "resnet20", "--checkpoint", trained_digits_run / "best.pt", *args,
                           "--out", tmp_path / "out")
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_ladder_refuses_another_architecture(run_cli, tmp_path, trained_digits_run):
    code, _, err = run_cli("ladder", "resnet56", "--checkpoint", trained_digits_run / "best.pt", "--out", tmp_path / "o")
    assert code == 2 and "holds a resnet20" in err


def test_a_cpu_without_bf16_lists_the_rung_with_its_reason(monkeypatch, trained_digits_run, tmp_path):
    import bench.engines.openvino_engine as ov_engine
    from bench.measure.run import Settings
    from bench.scenarios.ladder import run_ladder

    monkeypatch.setattr(ov_engine, "bf16_support", lambda: (False, "this CPU has no bf16 arithmetic"))
    result = run_ladder(trained_digits_run / "best.pt", workdir=tmp_path, rungs=[("torch", "fp32"), ("openvino", "bf16")],
                        settings=Settings(iters=3, warmup=1, rounds=2), throughput_batch=None, test_limit=60)
    bf16 = result.rows[1]
    assert not bf16["runs"] and "no bf16" in bf16["reason"] and bf16.get("p50_ms") is None
    assert result.rows[0]["runs"] and result.rows[0]["p50_ms"] > 0


def test_pareto_front_and_rung_parsing():
    from bench.accuracy.calibration import DEFAULT_CALIBRATION_IMAGES, parse_calibration
    from bench.scenarios.ladder import REFERENCE, pareto_front, parse_rungs

    rows = [{"p50_ms": 10, "top1": 0.90}, {"p50_ms": 2, "top1": 0.90}, {"p50_ms": 1, "top1": 0.85},
            {"p50_ms": 3, "top1": 0.80}, {"p50_ms": None, "top1": None}]
    assert pareto_front(rows) == [1, 2]  # 0 is beaten by 1 (as accurate, faster); 3 by 2 (faster and better)
    assert parse_rungs("ort:int8,openvino:bf16,ort:int8")[0] == REFERENCE
    assert parse_rungs("ort") == [REFERENCE, ("ort", "fp32")]
    with pytest.raises(UsageProblem):
        parse_rungs("torch:int8")
    assert parse_calibration(None) == (None, DEFAULT_CALIBRATION_IMAGES)
    assert parse_calibration("imagefolder:/data/x:300") == ("imagefolder:/data/x", 300)
    assert parse_calibration("fashion-mnist") == ("fashion-mnist", DEFAULT_CALIBRATION_IMAGES)
    assert parse_calibration("200") == (None, 200)
