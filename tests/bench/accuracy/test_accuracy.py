"""bench.accuracy.evaluate: checkpoint accuracy per engine; ONNX Runtime must agree with PyTorch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import nets
from bench.accuracy.evaluate import batches_for_checkpoint, dataset_for_checkpoint, evaluate_checkpoint, evaluate_engine, load_trained_model
from bench.errors import DataProblem, UsageProblem
from bench.train.loop import TrainConfig, checkpoint_payload, save_checkpoint

needs_engines = pytest.mark.skipif(importlib.util.find_spec("bench.engines") is None,
                                   reason="bench.engines (torch/ort engines) is not in this checkout yet")


class _ModelEngine:
    """The smallest engine: anything with infer(np.ndarray) -> np.ndarray."""

    def __init__(self, model):
        self.model = model

    def infer(self, batch):
        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()


def test_checkpoint_round_trip_and_plain_engine(trained_digits_run):
    ckpt = load_trained_model(trained_digits_run / "best.pt", model_name="resnet20")
    assert ckpt.input_shape == (1, 16, 16) and not ckpt.model.training
    bundle = dataset_for_checkpoint(ckpt)
    assert bundle.input_size == 16 and len(bundle.test) == 359  # the full digits test split
    metrics, logits = evaluate_engine(_ModelEngine(ckpt.model), batches_for_checkpoint(ckpt, bundle, 100), 10,
                                      bundle.class_names, pad_to=100)
    assert logits.shape == (359, 10) and metrics["samples"] == 359
    assert metrics["top1"] > 0.25 and len(metrics["per_class"]) == 10
    assert np.array(metrics["confusion_matrix"]).sum() == 359


@needs_engines
def test_onnx_runtime_accuracy_equals_torch(trained_digits_run):
    ckpt = load_trained_model(trained_digits_run / "best.pt")
    bundle = dataset_for_checkpoint(ckpt)
    torch_result, ort_result = evaluate_checkpoint(ckpt, bundle, engines=("torch", "ort"), batch_size=128)
    assert torch_result["engine"] == "torch" and ort_result["reference_engine"] == "torch"
    assert ort_result["top1"] == torch_result["top1"] and ort_result["top1_delta"] == 0.0
    assert ort_result["confusion_matrix"] == torch_result["confusion_matrix"]
    assert ort_result["agreement"] == 1.0 and ort_result["max_abs_logit_diff"] < 1e-3
    assert ort_result["engine_info"]["backend"] == "ort"


def test_another_architecture_is_a_usage_problem(trained_digits_run):
    with pytest.raises(UsageProblem, match="holds a resnet20 model, not resnet56"):
        load_trained_model(trained_digits_run / "best.pt", model_name="resnet56")


def test_weights_that_do_not_fit_are_a_usage_problem(tmp_path):
    from bench.data import load_dataset

    bundle = load_dataset("digits", subset=60, input_size=8)
    model = nets.create_model("resnet20", num_classes=10, in_chans=1)
    payload = checkpoint_payload(model, bundle, 1, 0.5, TrainConfig(), [])
    payload["config"]["num_classes"] = 7  # the config lies about the weights
    save_checkpoint(payload, tmp_path / "bad.pt")
    with pytest.raises(UsageProblem, match="does not fit"):
        load_trained_model(tmp_path / "bad.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(DataProblem):
        load_trained_model(tmp_path / "junk.pt")
    with pytest.raises(DataProblem, match="does not exist"):
        load_trained_model(tmp_path / "missing.pt")


def test_channel_subsets_naive_and_matched(tmp_path, synthetic_imagefolder):
    """A 3-channel model runs on RG averaged to 3 planes (the naive way); select mode needs a 2-channel net."""
    from bench.data import load_dataset

    bundle = load_dataset(f"imagefolder:{synthetic_imagefolder}")
    model = nets.create_model("resnet20", num_classes=3, in_chans=3)
    save_checkpoint(checkpoint_payload(model, bundle, 1, 0.5, TrainConfig(), []), tmp_path / "rgb.pt")
    ckpt = load_trained_model(tmp_path / "rgb.pt")
    naive = dataset_for_checkpoint(ckpt, channels="RG", channel_mode="average")
    metrics, _ = evaluate_engine(_ModelEngine(ckpt.model), batches_for_checkpoint(ckpt, naive), 3)
    assert metrics["samples"] == 27
    with pytest.raises(UsageProblem, match="3 input channels"):
        batches_for_checkpoint(ckpt, dataset_for_checkpoint(ckpt, channels="RG", channel_mode="select"))
