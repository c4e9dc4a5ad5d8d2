"""Intervals over worker processes: a hierarchical bootstrap (workers, then rounds within each), and modes.

A timed entry runs in several worker processes (`bench.measure.workers`), each timing it in several
rounds. Two levels of spread follow: between rounds of one process, and between processes (a
process can settle into a slow thread mode for its whole life, which no number of rounds inside it
can see). The unit of data here is a round's median; an entry's figure is the mean of its rounds'
medians over all workers, and an interval resamples workers first, then rounds within each picked
worker, so both levels are in it.

Workers of different entries that share an index ran interleaved, round by round, at the same time:
resampling uses the same worker and round indices for every entry (paired), as drift hits them alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
HIERARCHICAL_METHOD = ("hierarchical bootstrap over worker processes, then rounds within each (paired, "
                       "2000 resamples); standard error of the log ratio with Student's t on workers - 1, 95%")
#: Two workers whose medians differ by more than this fraction, with intervals that exclude each other's
#: median, are in different modes.
MODE_GAP = 0.10
#: Sorted round medians further apart than this split a run into the machine's speeds (`detect_periods`).
PERIOD_GAP = 0.20
#: A speed needs at least this share of the rounds (and two of them) to count as one; fewer are outliers.
PERIOD_MIN_SHARE = 0.10
#: Default target for the ratio's interval: within +/- this fraction of the ratio.
DEFAULT_PRECISION_TARGET = 0.03


def round_medians(workers: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """(workers, rounds) array of round medians; workers with more rounds than the fewest are cut to it."""
    if not workers or not all(workers):
        raise ValueError("round_medians needs at least one round in every worker")
    rounds = min(len(w) for w in workers)
    return np.array([[float(np.median(r)) for r in w[:rounds]] for w in workers], dtype=float)


def _bootstrap_means(arrays: Sequence[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """For each (W, R) array, `resamples` means over workers drawn with replacement, then rounds drawn with
    replacement within each drawn worker; the same draws for every array."""
    workers, rounds = arrays[0].shape
    rng = np.random.default_rng(seed)
    pick_w = rng.integers(0, workers, size=(resamples, workers))
    pick_r = rng.integers(0, rounds, size=(resamples, workers, rounds))
    return [a[pick_w[:, :, None], pick_r].mean(axis=(1, 2)) for a in arrays]


def _t_interval(point: float, log_samples: np.ndarray, workers: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import t as student_t

    # The bootstrap's variance of a mean over n drawn units is (n-1)/n of the unbiased one: put it back.
    se = float(np.std(log_samples)) * math.sqrt(workers / max(workers - 1, 1))
    quantile = float(student_t.ppf(0.5 + confidence / 2, workers - 1)) if workers > 1 else \
        float(np.sqrt(2) * 1.959964)
    centre = math.log(point)
    return math.exp(centre - quantile * se), math.exp(centre + quantile * se)


def level_interval(workers: Sequence[Sequence[Sequence[float]]], confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(figure, low, high): the mean of round medians over all workers, and its hierarchical interval."""
    medians = round_medians(workers)
    point = float(medians.mean())
    (boot,) = _bootstrap_means([medians], resamples, seed)
    low, high = _t_interval(point, np.log(boot), medians.shape[0], confidence)
    return point, low, high


