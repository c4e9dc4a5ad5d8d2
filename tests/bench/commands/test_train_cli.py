"""`rbench train` and `rbench accuracy` end to end, and their one-line errors."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench.records.io import read_records


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default results/ or runs/ folder must never land in the checkout


def _one_line_error(code: int, err: str, expected_code: int | None = None) -> str:
    assert code != 0
    if expected_code is not None:
        assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    return lines[0]


def test_train_then_accuracy(run_cli, tmp_path, results_dir):
    run = tmp_path / "run"
    code, out, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "300", "--input-size", "8",
                             "--epochs", "1", "--optimizer", "adam", "--batch-size", "32", "--augment", "crop,flip",
                             "--out", run, "--results", results_dir, "-q")
    assert code == 0, err
    assert "best val acc" in out and (run / "best.pt").exists() and (run / "curves.png").exists()
    (record,) = read_records(results_dir / "train.jsonl")
    assert record["kind"] == "train" and record["model"] == "resnet20" and len(record["history"]) == 1
    assert record["dataset"]["name"] == "digits" and record["train_img_s"] > 0

    engines = "torch,ort" if importlib.util.find_spec("bench.engines") else "torch"
    code, out, err = run_cli("accuracy", "resnet20", "--checkpoint", run / "best.pt", "--engine", engines,
                             "--subset", "100", "--json", "--out", results_dir)
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    stored = read_records(results_dir / "accuracy.jsonl")
    assert [r["engine"] for r in stored] == engines.split(",") == [r["engine"] for r in printed]
    assert all(r["kind"] == "accuracy" and r["samples"] == 100 for r in stored)
    assert len({r["top1"] for r in stored}) == 1  # ort scores what torch scores


def test_unknown_dataset(run_cli, results_dir):
    code, _, err = run_cli("train", "resnet20", "--dataset", "nope", "--results", results_dir)
    line = _one_line_error(code, err, 2)
    assert "fashion-mnist" in line and "imagefolder:PATH" in line
    assert not list(results_dir.iterdir())


def test_empty_data_root(run_cli, tmp_path, results_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("train", "resnet20", "--dataset", "fashion-mnist", "--data-root", empty,
                           "--results", results_dir)
    line = _one_line_error(code, err, 1)
    assert "train-images-idx3-ubyte" in line and str(empty) in line
    assert not list(results_dir.iterdir())


def test_mismatched_imagefolder(run_cli, mismatched_imagefolder, results_dir):
    code, _, err = run_cli("train", "resnet20", "--dataset", f"imagefolder:{mismatched_imagefolder}",
                           "--results", results_dir)
    assert "different classes" in _one_line_error(code, err, 1)
    assert not list(results_dir.iterdir())


def test_nan_loss(run_cli, tmp_path, results_dir):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "100", "--input-size", "8",
                           "--lr", "1e30", "--out", tmp_path / "run", "--results", results_dir, "-q")
    line = _one_line_error(code, err, 1)
    assert "diverged" in line and "nan" in line.lower()
    assert not list(results_dir.iterdir())


def test_unknown_model_and_foreign_checkpoint(run_cli, trained_digits_run, results_dir):
    code, _, err = run_cli("train", "resnet21", "--dataset", "digits", "--results", results_dir)
    assert "resnet20" in _one_line_error(code, err, 2)  # near matches
    code, _, err = run_cli("accuracy", "vgg11", "--checkpoint", trained_digits_run / "best.pt", "--out", results_dir)
    assert "holds a resnet20 model" in _one_line_error(code, err, 2)
    assert not list(results_dir.iterdir())
