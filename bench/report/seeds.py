"""Accuracy over training seeds: group records per configuration, summarize the seeds, judge a difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.report.cells import fmt_pct

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
    `stopped_early` (seeds that stopped early), `classes` and `samples` (of the test split), and the summary
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
                                    "classes": None, "samples": None, "label": r.get("label")})
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
            g["top1"][seed_of.get(r.get("unit"))] = r.get("top1")
            g["samples"] = g["samples"] or r.get("samples")
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
    """(other's mean top-1 minus base's, and what it supports): 'within seed noise' when the difference is no
    larger than the wider of the two seed spreads (max - min); 'n/a' when one did not train at all."""
    if base.get("mean") is None or other.get("mean") is None:
        return None, "n/a (a configuration has no trained seed)"
    diff = other["mean"] - base["mean"]
    spreads = [s for s in (base.get("spread"), other.get("spread")) if s is not None]
    if not spreads:
        return diff, "one seed each: no spread to compare with"
    noise = max(spreads)
    if abs(diff) <= noise:
        return diff, f"within seed noise (seed spread {100 * noise:.1f} pp)"
    return diff, f"{'gain' if diff > 0 else 'loss'} beyond the seed spread ({100 * noise:.1f} pp)"


def seed_cell(group: dict[str, Any]) -> str:
    """'81.2% (80.1-82.3%)': the mean top-1 and its min-max over the seeds; '81.2% (one training run)' with one."""
    if group.get("mean") is None:
        return "failed"
    if group.get("spread") is None:
        return f"{fmt_pct(group['mean'])} (one training run)"
    return f"{fmt_pct(group['mean'])} ({fmt_pct(group['low'])}-{fmt_pct(group['high'])})"


def reference_cell(value: Any) -> str:
    if value == "failed":
        return "failed to train (about 1%)"
    return "n/a" if value is None else f"{value:.1f}%"