def ratio_interval(base: Sequence[Sequence[Sequence[float]]], new: Sequence[Sequence[Sequence[float]]],
                   confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high) of new over base, each the mean of its round medians over workers, with the
    hierarchical interval. Workers pair by index (the first `min(len)` of each) and rounds by index."""
    count = min(len(base), len(new))
    if count < 1:
        raise ValueError("ratio_interval needs at least one worker on each side")
    base_m, new_m = round_medians(base[:count]), round_medians(new[:count])
    rounds = min(base_m.shape[1], new_m.shape[1])
    base_m, new_m = base_m[:, :rounds], new_m[:, :rounds]
    ratio = float(new_m.mean() / base_m.mean())
    boot_base, boot_new = _bootstrap_means([base_m, new_m], resamples, seed)
    low, high = _t_interval(ratio, np.log(boot_new) - np.log(boot_base), count, confidence)
    return ratio, low, high


def half_width(ratio: float, low: float, high: float) -> float:
    """How far the interval reaches from its figure, as a fraction (the larger side)."""
    return max(high / ratio - 1.0, 1.0 - low / ratio) if ratio > 0 else math.inf


def target_met(ratio: float, low: float, high: float, target: float) -> bool:
    """Whether the interval lies within +/- `target` of its figure."""
    return half_width(ratio, low, high) <= target


def detect_modes(worker_latencies: Sequence[Sequence[float]], gap: float = MODE_GAP) -> dict[str, Any]:
    """Whether workers' medians fall into separate clusters ("modes"), and the clusters.

    For one entry this cannot tell a process's own mode from a slow period of the machine that fell on
    it; `ratio_modes` can, for a pair of entries timed together.
    Workers sorted by median split into clusters where the next median is more than `gap` above the last
    and each of the two workers' 95% median intervals (distribution-free) excludes the other's median.
    Returns {"unstable", "modes_ms" (each cluster's median of worker medians), "mode_workers" (counts),
    "worker_medians_ms"}.
    """
    from bench.measure.stats import quantile_interval

    medians = [float(np.median(w)) for w in worker_latencies]
    intervals = [quantile_interval(w, 50) or (min(w), max(w)) for w in worker_latencies]
    return _modes(medians, lambda j, i: intervals[j][1] < medians[i] and intervals[i][0] > medians[j], gap)


def _modes(medians: Sequence[float], apart, gap: float) -> dict[str, Any]:
    """`detect_modes`' fields for workers' medians, split where the next median (sorted) is more than `gap` above
    the last and `apart(last, next)` (worker indices) holds."""
    order = sorted(range(len(medians)), key=medians.__getitem__)
    clusters: list[list[int]] = []
    for i in order:
        if clusters:
            j = clusters[-1][-1]
            if not (medians[i] > medians[j] * (1 + gap) and apart(j, i)):
                clusters[-1].append(i)
                continue
        clusters.append([i])
    modes = [float(np.median([medians[i] for i in c])) for c in clusters]
    return {"unstable": len(clusters) > 1, "modes_ms": modes, "mode_workers": [len(c) for c in clusters],
            "worker_medians_ms": list(medians)}


def ratio_modes(base: Sequence[Sequence[Sequence[float]]], new: Sequence[Sequence[Sequence[float]]],
                gap: float = MODE_GAP) -> dict[str, Any]:
    """`detect_modes` over the paired ratios of each worker pair (new's round median over base's, round by
    round): whether the *ratio* differs between processes. Workers that share an index ran interleaved, so
    a slow period of the machine slows both and leaves their ratio; a process stuck in a slow mode on one
    side moves it.

    A side whose own workers fall into modes (`detect_modes`) makes the ratio unstable too where the pairing
    did not cancel them: the worker pairs' ratios then split by more than `gap` as well, whether or not
    their rounds' intervals exclude each other. On the 2-core Intel Xeon VM one torch thread pinned to a core
    ran at about 2.1 ms in some stretches and 3.4 ms in others, while onnxruntime and OpenVINO on both cores
    did not follow: the ladder's ratios over torch then took one value per worker in the fast stretch and
    another in the slow one, and an interval over both pretended there was one
    (results/ladder-modes-intel-r-xeon-r-processor-2c/).
    Returns detect_modes' fields, with ratios in place of milliseconds."""
    count = min(len(base), len(new))
    pairs = []
    for b, n in zip(base[:count], new[:count]):
        rounds = min(len(b), len(n))
        pairs.append([float(np.median(n[r]) / np.median(b[r])) for r in range(rounds)])
    modes = detect_modes(pairs, gap)
    if modes["unstable"]:
        return modes
    if any(detect_modes([[v for r in w for v in r] for w in side[:count]], gap)["unstable"] for side in (base, new)):
        return _modes(modes["worker_medians_ms"], lambda j, i: True, gap)
    return modes


def split_workers(latencies: Sequence[float], worker_rounds: Sequence[Sequence[int]] | None = None,
                  workers: int | None = None, rounds: int | None = None) -> list[list[list[float]]] | None:
    """A worker-timed latency record's pooled runs (`latencies_ms`, worker by worker, round by round) back as
    workers x rounds x runs: from its `worker_rounds` (each worker's runs per round), or, for a record written
    before that field, from `workers` and `rounds` (all rounds of all workers) when they divide the runs evenly,
    as every worker of one invocation times the same rounds of the same size. None when neither adds up."""
    if worker_rounds:
        if sum(sum(w) for w in worker_rounds) != len(latencies):
            return None
        out, at = [], 0
        for sizes in worker_rounds:
            worker = []
            for size in sizes:
                worker.append(list(latencies[at:at + size]))
                at += size
            out.append(worker)
        return out
    if not workers or not rounds or rounds % workers or len(latencies) % rounds:
        return None
    per_worker, size = rounds // workers, len(latencies) // rounds
    return split_workers(latencies, [[size] * per_worker for _ in range(workers)])


def paired_worker_ratio(base: Sequence[Sequence[Sequence[float]]], new: Sequence[Sequence[Sequence[float]]],
                        threshold: float) -> dict[str, Any]:
    """new/base of two entries timed in the same generations of workers (paired by index): the hierarchical
    interval and its verdict, or "unstable" with the ratio's modes when the worker pairs' own ratios split
    (`ratio_modes`). Returns {ratio, low, high, verdict, unstable, ratio_modes, mode_workers, note}."""
    from bench.measure.stats import verdict

    ratio, low, high = ratio_interval(base, new)
    modes = ratio_modes(base, new)
    unstable = bool(modes["unstable"])
    return {"ratio": ratio, "low": low, "high": high, "unstable": unstable,
            "verdict": "unstable" if unstable else verdict(low, high, threshold),
            "ratio_modes": [round(m, 5) for m in modes["modes_ms"]] if unstable else None,
            "mode_workers": modes["mode_workers"] if unstable else None,
            "note": describe_modes(modes["modes_ms"], modes["mode_workers"], unit="") if unstable else None}


def describe_modes(modes_ms: Sequence[float], mode_workers: Sequence[int], unit: str = " ms") -> str:
    """'unstable: 2.3 ms in 3 processes, 5.6 ms in 2' for a report or verdict (unit "" for ratios, as
    'unstable: ratio 0.95 in 5 processes, 1.12 in 2')."""
    parts = [f"{m:.3g}{unit} in {n} process{'es' if n != 1 else ''}" for m, n in zip(modes_ms, mode_workers)]
    if not unit:
        parts[0] = "ratio " + parts[0]
    return "unstable: " + ", ".join(parts)


def detect_periods(workers: Sequence[Sequence[Sequence[float]]], gap: float = PERIOD_GAP,
                   min_share: float = PERIOD_MIN_SHARE) -> dict[str, Any]:
    """Whether the machine ran at more than one speed during a run: the rounds' medians (every worker's)
    fall into clusters more than `gap` apart, each holding at least `min_share` of the rounds and two.

    This is the spread in time, not between processes: on a shared host a whole VM can run far slower for
    seconds at a time, whatever the thread count (results/slow-periods-*: one thread in one process, timed
    in 0.5 s windows). Every entry of a comparison is timed round by round in turn, so the
    slow periods fall on all of them and the ratio, which pairs rounds, holds; an absolute latency mixes
    the speeds. Returns {"slow_periods", "period_modes_ms" (each cluster's median), "period_rounds"}.
    """
    medians = sorted(float(np.median(r)) for w in workers for r in w if len(r))
    if not medians:
        return {"slow_periods": False, "period_modes_ms": [], "period_rounds": []}
    clusters: list[list[float]] = [[medians[0]]]
    for value in medians[1:]:
        if value > clusters[-1][-1] * (1 + gap):
            clusters.append([value])
        else:
            clusters[-1].append(value)
    least = max(2, math.ceil(min_share * len(medians)))
    while len(clusters) > 1 and min(len(c) for c in clusters) < least:
        i = min(range(len(clusters)), key=lambda k: len(clusters[k]))
        if i == 0:
            j = 1
        elif i == len(clusters) - 1:
            j = i - 1
        else:  # into the neighbour it is closer to
            j = i - 1 if clusters[i][0] / clusters[i - 1][-1] <= clusters[i + 1][0] / clusters[i][-1] else i + 1
        merged = sorted(clusters[i] + clusters[j])
        clusters[min(i, j)] = merged
        del clusters[max(i, j)]
    return {"slow_periods": len(clusters) > 1, "period_modes_ms": [float(np.median(c)) for c in clusters],
            "period_rounds": [len(c) for c in clusters]}


def describe_periods(modes_ms: Sequence[float], rounds: Sequence[int]) -> str:
    """'2.0 ms in 40 rounds, 3.2 ms in 20'."""
    return ", ".join(f"{m:.3g} ms in {n} round{'s' if n != 1 else ''}" for m, n in zip(modes_ms, rounds))
