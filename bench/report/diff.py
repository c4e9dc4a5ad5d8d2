"""Regressions between two sets of latency records: matched pairs, ratios with intervals, verdicts.

    >>> report = diff_records(read_all("baseline/"), read_all("results/"))
    >>> [(p["key"]["model"], p["ratio"], p["verdict"]) for p in report["pairs"]]

Records are matched by model, source, engine, precision, batch, input shape and machine. Two
records of two runs were not measured interleaved, so the interval (each side's latencies
resampled on their own) does not include drift between the runs: the verdict's threshold
(default 5%) is what absorbs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import DataProblem, UsageProblem

DEFAULT_DIFF_THRESHOLD = 0.05


class UnusableRecords(DataProblem):
    """A records file diff cannot trust: corrupt, malformed, or with latencies no clock measured
    (NaN, infinite, zero or negative). Its own exit code, so CI tells bad data from a regression."""

    exit_code = 3


#: The fields a latency record must hold for diff to match and compare it, and the JSON types each may have.
_MATCH_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "engine": (str,), "precision": (str,), "batch": (int,), "input_shape": (list,),
    "source": (dict, type(None)), "machine": (dict, type(None)), "settings": (dict, type(None)),
    "engine_info": (dict, type(None)),
}


def _positive_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_latency_record(record: dict[str, Any], where: str) -> None:
    """Raise UnusableRecords (naming `where`, e.g. `file:line`) unless `record` is a latency record diff can
    compare: the matching fields of their JSON types, and latencies that are positive, finite numbers."""
    for name, types in _MATCH_FIELDS.items():
        if name not in record and type(None) in types:
            continue
        if name not in record:
            raise UnusableRecords(f"{where}: the latency record lacks {name!r}; repair or remove that line")
        value = record[name]
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise UnusableRecords(f"{where}: {name!r} is {_json_type(value)}, not {wanted}; repair or remove that line")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in record["input_shape"]):
        raise UnusableRecords(f"{where}: 'input_shape' is not a list of integers; repair or remove that line")
    for section, name in (("engine_info", "options"), ("machine", "gpu")):
        value = (record.get(section) or {}).get(name)
        if not isinstance(value, (dict, type(None))):
            raise UnusableRecords(f"{where}: '{section}.{name}' is {_json_type(value)}, not an object or null; "
                                  "repair or remove that line")
    latencies = record.get("latencies_ms")
    if not isinstance(latencies, list) or not latencies:
        raise UnusableRecords(f"{where}: 'latencies_ms' is {_json_type(latencies)}, not a list of latencies in ms; "
                              "repair or remove that line")
    bad = [v for v in latencies if not _positive_finite(v)]
    if bad:
        raise UnusableRecords(f"{where}: 'latencies_ms' holds {len(bad)} of {len(latencies)} values that are not "
                              f"positive, finite numbers of ms, such as {_describe_bad(bad[0])}; a regression gate "
                              "cannot trust such a record: remeasure it")
    if "latency_ms_p50" not in record:
        raise UnusableRecords(f"{where}: the latency record lacks 'latency_ms_p50'; repair or remove that line")
    if not _positive_finite(record["latency_ms_p50"]):
        raise UnusableRecords(f"{where}: 'latency_ms_p50' is {_describe_bad(record['latency_ms_p50'])}, not a "
                              "positive, finite number of ms; remeasure it")


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
               bool: "true/false"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _describe_bad(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value!r} (not finite)" if not math.isfinite(value) else f"{value!r} (not positive)"
    return _json_type(value)


def read_all(path: str | Path) -> list[dict[str, Any]]:
    """Every latency record of a JSON-lines file, or of every *.jsonl file under a folder, each checked.

    Read by `bench.records.io.iter_records`, as every records reader is: an unfinished last line (a
    write cut short) is skipped with a warning. A corrupt line, or a latency record diff cannot
    compare (`check_latency_record`), raises UnusableRecords naming its `file:line`. Records of other
    kinds, and latency records of failed runs (`error` set), are passed over.
    """
    from bench.records.io import iter_records

    path = Path(path)
    if not path.exists():
        raise UsageProblem(f"no records at {path}; give a records file (.jsonl) or a results folder")
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    records = []
    for file in files:
        try:
            for where, record in iter_records(file):
                if record.get("kind") == "latency" and not record.get("error"):
                    check_latency_record(record, where)
                    records.append(record)
        except UnusableRecords:
            raise
        except DataProblem as exc:  # a corrupt line: a data error for diff, not an environment problem
            raise UnusableRecords(str(exc)) from None
    if not records:
        raise UsageProblem(f"{path} holds no latency records with raw latencies")
    return records


def machine_fingerprint(record: dict[str, Any]) -> str:
    """What makes two machines comparable: CPU model, usable cores, architecture and GPU."""
    machine = record.get("machine") or {}
    gpu = (machine.get("gpu") or {}).get("name")  # an object or null (check_latency_record)
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
    for side, records in (("baseline", baseline), ("new", new)):
        for number, record in enumerate(records, 1):
            check_latency_record(record, f"{side} record {number}")
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
