"""Accuracy over training seeds: group records per configuration, summarize the seeds, judge a difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.accuracy.metrics import decode_correct
from bench.report.cells import fmt_pct, fmt_pct_ci

Record = dict[str, Any]

#: The key of a train record's `train_config` that says the training diverged (nan/inf loss), and where.
DIVERGED = "diverged"

def seed_groups(records: Sequence[Record], study: str, by: str = "group", engine: str | None = None,
                ) -> list[dict[str, Any]]:
    """One entry per configuration of an accuracy study (its units' `group`; `by="label"`: per label, as a timed
    study's extra seeds share their net's label), in plan order, over its seeds; `engine`: only that engine's
    accuracy records (a timed net has one per engine, its extra seeds torch's alone).

    Each holds `group`, `model`, `train_config` (of its first seed), `top1` {seed: torch top-1 or None when the
    training diverged}, `diverged` {seed: message}, `histories` [(seed, history)], `epochs_run` [epochs per seed],
    `stopped_early` (seeds that stopped early), `classes` and `samples` (of the test split), `correct` {seed:
    per-image correctness, where the records hold it (`bench.report.stats`)}, and the summary
    `mean`, `low`, `high`, `spread` (max - min over the seeds that trained; None with fewer than two) and `n`.
    """
    groups: dict[str, dict[str, Any]] = {}
    seed_of: dict[str, Any] = {}
    for r in records:
        if r.get("study") != study:
            continue
        key = _seed_key(r, by)
        g = groups.setdefault(key, {"group": key, "model": r.get("model"), "train_config": None, "top1": {},
                                    "diverged": {}, "histories": [], "epochs_run": [], "stopped_early": 0,
                                    "classes": None, "samples": None, "label": r.get("label"),
                                    "correct": {}})
        if r["kind"] == "train":
            config = r.get("train_config") or {}
            seed = config.get("seed")
            seed_of[r.get("unit")] = seed
            g["train_config"] = g["train_config"] or config
            g["histories"].append((seed, r.get("history") or []))
            g["epochs_run"].append(r.get("epochs"))
            g["stopped_early"] += bool(r.get("stopped_early"))
            if config.get(DIVERGED):
                g["diverged"][seed] = config[DIVERGED]
                g["top1"][seed] = None
            classes = (r.get("dataset") or {}).get("num_classes")
            g["classes"] = g["classes"] or classes
    for r in records:
        if r.get("study") == study and r["kind"] == "accuracy" and not r.get("eval_channels") \
                and engine in (None, r.get("engine")):
            g = groups.get(_seed_key(r, by))
            if g is None:
                continue
            seed = seed_of.get(r.get("unit"))
            g["top1"][seed] = r.get("top1")
            g["samples"] = g["samples"] or r.get("samples")
            if r.get("correct_bits") and r.get("samples"):
                g["correct"][seed] = decode_correct(r["correct_bits"], r["samples"])
            g["classes"] = g["classes"] or (len(r["per_class"]) if r.get("per_class") else None)
    for g in groups.values():
        values = [v for v in g["top1"].values() if v is not None]
        g["n"] = len(values)
        g["mean"] = sum(values) / len(values) if values else None
        g["low"], g["high"] = (min(values), max(values)) if values else (None, None)
        g["spread"] = g["high"] - g["low"] if len(values) >= 2 else None
    return list(groups.values())


def _seed_key(record: Record, by: str) -> str:
    return str(record.get(by) or record.get("label") or record.get("unit") or "")


def chance_level(group: dict[str, Any]) -> float | None:
    """The top-1 a net that did not train scores at most: 1/classes plus 3 binomial standard errors of the test
    images (a guess's accuracy on `samples` images)."""
    k, n = group.get("classes"), group.get("samples")
    if not k or not n:
        return None
    p = 1.0 / k
    return p + 3 * math.sqrt(p * (1 - p) / n)


def none_trained(groups: Sequence[dict[str, Any]]) -> str:
    """'' when some configuration trained on some seed; else the one paragraph that says so: every seed of every
    configuration scored at chance (or diverged), so a difference between them measures noise, not the settings."""
    scores = [v for g in groups for v in g["top1"].values() if v is not None]
    for g in groups:
        chance = chance_level(g)
        if chance is None or any(v is not None and v > chance for v in g["top1"].values()):
            return ""
    if not groups:
        return ""
    span = f" (top-1 {fmt_pct(min(scores))} to {fmt_pct(max(scores))})" if scores else ""
    return (f"No configuration trained at this budget: every seed of all {len(groups)} scored at chance or "
            f"diverged{span}, so their differences measure noise, not the settings; the study ran end to end, and "
            "its records hold each configuration's figures.\n\n")


def training_outcome(group: dict[str, Any]) -> str:
    """'trained', 'diverged (k of n seeds)', 'did not train (at chance)' or a mix, for tables and verdicts."""
    parts = []
    seeds = len(group["top1"])
    if group["diverged"]:
        parts.append(f"diverged ({len(group['diverged'])} of {seeds} seeds)")
    chance = chance_level(group)
    at_chance = [v for v in group["top1"].values() if v is not None and chance is not None and v <= chance]
    if at_chance:
        parts.append(f"did not train, at chance ({len(at_chance)} of {seeds} seeds)")
    return "; ".join(parts) or "trained"


def seed_difference(base: dict[str, Any], other: dict[str, Any]) -> tuple[float | None, str]:
    """(other's mean top-1 minus base's, and what its 95% interval supports): '+4.4 pp [+1.2, +7.5], better' or
    '... not decided at this budget' (`bench.report.stats.compare_groups`: a paired bootstrap over test images and
    seeds); 'n/a' when one did not train at all."""
    from bench.report.cells import fmt_pp
    from bench.report.stats import compare_groups, difference_verdict

    if base.get("mean") is None or other.get("mean") is None:
        return None, "n/a (a configuration has no trained seed)"
    c = compare_groups(other, base)
    diff = other["mean"] - base["mean"]
    if c is None:
        return diff, "no interval (no test-set size recorded)"
    return diff, f"{fmt_pp(c['estimate'], c['low'], c['high'])}, {difference_verdict(c['low'], c['high'])}"


def seed_cell(group: dict[str, Any]) -> str:
    """A net's torch top-1 as a table gives it: '81.2% [78.7, 83.5]' (the Wilson 95% interval over the test images)
    for one training run, '81.2% (80.1-82.3%)' (mean, min-max over the seeds) for several."""
    from bench.report.stats import wilson_interval

    if group.get("mean") is None:
        return "failed"
    if group.get("spread") is None:
        samples = group.get("samples")
        if not samples:
            return fmt_pct(group["mean"])
        return fmt_pct_ci(group["mean"], *wilson_interval(group["mean"], samples))
    return f"{fmt_pct(group['mean'])} ({fmt_pct(group['low'])}-{fmt_pct(group['high'])})"


def reference_cell(value: Any) -> str:
    if value == "failed":
        return "failed to train (about 1%)"
    return "n/a" if value is None else f"{value:.1f}%"
