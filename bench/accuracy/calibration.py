"""INT8 from a trained checkpoint: calibration images from the training split, the check on the test split.

    >>> ckpt = load_trained_model("runs/r20/best.pt")
    >>> report = int8_export(ckpt, "runs/r20/model.onnx", "exports/resnet20-int8.onnx", "fashion-mnist:512")
    >>> report.check.summary()

`export.quantize` does the quantization and the task-level check on arrays; this module finds the
arrays: N stratified, seeded images of the checkpoint's own data set's *training* split (never the
test split, which judges the result), normalized as the model was trained, and the labelled test
split for the check.

An evaluation-only image folder (an ImageNet `val/`, no `train/`) has no training split: the
calibration images then come from another folder (`--calibration imagefolder:OTHER[:N]`, e.g. a few
hundred ImageNet training images, as MLPerf's calibration list is), all of whose images are candidates,
preprocessed by the same evaluation transform.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageProblem

#: Calibration images when `--calibration` names no count: onnxruntime's examples and TensorRT's
#: guide use a few hundred to a thousand; 512 keeps entropy calibration under a minute on 2 cores.
DEFAULT_CALIBRATION_IMAGES = 512


def parse_calibration(spec: str | None) -> tuple[str | None, int]:
    """`DATASET[:N]` -> (data set or None for the checkpoint's own, N). `N` alone is accepted too.

    `imagefolder:PATH:N` keeps the folder's colon: only a trailing `:<digits>` (signed, so that a negative
    count is refused as a count, not taken for part of a data set's name) is a count.
    """
    if spec is None or not str(spec).strip():
        return None, DEFAULT_CALIBRATION_IMAGES
    spec = str(spec).strip()
    if re.fullmatch(r"[-+]?\d+", spec):
        name, count = None, int(spec)
    else:
        match = re.fullmatch(r"(.+?):([-+]?\d+)", spec)
        name, count = (match.group(1), int(match.group(2))) if match else (spec, DEFAULT_CALIBRATION_IMAGES)
    if count < 1:
        raise UsageProblem(f"--calibration needs at least 1 image, got {count}")
    return name, count


def _normalization(checkpoint, bundle) -> tuple[tuple[float, ...], tuple[float, ...]]:
    norm = checkpoint.normalization
    if norm and len(norm.get("mean", ())) == bundle.in_chans:
        return tuple(norm["mean"]), tuple(norm["std"])
    return tuple(bundle.mean), tuple(bundle.std)


def _as_arrays(dataset, indices: np.ndarray, mean, std, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from bench.data import Batches, EvalBatches, EvalImages

    if isinstance(dataset, EvalImages):  # lazy folder: decoded by workers; unreadable files skipped when asked
        batches = EvalBatches(dataset.take(indices), 256, mean, std, workers=workers)
    else:
        batches = Batches(torch.utils.data.Subset(dataset, indices.tolist()), 256, mean, std)
    images, labels = [], []
    for x, y in batches:
        images.append(x.numpy().astype(np.float32, copy=False))
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _labels_of(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(labels, dtype=np.int64)


def calibration_set(checkpoint, bundle, count: int, seed: int = 0, *, evaluated_on: str | None = None,
                    workers: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """(float32 NCHW images, description): `count` stratified images of `bundle`'s training split.

    An evaluation-only folder (no train/) gives its images instead, unless it is the folder the model
    is evaluated on (`evaluated_on`, a data set name): calibrating on the test images is refused."""
    from bench.data.common import stratified_take

    if bundle.in_chans != checkpoint.input_shape[0] or bundle.input_size != checkpoint.input_shape[1]:
        raise UsageProblem(f"the calibration data gives {bundle.in_chans}x{bundle.input_size}x{bundle.input_size} "
                           f"images, the model takes {'x'.join(map(str, checkpoint.input_shape))}; calibrate on the "
                           "data the model was trained on")
    train, split = bundle.train, "train"
    if len(train) == 0 and bundle.extra.get("eval_only"):
        if evaluated_on is not None and _same_data(evaluated_on, bundle.name):
            raise UsageProblem(f"{bundle.source} has no train/ folder, and its images are the ones the model is "
                               "tested on: pass --calibration imagefolder:OTHER[:N], a folder of other images "
                               "(e.g. a few hundred ImageNet training images)")
        train, split = bundle.test, "all images (no train/)"
    if len(train) == 0:
        raise UsageProblem(f"{bundle.name} has an empty training split: nothing to calibrate on")
    labels = _labels_of(train)
    indices = stratified_take(labels, min(count, len(labels)), np.random.default_rng(seed))
    mean, std = _normalization(checkpoint, bundle)
    images, _ = _as_arrays(train, indices, mean, std, workers=workers)
    info = {"dataset": bundle.name, "split": split, "images": int(len(images)), "requested": int(count),
            "seed": seed, "source": bundle.source, "normalization": {"mean": list(mean), "std": list(std)}}
    if bundle.extra.get("eval_transform"):
        info["eval_transform"] = bundle.extra["eval_transform"]
    return images, info


def _same_data(name: str, other: str) -> bool:
    def key(text: str) -> str:
        if text.lower().startswith("imagefolder:"):
            return "imagefolder:" + str(Path(text.split(":", 1)[1]).expanduser().resolve())
        return text.lower()

    return key(name) == key(other)


def test_set(checkpoint, bundle, limit: int | None = None, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float32 images, labels) of `bundle`'s test split (the first `limit` of a stratified, seeded order)."""
    from bench.data.common import stratified_take

    labels = _labels_of(bundle.test)
    indices = np.arange(len(labels)) if limit is None else stratified_take(labels, limit, np.random.default_rng(0))
    if len(indices) == 0:
        raise UsageProblem(f"{bundle.name} has an empty test split: nothing to check the int8 file on")
    return _as_arrays(bundle.test, indices, *_normalization(checkpoint, bundle), workers=workers)


def int8_export(checkpoint, fp32_onnx: str | Path, out_path: str | Path, calibration: str | None = None, *,
                method: str = "minmax", min_agreement: float | None = None, min_accuracy_ratio: float | None = None,
                data_root: str | None = None,
                test_limit: int | None = None, threads: int | None = None, enforce: bool = True,
                activations: str = "u8", dataset: str | None = None, eval_transform: str | None = None,
                class_index: str | None = None, skip_bad_images: bool = False, workers: int = 0):
    """Quantize `fp32_onnx` (the export of `checkpoint`) to `out_path`, calibrated and checked on real data.

    The check runs on `dataset`'s test split (default: the calibration data set's, as before; name it
    when calibrating on another folder); `eval_transform`, `class_index` and `skip_bad_images` shape
    both as `bench.accuracy.evaluate.dataset_for_checkpoint` does.

    Returns `export.quantize.QuantReport` with its `check`; raises ParityFailure (nothing written)
    when the int8 file agrees with fp32 on fewer test images than `min_agreement`, or keeps
    less than `min_accuracy_ratio` of its accuracy (with `enforce`; otherwise the file is kept and
    the report's check says so).
    """
    from bench.accuracy.evaluate import dataset_for_checkpoint
    from export.quantize import DEFAULT_MIN_AGREEMENT, MLPERF_RATIO, quantize_and_check

    name, count = parse_calibration(calibration)
    options = dict(eval_transform=eval_transform, class_index=class_index, skip_bad_images=skip_bad_images)
    bundle = dataset_for_checkpoint(checkpoint, name, root=data_root, **options)
    evaluated = bundle if dataset is None or _same_data(dataset, bundle.name) else \
        dataset_for_checkpoint(checkpoint, dataset, root=data_root, **options)
    images, info = calibration_set(checkpoint, bundle, count, seed=int(checkpoint.dataset.get("seed", 0)),
                                   evaluated_on=evaluated.name, workers=workers)
    test_images, test_labels = test_set(checkpoint, evaluated, test_limit, workers=workers)
    info["test_images"] = int(len(test_labels))
    return quantize_and_check(fp32_onnx, out_path, images, test_images, test_labels, method=method,
                              min_agreement=DEFAULT_MIN_AGREEMENT if min_agreement is None else min_agreement,
                              min_accuracy_ratio=MLPERF_RATIO if min_accuracy_ratio is None else min_accuracy_ratio,
                              calibration_info=info, threads=threads, enforce=enforce, activations=activations)
