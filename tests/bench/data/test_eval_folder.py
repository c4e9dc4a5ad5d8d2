"""Evaluation-only folders and torchvision checkpoints in `rbench accuracy`: MLPerf's accuracy mode, one-line errors.

A torchvision ResNet-18 with random weights (3 classes, saved as torchvision saves a state dict) stands
in for published weights; the folder holds only val/, JPEGs of mixed sizes, a greyscale and an RGBA file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bench.accuracy.evaluate import accuracy_mode, dataset_for_checkpoint, evaluate_checkpoint, load_trained_model
from bench.data import EvalImages, load_dataset, read_class_index, scan_eval_folder
from bench.errors import DataProblem, UsageProblem
from bench.records.io import read_records

CLASSES = ("n01440764", "n01443537", "n01484850")  # ImageNet synsets: the order a class index gives
SIZES = ((48, 36), (36, 52), (40, 40), (70, 33))
SMALL = "imagenet:40:32"  # the ImageNet preset at a size a 2-core test can afford

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default results/ folder must never land in the checkout


def make_eval_folder(root: Path, split: str | None = "val", seed: int = 0) -> Path:
    """root/val/<synset>/<i>.JPEG (or root/<synset>/ without a split): colour cues, mixed sizes and modes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for index, cls in enumerate(CLASSES):
        (base / cls).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(SIZES):
            pixels = np.clip(rng.normal(60 + 70 * index, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i == 2 and index == 0:
                image.convert("L").save(base / cls / f"{i}.JPEG")
            elif i == 3 and index == 1:
                image.convert("RGBA").save(base / cls / f"{i}.png")
            else:
                image.save(base / cls / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture
def eval_folder(tmp_path) -> Path:
    return make_eval_folder(tmp_path / "imagenet")


def test_torchvision_checkpoint_is_recognised(tv_resnet18):
    ckpt = load_trained_model(tv_resnet18, "resnet18")
    assert ckpt.config == {"name": "resnet18", "num_classes": 3, "in_chans": 3}
    assert ckpt.torchvision["architecture"] == "resnet18" and ckpt.torchvision["published"] is None
    assert ckpt.normalization["mean"] == [0.485, 0.456, 0.406] and ckpt.eval_transform["resize_size"] == 256
    assert len(ckpt.sha256) == 64 and ckpt.input_shape == (3, 224, 224)
    with pytest.raises(UsageProblem, match="torchvision resnet18 state dict, not resnet50"):
        load_trained_model(tv_resnet18, "resnet50")


def test_scan_orders_classes_as_torchvision(eval_folder):
    from torchvision.datasets import ImageFolder

    scan = scan_eval_folder(eval_folder)
    reference = ImageFolder(eval_folder / "val")
    assert scan["classes"] == reference.classes and scan["test_split"] == "val" and not scan["train"]
    assert [(Path(p).name, y) for p, y in scan["test"]] == [(Path(p).name, y) for p, y in reference.samples]


@needs_ort
def test_eval_only_folder_torch_and_ort_agree(tv_resnet18, eval_folder):
    """The issue's 'done when': a val/-only folder through torch and onnxruntime, identical predictions."""
    ckpt = load_trained_model(tv_resnet18, "resnet18")
    bundle = dataset_for_checkpoint(ckpt, f"imagefolder:{eval_folder}", eval_transform=SMALL)
    assert isinstance(bundle.test, EvalImages) and len(bundle.test) == 12 and len(bundle.train) == 0
    assert bundle.input_size == 32 and ckpt.input_shape == (3, 32, 32)
    seen = []
    torch_result, ort_result = evaluate_checkpoint(ckpt, bundle, ("torch", "ort"), batch_size=5, workers=2,
                                                   on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (12, 12)
    assert ort_result["confusion_matrix"] == torch_result["confusion_matrix"] and ort_result["agreement"] == 1.0
    assert ort_result["top1"] == torch_result["top1"] and ort_result["max_abs_logit_diff"] < 1e-3
    assert torch_result["top1_ratio"] in (1.0, None) and ort_result["passed"] and torch_result["passed"]
    assert ort_result["samples"] == 12 and ort_result["images_per_s"] > 0 and ort_result["wall_s"] > 0
    assert ort_result["threshold"] == 0.99 and 0.0 <= ort_result["top5"] <= 1.0


def test_accuracy_mode_verdicts():
    results = [{"engine": "torch", "top1": 0.80, "top5": 0.95}, {"engine": "ort", "top1": 0.795, "top5": 0.95},
               {"engine": "trt", "top1": 0.78, "top5": 0.94}]
    judged = accuracy_mode(results, 0.99)
    assert [r["passed"] for r in judged] == [True, True, False]
    assert judged[1]["top1_ratio"] == pytest.approx(0.99375) and judged[2]["top5_ratio"] == pytest.approx(0.94 / 0.95, abs=1e-6)
    with pytest.raises(UsageProblem, match="threshold"):
        accuracy_mode(results, 1.5)


def test_class_index_orders_labels(tmp_path):
    folder = make_eval_folder(tmp_path / "flat", split=None)  # only class folders, no val/
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"0": [CLASSES[2], "goldfish"], "1": [CLASSES[0], "tench"],
                                 "2": [CLASSES[1], "shark"], "3": ["n99999999", "unseen"]}))
    assert read_class_index(index) == ([CLASSES[2], CLASSES[0], CLASSES[1], "n99999999"],
                                       ["goldfish", "tench", "shark", "unseen"])
    bundle = load_dataset(f"imagefolder:{folder}", eval_only=True, class_index=index, eval_transform=SMALL)
    assert bundle.num_classes == 4 and bundle.class_names[1] == "tench"
    labels = {Path(p).parent.name: y for p, y in bundle.test.samples}
    assert labels == {CLASSES[2]: 0, CLASSES[0]: 1, CLASSES[1]: 2}
    index.write_text(json.dumps([CLASSES[0], CLASSES[1], "n02000000"]))
    with pytest.raises(DataProblem, match=f"does not match .*{CLASSES[2]}"):
        load_dataset(f"imagefolder:{folder}", eval_only=True, class_index=index)


def test_training_still_needs_train(eval_folder):
    with pytest.raises(DataProblem, match="no train/ folder"):
        load_dataset(f"imagefolder:{eval_folder}")
    with pytest.raises(UsageProblem, match="not to training"):
        load_dataset(f"imagefolder:{eval_folder}", eval_transform="imagenet")


# --------------------------------------------------------------------------- the command line


def _one_line_error(code: int, err: str, expected_code: int) -> str:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    return lines[0]


def test_cli_accuracy_on_eval_folder(run_cli, tv_resnet18, eval_folder, results_dir):
    code, out, err = run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                             f"imagefolder:{eval_folder}", "--eval-transform", SMALL, "--engine", "torch",
                             "--workers", "0", "--batch-size", "8", "--json", "--out", results_dir)
    assert code == 0, err
    (printed,) = [json.loads(line) for line in out.splitlines()]
    (stored,) = read_records(results_dir / "accuracy.jsonl")
    assert printed["passed"] is True and printed["threshold"] == 0.99 and printed["samples"] == stored["samples"] == 12
    assert stored["passed"] is True and stored["threshold"] == 0.99 and stored["images_per_s"] > 0, "the verdict is kept"
    assert stored["dataset"]["eval_transform"]["resize_size"] == 40 and stored["dataset"]["eval_only"] is True
    assert stored["input_shape"] == [3, 32, 32]
    code, out, err = run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                             f"imagefolder:{eval_folder}", "--eval-transform", SMALL, "--engine", "torch",
                             "--workers", "0", "--out", results_dir)
    assert code == 0, err
    assert "top-1 ratio" in out and "pass" in out and "12 images in" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_accuracy_exits_1_when_an_engine_fails_the_threshold(run_cli, tv_resnet18, eval_folder, results_dir,
                                                                   monkeypatch, as_json):
    """A FAIL verdict is a CI gate: the records are written, one line names the engine, and the exit code is 1."""
    import bench.accuracy.evaluate

    real = bench.accuracy.evaluate.evaluate_checkpoint

    def one_fails(*args, **kwargs):  # torch twice (same numbers); the second is marked below the threshold
        results = real(*args, **kwargs)
        return [results[0], {**results[0], "precision": "bf16", "passed": False}]

    monkeypatch.setattr(bench.accuracy.evaluate, "evaluate_checkpoint", one_fails)
    code, out, err = run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                             f"imagefolder:{eval_folder}", "--eval-transform", SMALL, "--engine", "torch",
                             "--workers", "0", "--out", results_dir, *(["--json"] if as_json else []))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("rbench: accuracy: below 99% of torch fp32's top-1: torch bf16")
    assert [r["passed"] for r in read_records(results_dir / "accuracy.jsonl")] == [True, False]


