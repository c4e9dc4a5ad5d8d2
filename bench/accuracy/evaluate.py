"""Test-split accuracy of a trained checkpoint through every engine, and how far each engine strays.

    >>> ckpt = load_trained_model("runs/r20/best.pt", model_name="resnet20")
    >>> bundle = dataset_for_checkpoint(ckpt)
    >>> results = evaluate_checkpoint(ckpt, bundle, engines=("torch", "ort"))
    >>> [(r["engine"], r["top1"], r["top1_delta"]) for r in results]

An engine here is anything with `infer(np.ndarray) -> np.ndarray` (float32 NCHW batch in, logits
out), so `evaluate_engine` serves the `bench.engines` backends and plain callables alike. The
first engine is the reference: every other engine's result carries its top-1 difference, its
prediction agreement and its logit error against it, so an fp16 or broken export shows at once.

Accuracy mode, as MLPerf Inference's accuracy mode judges a submission: every engine sees the same
images (decoded once, each batch handed to every engine in turn), and `accuracy_mode` gives each its
top-1 and top-5 as a ratio to the reference's (torch fp32 when it is listed first), and a pass when the
ratio is at least the threshold (99%, MLPerf's rule for ResNet-50: 99% of the fp32 reference top-1).

A checkpoint is an `rbench train` file or a torchvision state dict (`.pth` as torchvision publishes it),
recognised by its keys (`export.checkpoint.torchvision_architecture`): it loads into the zoo net of that
name, normalizes with the ImageNet constants and evaluates with its published weights' transform.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from bench.accuracy.metrics import classification_metrics, compare_predictions, topk_accuracy
from bench.data import Batches, DatasetBundle, load_dataset
from bench.errors import DataProblem, UsageProblem

#: MLPerf Inference's accuracy rule for ResNet-50: at least 99% of the fp32 reference's top-1.
MLPERF_THRESHOLD = 0.99


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
    sha256: str | None = None
    torchvision: dict[str, Any] | None = None  # architecture and published weights, for a torchvision state dict
    eval_transform: dict[str, Any] | None = None  # the evaluation preset the checkpoint carries

    @property
    def input_shape(self) -> tuple[int, int, int]:
        chans = self.config.get("in_chans", self.dataset.get("in_chans", 3))
        if chans == "any":  # a channel-agnostic net: the channels of the data it is given
            chans = self.dataset.get("in_chans", 3)
        return (int(chans), int(self.dataset["input_size"]), int(self.dataset["input_size"]))


def load_trained_model(path: str | Path, model_name: str | None = None) -> TrainedModel:
    """Rebuild the model of an rbench checkpoint or a torchvision state dict (weights only) in eval mode.

    Raises:
        UsageProblem: the checkpoint holds another architecture than `model_name` (both are named),
            or its weights do not fit the architecture its config names.
        DataProblem: the file is missing, or neither an rbench checkpoint nor a torchvision state dict.
    """
    import nets
    from export.checkpoint import TORCHVISION_ARCHITECTURES, load_checkpoint

    path = Path(path)
    raw = load_checkpoint(path)
    if raw.config is None or not raw.config.get("name"):
        raise DataProblem(f"{path} is neither an rbench checkpoint (no model config) nor a torchvision state dict "
                          f"of {', '.join(TORCHVISION_ARCHITECTURES)}")
    config, extra = dict(raw.config), dict(raw.extra)
    torchvision = extra.get("torchvision")
    held = config.get("name")
    if model_name is not None and held != model_name:
        if torchvision:
            raise UsageProblem(f"checkpoint {path.name} is a torchvision {held} state dict, not {model_name}; "
                               f"use `rbench accuracy {held}` or the {model_name} weights")
        raise UsageProblem(f"checkpoint {path} holds a {held} model, not {model_name}; "
                           f"pass --checkpoint of a {model_name} run or use `rbench accuracy {held}`")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    model = nets.create_model(held, **kwargs)
    try:
        model.load_state_dict(raw.state_dict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UsageProblem(f"checkpoint {path} does not fit {held} {kwargs}: {first}") from None
    if extra.get("temperature") is not None:  # a dynamic-conv net stopped before annealing ended
        from nets import set_temperature

        set_temperature(model, float(extra["temperature"]))
    model.eval()
    transform = extra.get("eval_transform")
    dataset = dict(extra.get("dataset") or {})
    if torchvision and transform:
        dataset.setdefault("input_size", int(transform["crop_size"]))
    return TrainedModel(model, config, dict(extra.get("normalization") or {}), dataset, int(extra.get("epoch", 0)),
                        path, raw.sha256, torchvision, transform)


def dataset_for_checkpoint(checkpoint: TrainedModel, name: str | None = None, root: str | None = None,
                           subset: int | None = None, channels: str | None = None,
                           channel_mode: str | None = None, download: bool = False, *,
                           eval_transform: str | dict[str, Any] | None = None,
                           class_index: str | Path | None = None, skip_bad_images: bool = False) -> DatasetBundle:
    """The data set a checkpoint was trained on (same input size, channels and seed), or `name` instead.

    Only evaluated: an image folder may hold just `val/` (or just class folders). `eval_transform`
    ('imagenet', 'imagenet:RESIZE:CROP', 'none') overrides the preset the checkpoint carries (a
    torchvision checkpoint carries its published weights' one); with a preset the model's input size
    becomes its crop."""
    from bench.data import parse_eval_transform

    d = checkpoint.dataset
    if not d.get("name") and name is None:
        raise UsageProblem(f"checkpoint {checkpoint.path} does not say its data set; pass --dataset")
    dataset_name = name or d["name"]
    carried = getattr(checkpoint, "eval_transform", None)  # bench.accuracy.calibration also passes plain namespaces
    transform = parse_eval_transform(eval_transform if eval_transform is not None else carried)
    if transform is not None and not dataset_name.lower().startswith("imagefolder:"):
        if eval_transform is not None:
            raise UsageProblem(f"--eval-transform applies to imagefolder:PATH, not {dataset_name}")
        transform = None  # the checkpoint's own preset, but data that is not a folder of photos
    if transform is not None:
        checkpoint.dataset["input_size"] = transform.crop_size
    return load_dataset(
        dataset_name, root=root, subset=subset, seed=int(d.get("seed", 0)),
        input_size=int(d.get("input_size")) if d.get("input_size") and transform is None else None,
        channels=channels if channels is not None else d.get("channels"),
        channel_mode=channel_mode or d.get("channel_mode") or "select", download=download, eval_only=True,
        eval_transform=transform, class_index=class_index, skip_bad_images=skip_bad_images)


def predict(engine: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of `engine.infer` over every batch.

    `pad_to` pads a short last batch by repeating its last image (and drops the extra outputs),
    for engines built for one fixed batch size.
    """
    all_logits, all_labels = [], []
    for x, y in batches:
        all_logits.append(_infer(engine, x.detach().cpu().numpy().astype(np.float32, copy=False), pad_to))
        all_labels.append(y.cpu().numpy())
    if not all_logits:
        raise DataProblem("the test split is empty: nothing to measure accuracy on")
    return np.concatenate(all_logits), np.concatenate(all_labels)


def evaluate_engine(engine: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                    class_names: Sequence[str] | None = None, pad_to: int | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """(metrics dict from `classification_metrics` plus `seconds`, logits) of one engine."""
    t0 = time.perf_counter()
    logits, labels = predict(engine, batches, pad_to=pad_to)
    metrics = _metrics(logits, labels, num_classes, class_names)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    return metrics, logits


def batches_for_checkpoint(checkpoint: TrainedModel, bundle: DatasetBundle, batch_size: int = 256,
                 normalization: str = "checkpoint", workers: int = 0) -> Batches:
    """The test split as float batches, normalized as the model was trained ('checkpoint') or by the data ('data').

    An evaluation folder's split is decoded lazily by `workers` DataLoader processes (`EvalBatches`)."""
    if checkpoint.config.get("in_chans") == "any":  # a channel-agnostic net takes any subset natively
        checkpoint.dataset["in_chans"] = bundle.in_chans  # what `input_shape` (and so the engines) then say
    if bundle.in_chans != checkpoint.input_shape[0]:
        raise UsageProblem(f"{checkpoint.config.get('name')} takes {checkpoint.input_shape[0]} input channels, "
                           f"the data set gives {bundle.in_chans}; pick matching --channels / channel mode")
    if bundle.num_classes != int(checkpoint.config.get("num_classes", bundle.num_classes)):
        hint = "; a folder with some of the model's classes needs --class-index listing all of them" \
            if bundle.num_classes < int(checkpoint.config["num_classes"]) and bundle.name.startswith("imagefolder:") else ""
        raise UsageProblem(f"{checkpoint.config.get('name')} predicts {checkpoint.config['num_classes']} classes, "
                           f"{bundle.name} has {bundle.num_classes}{hint}")
    norm = checkpoint.normalization if normalization == "checkpoint" and checkpoint.normalization else \
        {"mean": bundle.mean, "std": bundle.std}
    if len(norm["mean"]) != bundle.in_chans:  # a channel subset of another width: the data's own statistics
        norm = {"mean": bundle.mean, "std": bundle.std}
    from bench.data import EvalBatches, EvalImages

    if isinstance(bundle.test, EvalImages):
        return EvalBatches(bundle.test, batch_size, norm["mean"], norm["std"], workers=workers)
    return Batches(bundle.test, batch_size, norm["mean"], norm["std"], workers=workers)


def parse_engines(engines: str | Sequence[str], precision: str = "fp32") -> list[tuple[str, str]]:
    """`"torch,ort,trt:fp16"` -> [("torch", "fp32"), ("ort", "fp32"), ("trt", "fp16")]: `precision` where none is named."""
    items = [e.strip() for e in (engines.split(",") if isinstance(engines, str) else engines) if e and e.strip()]
    specs = []
    for item in items:
        name, _, named = item.partition(":")
        spec = (name.strip().lower(), (named.strip() or precision).lower())
        if spec in specs:
            raise UsageProblem(f"engine {item!r} is listed twice")
        specs.append(spec)
    if not specs:
        raise UsageProblem("name at least one engine (torch, ort, trt, openvino)")
    return specs


def evaluate_checkpoint(checkpoint: TrainedModel, bundle: DatasetBundle, engines: str | Sequence[str] = ("torch", "ort"),
                        precision: str = "fp32", device: str = "cpu", batch_size: int = 256,
                        normalization: str = "checkpoint",
                        engine_options: dict[str, dict[str, Any]] | None = None, *,
                        threshold: float = MLPERF_THRESHOLD, workers: int = 0,
                        on_progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Accuracy of `checkpoint` on `bundle`'s test split through each engine, in MLPerf's accuracy mode.

    `engines` are bench.engines names, each optionally with its precision (`trt:fp16`; else `precision`).
    The images are decoded once: each batch goes to every engine in turn, so every engine sees the
    same tensors. Returns one flat dict per engine, ready for `accuracy_record`: `engine`,
    `engine_info` (its `describe()`), `precision`, `top1`, `top5`, `precision_macro`, `recall_macro`,
    `f1_macro`, `per_class`, `confusion_matrix`, `samples`, `seconds` (its inference time),
    `images_per_s`; against the first engine (`reference_engine`): `top1_delta`, `agreement`,
    `max_abs_logit_diff`, `mean_abs_logit_diff`; and `accuracy_mode`'s `top1_ratio`, `top5_ratio`,
    `threshold`, `passed`; and for the data, `wall_s` (the whole pass, decoding included),
    `skipped_images` and `skipped_files` (unreadable files dropped with `skip_bad_images`).
    `on_progress(done, total)` is called after each batch.
    """
    from contextlib import ExitStack

    from bench.engines import create_engine

    specs = parse_engines(engines, precision)
    batches = batches_for_checkpoint(checkpoint, bundle, batch_size, normalization, workers=workers)
    total = len(bundle.test)
    start = time.perf_counter()
    with ExitStack() as stack:
        runners = []
        for name, engine_precision in specs:
            options = dict((engine_options or {}).get(name, {}))
            max_batch = options.pop("max_batch", None)
            engine = stack.enter_context(create_engine(
                name, checkpoint.model, input_shape=checkpoint.input_shape, device=device, precision=engine_precision,
                **({"max_batch": max_batch} if max_batch else {}), **options))
            runners.append((engine, max_batch))
        logits: list[list[np.ndarray]] = [[] for _ in runners]
        seconds = [0.0] * len(runners)
        labels, done = [], 0
        for x, y in batches:
            batch = x.detach().cpu().numpy().astype(np.float32, copy=False)
            for i, (engine, pad_to) in enumerate(runners):
                t0 = time.perf_counter()
                logits[i].append(_infer(engine, batch, pad_to))
                seconds[i] += time.perf_counter() - t0
            labels.append(y.cpu().numpy())
            done += len(y)
            if on_progress is not None:
                on_progress(done + len(getattr(batches, "skipped", ())), total)
        infos = [engine.describe() for engine, _ in runners]
    wall = time.perf_counter() - start
    if not labels:
        raise DataProblem("the test split is empty: nothing to measure accuracy on")
    y_true = np.concatenate(labels)
    skipped = list(getattr(batches, "skipped", ()))
    same_precision = len({p for _, p in specs}) == 1
    results: list[dict[str, Any]] = []
    reference: tuple[str, dict[str, Any], np.ndarray] | None = None
    for (name, engine_precision), info, chunks, engine_seconds in zip(specs, infos, logits, seconds):
        engine_logits = np.concatenate(chunks)
        metrics = _metrics(engine_logits, y_true, bundle.num_classes, bundle.class_names)
        metrics["seconds"] = round(engine_seconds, 3)
        label = name if same_precision else f"{name} {engine_precision}"
        reference = reference or (label, metrics, engine_logits)
        results.append({
            "engine": name, "engine_info": info, "precision": engine_precision, "device": device,
            "batch": batch_size, "input_shape": list(checkpoint.input_shape),
            **metrics, **reference_differences(reference, metrics, engine_logits),
            "images_per_s": round(len(y_true) / engine_seconds, 1) if engine_seconds > 0 else None,
            "wall_s": round(wall, 3), "skipped_images": len(skipped), "skipped_files": skipped,
        })
    return accuracy_mode(results, threshold)


def accuracy_mode(results: Sequence[dict[str, Any]], threshold: float = MLPERF_THRESHOLD) -> list[dict[str, Any]]:
    """Each result with MLPerf's verdict against the first (the reference): `top1_ratio` and `top5_ratio`
    (None when the reference scores 0), `threshold`, and `passed` (top-1 at least `threshold` x the reference's)."""
    if not 0.0 < threshold <= 1.0:
        raise UsageProblem(f"the accuracy threshold is a share of the reference top-1 in (0, 1], got {threshold}")
    if not results:
        return []
    ref = results[0]

    def ratio(result: dict[str, Any], key: str) -> float | None:
        if result.get(key) is None or not ref.get(key):
            return None
        return round(result[key] / ref[key], 6)

    return [{**result, "top1_ratio": ratio(result, "top1"), "top5_ratio": ratio(result, "top5"),
             "threshold": threshold, "passed": bool(result["top1"] >= threshold * ref["top1"] - 1e-12)}
            for result in results]


def _infer(engine: Any, batch: np.ndarray, pad_to: int | None) -> np.ndarray:
    """`engine.infer(batch)` as float32; a short batch is padded to `pad_to` by repeating its last image."""
    n = len(batch)
    if pad_to and n < pad_to:
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad_to - n, axis=0)])
    return np.asarray(engine.infer(batch))[:n].astype(np.float32, copy=False)


def _metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int,
             class_names: Sequence[str] | None) -> dict[str, Any]:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise DataProblem(f"the engine returned logits of shape {logits.shape}, expected (N, {num_classes})")
    metrics = classification_metrics(labels, logits.argmax(1), num_classes, class_names, logits=logits)
    if "top5" not in metrics:  # classification_metrics gives top-5 from 6 classes up; MLPerf reports it always
        metrics["top5"] = topk_accuracy(logits, labels, 5)
    return metrics


def reference_differences(reference: tuple[str, dict[str, Any], np.ndarray], metrics: dict[str, Any],
                          logits: np.ndarray) -> dict[str, Any]:
    """How one engine's result strays from the reference engine's: top-1 difference, agreement, logit error."""
    name, ref_metrics, ref_logits = reference
    return {"reference_engine": name, "top1_delta": metrics["top1"] - ref_metrics["top1"],
            **compare_predictions(ref_logits, logits)}
