"""Classification metrics from labels and predictions, in numpy (tests check them against scikit-learn).

Conventions follow scikit-learn's `precision_recall_fscore_support(average="macro",
labels=range(K), zero_division=0)`: every class in 0..K-1 counts in a macro mean, even one that
never occurs; a class never predicted has precision 0, one never present has recall 0; macro F1
is the mean of per-class F1 scores (not the F1 of macro precision and recall).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The most test images whose per-image correctness a metrics dict keeps (`correct_bits`): 1 bit each, so
#: ImageNet's 50,000 validation images take about 8 kB of base64 in a record.
MAX_CORRECT_BITS = 200_000


def encode_correct(correct: np.ndarray) -> str:
    """Per-image correctness (booleans, test-split order) as base64 of `numpy.packbits`: what a paired bootstrap over
    test images needs to compare two nets scored on the same images."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool).ravel())).decode("ascii")


def decode_correct(bits: str, samples: int) -> np.ndarray:
    """The booleans `encode_correct` packed, `samples` of them.

    Raises:
        ValueError: `bits` is not base64 or holds fewer than `samples` bits.
    """
    try:
        packed = np.frombuffer(base64.b64decode(bits.encode("ascii"), validate=True), dtype=np.uint8)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"per-image correctness is not base64: {exc}") from None
    if packed.size * 8 < samples:
        raise ValueError(f"per-image correctness holds {packed.size * 8} bits, fewer than {samples} images")
    return np.unpackbits(packed)[:samples].astype(bool)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K counts: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels and predictions must lie in 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def topk_accuracy(logits: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the `k` highest logits."""
    logits = np.asarray(logits)
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(y_true).reshape(-1, 1), axis=1)))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                           class_names: Sequence[str] | None = None,
                           logits: np.ndarray | None = None) -> dict[str, Any]:
    """Top-1, macro precision/recall/F1, per-class precision/recall/F1/support and the confusion matrix.

    Returns plain JSON-ready data: `top1`, `precision_macro`, `recall_macro`, `f1_macro`,
    `per_class` (list of {class, name, precision, recall, f1, support}), `confusion_matrix`
    (list of rows), `samples`, `correct_bits` (per-image correctness, `encode_correct`; None beyond
    `MAX_CORRECT_BITS` images) and `top5` when `logits` are given and there are more than 5 classes.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    n = int(cm.sum())
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    out: dict[str, Any] = {
        "samples": n,
        "top1": float(tp.sum() / n) if n else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "per_class": [
            {"class": i, "name": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])}
            for i in range(num_classes)
        ],
        "confusion_matrix": cm.tolist(),
        "correct_bits": encode_correct(np.asarray(y_true).ravel() == np.asarray(y_pred).ravel())
        if n <= MAX_CORRECT_BITS else None,
    }
    if logits is not None and num_classes > 5:
        out["top5"] = topk_accuracy(logits, y_true, 5)
    return out


def compare_predictions(reference_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """How far an engine's output is from the reference engine's on the same inputs.

    `agreement`: share of identical top-1 predictions; `max_abs_logit_diff` / `mean_abs_logit_diff`:
    the raw output error an fp16 or broken export shows even when the argmax survives.
    """
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    if reference_logits.shape != logits.shape:
        raise ValueError(f"logit shapes differ: {reference_logits.shape} vs {logits.shape}")
    diff = np.abs(reference_logits - logits)
    return {
        "agreement": float(np.mean(reference_logits.argmax(1) == logits.argmax(1))) if len(diff) else 1.0,
        "max_abs_logit_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_logit_diff": float(diff.mean()) if diff.size else 0.0,
    }