def test_cli_unreadable_image_and_skip(run_cli, tv_resnet18, eval_folder, results_dir):
    broken = eval_folder / "val" / CLASSES[1] / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset", f"imagefolder:{eval_folder}",
            "--eval-transform", SMALL, "--engine", "torch", "--workers", "0", "--out", results_dir)
    line = _one_line_error(*run_cli(*args)[::2], 1)
    assert "broken.JPEG" in line and "--skip-bad-images" in line
    # Decoded in a worker process, the error still reaches the user as one line, not the worker's traceback.
    assert _one_line_error(*run_cli(*args[:-4], "--workers", "2", *args[-2:])[::2], 1) == line
    assert not (results_dir / "accuracy.jsonl").exists()
    code, out, err = run_cli(*args, "--skip-bad-images")
    assert code == 0, err
    assert "skipped 1 unreadable image(s)" in out and "broken.JPEG" in out
    (stored,) = read_records(results_dir / "accuracy.jsonl")
    assert stored["samples"] == 12


@pytest.mark.parametrize("args, expected, code", [
    (("--eval-transform", "imagenet:224:256"), "crop must not be larger than the resize", 2),
    (("--eval-transform", "inception"), "unknown --eval-transform", 2),
    (("--engine", "torch,torch"), "listed twice", 2),
])
def test_cli_bad_options(run_cli, tv_resnet18, eval_folder, results_dir, args, expected, code):
    line = _one_line_error(*run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                                    f"imagefolder:{eval_folder}", *args, "--out", results_dir)[::2], code)
    assert expected in line


