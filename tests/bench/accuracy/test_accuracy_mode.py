"""The ladder in MLPerf's accuracy mode on an evaluation-only folder: torchvision weights, int8 calibrated elsewhere."""

from __future__ import annotations

import importlib.util

import pytest

from bench.errors import UsageProblem
from tests.bench.data.test_eval_folder import SMALL, make_eval_folder

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")


def test_ladder_on_eval_only_folder_calibrates_on_another(tv_resnet18, tmp_path):
    from bench.measure.run import Settings
    from bench.scenarios.ladder import LADDER_COLUMNS, ladder_rows_table, run_ladder

    val = make_eval_folder(tmp_path / "val_only")
    calibration = make_eval_folder(tmp_path / "calibration", split=None, seed=1)
    result = run_ladder(tv_resnet18, workdir=tmp_path / "work", rungs=[("torch", "fp32"), ("ort", "fp32"), ("ort", "int8")],
                        model_name="resnet18", dataset=f"imagefolder:{val}", calibration=f"imagefolder:{calibration}:6",
                        eval_transform=SMALL, batch=1, throughput_batch=None,
                        settings=Settings(iters=3, warmup=1, rounds=1))
    rows = {(r["engine"], r["precision"]): r for r in result.rows}
    assert rows[("torch", "fp32")]["top1_ratio"] in (1.0, None) and rows[("torch", "fp32")]["passed"]
    assert rows[("ort", "fp32")]["passed"] and rows[("ort", "fp32")]["agreement"] == 1.0
    assert rows[("ort", "int8")]["passed"] in (True, False) and rows[("ort", "int8")]["threshold"] == 0.99
    assert all(r["samples"] == 12 for r in result.rows)
    calibrated = result.int8["calibration"]
    assert calibrated["images"] == 6 and calibrated["split"] == "all images (no train/)"
    assert calibrated["eval_transform"]["crop_size"] == 32 and result.int8["check"]["images"] == 12
    cells = ladder_rows_table(result.rows)
    assert all(len(c) == len(LADDER_COLUMNS) for c in cells)
    assert any(c[6].endswith("pass") for c in cells)


def test_calibrating_on_the_evaluated_folder_is_refused(tv_resnet18, tmp_path):
    from bench.scenarios.ladder import run_ladder

    val = make_eval_folder(tmp_path / "val_only")
    with pytest.raises(UsageProblem, match="no train/ folder.*--calibration imagefolder:OTHER"):
        run_ladder(tv_resnet18, workdir=tmp_path / "work", rungs=[("ort", "int8")], model_name="resnet18",
                   dataset=f"imagefolder:{val}", eval_transform=SMALL, throughput_batch=None)


@pytest.mark.parametrize("args, expected", [
    (("--eval-transform", "imagenet:100:200"), "crop must not be larger than the resize"),
    (("--threshold", "1.5"), "--threshold"),
])
def test_ladder_cli_bad_options(run_cli, tv_resnet18, tmp_path, args, expected):
    code, _, err = run_cli("ladder", "resnet18", "--checkpoint", tv_resnet18, "--dataset", f"imagefolder:{tmp_path}",
                           *args, "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
