"""Accuracy statistics a report may state: the Wilson interval of a test accuracy, and a paired bootstrap interval of
the difference (or ratio) of two nets' accuracies over test images and training seeds.

A report says "better", "worse", "MET" or "NOT MET" only when such an interval lies wholly on one side of the line;
otherwise "not decided at this budget", with the interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054
#: Bootstrap draws of `paired_difference`: enough for a stable 95% interval's ends (a few tenths of a pp).
BOOTSTRAP_DRAWS = 2000
UNDECIDED = "not decided at this budget"


def wilson_interval(top1: float, samples: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score 95% interval of an accuracy `top1` measured on `samples` test images (binomial sampling of the
    test set; unlike the normal approximation it stays inside [0, 1] near 0% and 100%).

    Raises:
        ValueError: `samples` is not positive or `top1` lies outside [0, 1].
    """
    if samples <= 0:
        raise ValueError(f"a test accuracy needs at least one image, not {samples}")
    if not 0.0 <= top1 <= 1.0:
        raise ValueError(f"an accuracy lies in [0, 1], not {top1}")
    denom = 1 + z * z / samples
    centre = (top1 + z * z / (2 * samples)) / denom
    half = z * math.sqrt(top1 * (1 - top1) / samples + z * z / (4 * samples * samples)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_matrix(correct_by_seed: Sequence[np.ndarray]) -> np.ndarray:
    """(seeds, images) booleans; every seed scored on the same images."""
    sizes = {len(c) for c in correct_by_seed}
    if not correct_by_seed or len(sizes) != 1:
        raise ValueError(f"each seed must be scored on the same test images (sizes {sorted(sizes)})")
    return np.asarray(correct_by_seed, dtype=bool)


def paired_bootstrap(a_correct: Sequence[np.ndarray], b_correct: Sequence[np.ndarray], *, ratio: bool = False,
                     draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, float]:
    """Net a's accuracy minus net b's (or over b's, `ratio`) with a 95% percentile bootstrap interval.

    `a_correct`/`b_correct` hold per-image correctness (one array per training seed, test-split order; both nets on
    the same images). Each draw resamples the test images, the same images for both nets (paired: an image both get
    right or wrong cancels), and each net's seeds with replacement: the interval carries test-set sampling and, with
    several seeds, seed variation. Returns {estimate, low, high, draws, seeds_a, seeds_b, images}.
    """
    a, b = _as_matrix(a_correct), _as_matrix(b_correct)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two nets were scored on different test sets ({a.shape[1]} vs {b.shape[1]} images)")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    images = rng.integers(0, n, size=(draws, n))
    acc_a = np.concatenate([a[:, chunk].mean(axis=2).T for chunk in np.array_split(images, max(1, draws // 200))])
    acc_b = np.concatenate([b[:, chunk].mean(axis=2).T for chunk in np.array_split(images, max(1, draws // 200))])
    pick_a = rng.integers(0, a.shape[0], size=(draws, a.shape[0]))
    pick_b = rng.integers(0, b.shape[0], size=(draws, b.shape[0]))
    mean_a = np.take_along_axis(acc_a, pick_a, axis=1).mean(axis=1)
    mean_b = np.take_along_axis(acc_b, pick_b, axis=1).mean(axis=1)
    est_a, est_b = float(a.mean()), float(b.mean())
    if ratio:
        values = mean_a / np.maximum(mean_b, 1e-12)
        estimate = est_a / est_b if est_b else math.inf
    else:
        values = mean_a - mean_b
        estimate = est_a - est_b
    low, high = np.quantile(values, [0.025, 0.975])
    return {"estimate": estimate, "low": float(low), "high": float(high), "draws": draws, "seeds_a": a.shape[0],
            "seeds_b": b.shape[0], "images": n}


def normal_difference(a_top1: Sequence[float], b_top1: Sequence[float], samples: int) -> dict[str, float]:
    """The difference of mean accuracies when per-image correctness is not recorded (records written before it):
    a normal 95% interval from each net's binomial variance (treated as unpaired, so wider than the paired
    bootstrap) plus, with several seeds, the variance of the seed means."""
    def variance(values: Sequence[float]) -> float:
        p = sum(values) / len(values)
        binomial = p * (1 - p) / samples / len(values)
        seeds = float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
        return binomial + seeds

    diff = sum(a_top1) / len(a_top1) - sum(b_top1) / len(b_top1)
    half = Z95 * math.sqrt(variance(a_top1) + variance(b_top1))
    return {"estimate": diff, "low": diff - half, "high": diff + half, "seeds_a": len(a_top1),
            "seeds_b": len(b_top1), "images": samples}


def difference_verdict(low: float, high: float, line: float = 0.0, *, above: str = "better",
                       below: str = "worse") -> str:
    """`above` when the whole interval lies above `line`, `below` when wholly below, else UNDECIDED."""
    if low > line:
        return above
    if high < line:
        return below
    return UNDECIDED


def group_correct(group: Mapping[str, Any]) -> list[np.ndarray] | None:
    """A seed group's per-image correctness arrays (`bench.report.seeds.seed_groups` keeps them), one per seed that
    trained; None when a seed lacks them (an old record)."""
    bits = group.get("correct") or {}
    trained = [seed for seed, top1 in (group.get("top1") or {}).items() if top1 is not None]
    if not trained or any(bits.get(seed) is None for seed in trained):
        return None
    return [bits[seed] for seed in trained]


def compare_groups(a: Mapping[str, Any], b: Mapping[str, Any], *, ratio: bool = False) -> dict[str, Any] | None:
    """Group a's accuracy minus (or over, `ratio`) group b's, with its 95% interval and the method behind it:
    the paired bootstrap where both groups recorded per-image correctness on the same images, else (differences
    only) the normal approximation. None when a group has no trained seed or no test-set size."""
    a_top1 = [v for v in (a.get("top1") or {}).values() if v is not None]
    b_top1 = [v for v in (b.get("top1") or {}).values() if v is not None]
    if not a_top1 or not b_top1:
        return None
    ca, cb = group_correct(a), group_correct(b)
    if ca is not None and cb is not None and len(ca[0]) == len(cb[0]):
        out = paired_bootstrap(ca, cb, ratio=ratio)
        return {**out, "method": "paired bootstrap over test images" + (" and seeds" if max(len(ca), len(cb)) > 1
                                                                         else "")}
    samples = a.get("samples") or b.get("samples")
    if not samples:
        return None
    out = normal_difference(a_top1, b_top1, samples)
    if ratio:  # the delta method: var(a/b) ~ (a/b)^2 (var a / a^2 + var b / b^2), the variances unpaired as above
        mean_a, mean_b = sum(a_top1) / len(a_top1), sum(b_top1) / len(b_top1)
        if not mean_b:
            return None
        half_diff = out["high"] - out["estimate"]
        estimate = mean_a / mean_b
        # normal_difference's half-width is Z95 * sqrt(var a + var b); split it back by each side's binomial share.
        var_a = mean_a * (1 - mean_a) / samples / len(a_top1)
        var_b = mean_b * (1 - mean_b) / samples / len(b_top1)
        scale = (half_diff / Z95) ** 2 / max(var_a + var_b, 1e-18)
        half = Z95 * estimate * math.sqrt(scale * (var_a / max(mean_a, 1e-12) ** 2 + var_b / mean_b ** 2))
        out = {**out, "estimate": estimate, "low": estimate - half, "high": estimate + half}
    return {**out, "method": "normal approximation (unpaired)"}