def test_cli_other_architecture_and_bad_index(run_cli, tv_resnet18, eval_folder, tmp_path, results_dir):
    line = _one_line_error(*run_cli("accuracy", "resnet50", "--checkpoint", tv_resnet18, "--dataset",
                                    f"imagefolder:{eval_folder}", "--out", results_dir)[::2], 2)
    assert "resnet18" in line and "resnet50" in line
    index = tmp_path / "index.json"
    index.write_text(json.dumps([CLASSES[0], "n00000001", "n00000002"]))
    line = _one_line_error(*run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                                    f"imagefolder:{eval_folder}", "--class-index", index, "--eval-transform", SMALL,
                                    "--out", results_dir)[::2], 1)
    assert "does not match" in line and CLASSES[1] in line
    assert not list(results_dir.iterdir())


def test_cli_published_weights_are_named(run_cli, tv_resnet18, eval_folder, results_dir, monkeypatch):
    """A file recognised as published weights (table patched to this file's hash): its figures are printed, and
    a transform other than the weights' own is pointed out."""
    from export import checkpoint as ckpt_module
    from export.checkpoint import load_checkpoint, published_weights

    entry = dict(published_weights("f37072fd" + "0" * 56), hash_prefix=load_checkpoint(tv_resnet18).sha256[:8],
                 num_classes=3)
    monkeypatch.setattr(ckpt_module, "_published_table", lambda: (entry,))
    code, out, err = run_cli("accuracy", "resnet18", "--checkpoint", tv_resnet18, "--dataset",
                             f"imagefolder:{eval_folder}", "--eval-transform", SMALL, "--engine", "torch",
                             "--workers", "0", "--out", results_dir)
    assert code == 0, err
    assert "torchvision publishes top-1 69.758% / top-5 89.078%" in out and "resnet18-f37072fd.pth" in out
    assert "measured with --eval-transform imagenet:256:224, not imagenet:40:32" in err
