"""Regressions between two sets of latency records: matched pairs, ratios with intervals, verdicts.

    >>> report = diff_records(read_all("baseline/"), read_all("results/"))
    >>> [(p["key"]["model"], p["ratio"], p["verdict"]) for p in report["pairs"]]

Records are matched by model, source, engine, precision, batch, input shape and machine. Two
records of two runs were not measured interleaved, so the interval (each side's latencies
resampled on their own) does not include drift between the runs: the verdict's threshold
(default 5%) is what absorbs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import DataProblem, UsageProblem

DEFAULT_DIFF_THRESHOLD = 0.05


def read_all(path: str | Path) -> list[dict[str, Any]]:
    """Every latency record of a JSON-lines file, or of every *.jsonl file under a folder."""
    path = Path(path)
    if not path.exists():
        raise UsageProblem(f"no records at {path}; give a records file (.jsonl) or a results folder")
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    records = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DataProblem(f"{file}:{number} is not a JSON record; repair or remove that line") from None
            if isinstance(record, dict) and record.get("kind") == "latency" and not record.get("error") \
                    and record.get("latencies_ms"):
                records.append(record)
    if not records:
        raise UsageProblem(f"{path} holds no latency records with raw latencies")
    return records


def machine_fingerprint(record: dict[str, Any]) -> str:
    """What makes two machines comparable: CPU model, usable cores, architecture and GPU."""
    machine = record.get("machine") or {}
    gpu = (machine.get("gpu") or {}).get("name")
    return f"{machine.get('cpu')} / {machine.get('cores_usable')} cores / {machine.get('arch')} / GPU {gpu}"


def _key(record: dict[str, Any], cross_machine: bool) -> tuple:
    source = record.get("source") or {"name": record.get("model")}
    key = (record.get("model"), source.get("kind"), source.get("sha256"), record.get("engine"), record.get("precision"),
           record.get("batch"), tuple(record.get("input_shape") or ()))
    return key if cross_machine else (*key, machine_fingerprint(record))


def _differences(base: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """Settings that differ between two matched records: {name: [baseline, new]}."""
    out = {}
    for section, sub in (("settings", None), ("engine_info", "options")):
        a = (base.get(section) or {}) if sub is None else ((base.get(section) or {}).get(sub) or {})
        b = (new.get(section) or {}) if sub is None else ((new.get(section) or {}).get(sub) or {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name) and name != "onnx":  # a cached export's path says nothing
                out[name] = [a.get(name), b.get(name)]
    for name in ("version",):
        a, b = (base.get("engine_info") or {}).get(name), (new.get("engine_info") or {}).get(name)
        if a != b:
            out[f"engine {name}"] = [a, b]
    return out


def diff_records(baseline: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]],
                 threshold: float = DEFAULT_DIFF_THRESHOLD, cross_machine: bool = False) -> dict[str, Any]:
    """Match `new` latency records to `baseline` ones and compare each pair's median latency.

    Returns {"pairs": [...], "unmatched_baseline": n, "unmatched_new": n, "regressed": bool}; a
    pair holds its key, both medians, `ratio` (new/baseline), `ratio_ci`, `verdict` (faster,
    slower, no measurable difference beyond `threshold`) and `settings_differ`. The newest
    record wins where one side has several for a key. Records from different machines are
    refused (UsageProblem) unless `cross_machine`.
    """
    from bench.measure.stats import INDEPENDENT_RATIO_CI_METHOD, independent_ratio_interval, verdict

    if not 0 <= threshold < 1:
        raise UsageProblem(f"--threshold is a fraction like 0.05, got {threshold}")
    base_by_key = {_key(r, cross_machine): r for r in baseline}
    new_by_key = {_key(r, cross_machine): r for r in new}
    if not cross_machine and not set(base_by_key) & set(new_by_key):
        base_machines = {machine_fingerprint(r) for r in baseline}
        new_machines = {machine_fingerprint(r) for r in new}
        if base_machines != new_machines and {_key(r, True) for r in baseline} & {_key(r, True) for r in new}:
            raise UsageProblem(f"the records come from different machines ({', '.join(sorted(base_machines))} vs "
                               f"{', '.join(sorted(new_machines))}); pass --cross-machine to compare them anyway")
    pairs = []
    for key, new_record in new_by_key.items():
        base_record = base_by_key.get(key)
        if base_record is None:
            continue
        ratio, low, high = independent_ratio_interval(base_record["latencies_ms"], new_record["latencies_ms"])
        pairs.append({
            "key": {"model": new_record["model"], "engine": new_record["engine"], "precision": new_record["precision"],
                    "batch": new_record["batch"], "input_shape": new_record["input_shape"]},
            "baseline_p50_ms": base_record["latency_ms_p50"], "new_p50_ms": new_record["latency_ms_p50"],
            "ratio": ratio, "ratio_ci": [low, high], "ci_method": INDEPENDENT_RATIO_CI_METHOD,
            "verdict": verdict(low, high, threshold), "threshold": threshold,
            "settings_differ": _differences(base_record, new_record),
            "baseline_commit": base_record.get("git_commit"), "new_commit": new_record.get("git_commit"),
        })
    return {"pairs": pairs, "threshold": threshold, "cross_machine": cross_machine,
            "unmatched_baseline": len(base_by_key) - len(pairs), "unmatched_new": len(new_by_key) - len(pairs),
            "regressed": any(p["verdict"] == "slower" for p in pairs)}
