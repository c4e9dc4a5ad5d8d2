"""Test-split accuracy of a trained checkpoint through every engine, and how far each engine strays.

    >>> ckpt = load_trained_model("runs/r20/best.pt", model_name="resnet20")
    >>> bundle = dataset_for_checkpoint(ckpt)
    >>> results = evaluate_checkpoint(ckpt, bundle, engines=("torch", "ort"))
    >>> [(r["engine"], r["top1"], r["top1_delta"]) for r in results]

An engine here is anything with `infer(np.ndarray) -> np.ndarray` (float32 NCHW batch in, logits
out), so `evaluate_engine` serves the `bench.engines` backends and plain callables alike. The
first engine is the reference: every other engine's result carries its top-1 difference, its
prediction agreement and its logit error against it, so an fp16 or broken export shows at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from bench.data import Batches, DatasetBundle, load_dataset
from bench.errors import DataProblem, UsageProblem
from bench.metrics import classification_metrics, compare_predictions
from bench.train import load_training_checkpoint


@dataclass
class TrainedModel:
    """A model rebuilt from an `rbench train` checkpoint, with the facts stored beside the weights.

    (`export.checkpoint.Checkpoint` is the raw file: weights, config and extras, before any model is built.)
    """

    model: nn.Module
    config: dict[str, Any]
    normalization: dict[str, list[float]]
    dataset: dict[str, Any]
    epoch: int
    path: Path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (int(self.config.get("in_chans", self.dataset.get("in_chans", 3))),
                int(self.dataset["input_size"]), int(self.dataset["input_size"]))


def load_trained_model(path: str | Path, model_name: str | None = None) -> TrainedModel:
    """Rebuild the model of an rbench checkpoint (`torch.load(weights_only=True)`) in eval mode.

    Raises:
        UsageProblem: the checkpoint holds another architecture than `model_name`, or its
            weights do not fit the architecture its config names.
        DataProblem: the file is missing or not an rbench checkpoint.
    """
    import nets

    path = Path(path)
    payload = load_training_checkpoint(path)
    config = dict(payload["config"])
    held = config.get("name")
    if model_name is not None and held != model_name:
        raise UsageProblem(f"checkpoint {path} holds a {held} model, not {model_name}; "
                           f"pass --checkpoint of a {model_name} run or use `rbench accuracy {held}`")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    model = nets.create_model(held, **kwargs)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UsageProblem(f"checkpoint {path} does not fit {held} {kwargs}: {first}") from None
    if payload.get("temperature") is not None:  # a dynamic-conv net stopped before annealing ended
        from nets.layers import set_temperature

        set_temperature(model, float(payload["temperature"]))
    model.eval()
    return TrainedModel(model, config, dict(payload.get("normalization", {})), dict(payload.get("dataset", {})),
                      int(payload.get("epoch", 0)), path)


def dataset_for_checkpoint(checkpoint: TrainedModel, name: str | None = None, root: str | None = None,
                           subset: int | None = None, channels: str | None = None,
                           channel_mode: str | None = None, download: bool = False) -> DatasetBundle:
    """The data set a checkpoint was trained on (same input size, channels and seed), or `name` instead."""
    d = checkpoint.dataset
    if not d and name is None:
        raise UsageProblem(f"checkpoint {checkpoint.path} does not say its data set; pass --dataset")
    return load_dataset(
        name or d["name"], root=root, subset=subset, seed=int(d.get("seed", 0)),
        input_size=int(d.get("input_size")) if d.get("input_size") else None,
        channels=channels if channels is not None else d.get("channels"),
        channel_mode=channel_mode or d.get("channel_mode") or "select", download=download)


def predict(engine: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of `engine.infer` over every batch.

    `pad_to` pads a short last batch by repeating its last image (and drops the extra outputs),
    for engines built for one fixed batch size.
    """
    all_logits, all_labels = [], []
    for x, y in batches:
        batch = x.detach().cpu().numpy().astype(np.float32, copy=False)
        n = len(batch)
        if pad_to and n < pad_to:
            batch = np.concatenate([batch, np.repeat(batch[-1:], pad_to - n, axis=0)])
        logits = np.asarray(engine.infer(batch))[:n]
        all_logits.append(logits.astype(np.float32, copy=False))
        all_labels.append(y.cpu().numpy())
    if not all_logits:
        raise DataProblem("the test split is empty: nothing to measure accuracy on")
    return np.concatenate(all_logits), np.concatenate(all_labels)


def evaluate_engine(engine: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                    class_names: Sequence[str] | None = None, pad_to: int | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """(metrics dict from `classification_metrics` plus `seconds`, logits) of one engine."""
    t0 = time.perf_counter()
    logits, labels = predict(engine, batches, pad_to=pad_to)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise DataProblem(f"the engine returned logits of shape {logits.shape}, expected (N, {num_classes})")
    metrics = classification_metrics(labels, logits.argmax(1), num_classes, class_names, logits=logits)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    return metrics, logits


def batches_for_checkpoint(checkpoint: TrainedModel, bundle: DatasetBundle, batch_size: int = 256,
                 normalization: str = "checkpoint") -> Batches:
    """The test split as float batches, normalized as the model was trained ('checkpoint') or by the data ('data')."""
    if bundle.in_chans != checkpoint.input_shape[0]:
        raise UsageProblem(f"{checkpoint.config.get('name')} takes {checkpoint.input_shape[0]} input channels, "
                           f"the data set gives {bundle.in_chans}; pick matching --channels / channel mode")
    if bundle.num_classes != int(checkpoint.config.get("num_classes", bundle.num_classes)):
        raise UsageProblem(f"{checkpoint.config.get('name')} predicts {checkpoint.config['num_classes']} classes, "
                           f"{bundle.name} has {bundle.num_classes}")
    norm = checkpoint.normalization if normalization == "checkpoint" and checkpoint.normalization else \
        {"mean": bundle.mean, "std": bundle.std}
    if len(norm["mean"]) != bundle.in_chans:  # a channel subset of another width: the data's own statistics
        norm = {"mean": bundle.mean, "std": bundle.std}
    return Batches(bundle.test, batch_size, norm["mean"], norm["std"])


def evaluate_checkpoint(checkpoint: TrainedModel, bundle: DatasetBundle, engines: Sequence[str] = ("torch", "ort"),
                        precision: str = "fp32", device: str = "cpu", batch_size: int = 256,
                        normalization: str = "checkpoint",
                        engine_options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Accuracy of `checkpoint` on `bundle`'s test split through each engine (bench.engines names).

    Returns one flat dict per engine, ready for `make_record("accuracy", **result)`: `engine`,
    `engine_info` (its `describe()`), `precision`, `top1`, `top5`, `precision_macro`,
    `recall_macro`, `f1_macro`, `per_class`, `confusion_matrix`, `samples`, and against the
    first engine (`reference_engine`): `top1_delta`, `agreement`, `max_abs_logit_diff`,
    `mean_abs_logit_diff`.
    """
    from bench.engines import create_engine

    if not engines:
        raise UsageProblem("name at least one engine")
    batches = batches_for_checkpoint(checkpoint, bundle, batch_size, normalization)
    results: list[dict[str, Any]] = []
    reference: tuple[str, dict[str, Any], np.ndarray] | None = None
    for name in engines:
        options = dict((engine_options or {}).get(name, {}))
        max_batch = options.pop("max_batch", None)
        with create_engine(name, checkpoint.model, input_shape=checkpoint.input_shape, device=device,
                           precision=precision, **({"max_batch": max_batch} if max_batch else {}), **options) as engine:
            metrics, logits = evaluate_engine(engine, batches, bundle.num_classes, bundle.class_names, pad_to=max_batch)
            info = engine.describe()
        reference = reference or (name, metrics, logits)
        results.append({
            "engine": name, "engine_info": info, "precision": precision, "device": device,
            "batch": batch_size, "input_shape": list(checkpoint.input_shape),
            **metrics, **reference_differences(reference, metrics, logits),
        })
    return results


def reference_differences(reference: tuple[str, dict[str, Any], np.ndarray], metrics: dict[str, Any],
                          logits: np.ndarray) -> dict[str, Any]:
    """How one engine's result strays from the reference engine's: top-1 difference, agreement, logit error."""
    name, ref_metrics, ref_logits = reference
    return {"reference_engine": name, "top1_delta": metrics["top1"] - ref_metrics["top1"],
            **compare_predictions(ref_logits, logits)}
