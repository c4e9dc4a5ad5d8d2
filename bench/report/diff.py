"""Regressions between two sets of latency and serve records: matched pairs, ratios, verdicts.

    >>> report = diff_records(read_all("baseline/"), read_all("results/"))
    >>> [(p["key"]["model"], p["ratio"], p["verdict"]) for p in report["pairs"]]
    >>> [(p["key"]["scenario"], p["metric"], p["verdict"]) for p in report["serve_pairs"]]

Latency records are matched by model, source, engine, precision, batch, input shape and machine. Two
records of two runs were not measured interleaved, so the interval (each side's latencies
resampled on their own) does not include drift between the runs: the verdict's threshold
(default 5%) is what absorbs it.

Serve records (`rbench serve`, the serve study) are matched like with like: model, source, engine,
precision, device, LoadGen scenario, mode (a peak search or one run), input shape and machine. Each
scenario has its figure (`SERVE_METRICS`): Server and Offline samples/s (higher is better),
SingleStream's 90th and MultiStream's 99th percentile latency (lower is better). A serve record keeps
LoadGen's percentiles, not every latency, so its verdict is the ratio against the threshold alone; a
pair whose LoadGen verdict went from VALID to INVALID is a regression whatever its figure.
"""

from __future__ import annotations

import math
import re
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
    """Every latency and serve record of a JSON-lines file, or of every *.jsonl file under a folder, each checked.

    Read by `bench.records.io.iter_records`, as every records reader is: an unfinished last line (a
    write cut short) is skipped with a warning. A corrupt line, or a latency or serve record diff cannot
    compare (`check_latency_record`, `check_serve_record`), raises UnusableRecords naming its `file:line`.
    Records of other kinds, latency records of failed runs (`error` set), and serve records of accuracy
    runs or of units not served (`error` set) are passed over.
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
                elif _is_comparable_serve(record):
                    check_serve_record(record, where)
                    records.append(record)
        except UnusableRecords:
            raise
        except DataProblem as exc:  # a corrupt line: a data error for diff, not an environment problem
            raise UnusableRecords(str(exc)) from None
    if not records:
        raise UsageProblem(f"{path} holds no latency records with raw latencies and no serve records")
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


def _settings_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record's settings as two runs' can be compared: a worker's start without the zygote's process id
    ('fork of zygote 14454' -> 'fork of zygote'), which differs between any two invocations."""
    settings = dict(record.get("settings") or {})
    workers = settings.get("threads_in_workers")
    if isinstance(workers, dict) and isinstance(workers.get("start"), str):
        settings["threads_in_workers"] = {**workers, "start": re.sub(r"\s+\d+$", "", workers["start"])}
    return settings


def _differences(base: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """Settings that differ between two matched records: {name: [baseline, new]}."""
    out = {}
    for section, sub in (("settings", None), ("engine_info", "options")):
        if section == "settings":
            a, b = _settings_of(base), _settings_of(new)
        else:
            a, b = (base.get(section) or {}).get(sub) or {}, (new.get(section) or {}).get(sub) or {}
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
    """Match `new` latency records to `baseline` ones and compare each pair's median latency; serve records
    among them are compared by `diff_serve_records` (its pairs and counts under `serve_*`).

    Returns {"pairs": [...], "unmatched_baseline": n, "unmatched_new": n, "serve_pairs": [...],
    "serve_unmatched_baseline": n, "serve_unmatched_new": n, "regressed": bool}; a
    pair holds its key, both medians, `ratio` (new/baseline), `ratio_ci`, `verdict` (faster,
    slower, no measurable difference beyond `threshold`) and `settings_differ`. The newest
    record wins where one side has several for a key. Records from different machines are
    refused (UsageProblem) unless `cross_machine`.
    """
    from bench.measure.stats import INDEPENDENT_RATIO_CI_METHOD, independent_ratio_interval, verdict

    if not 0 <= threshold < 1:
        raise UsageProblem(f"--threshold is a fraction like 0.05, got {threshold}")
    base_serve = [r for r in baseline if r.get("kind") == "serve"]
    new_serve = [r for r in new if r.get("kind") == "serve"]
    baseline = [r for r in baseline if r.get("kind") != "serve"]
    new = [r for r in new if r.get("kind") != "serve"]
    for side, records in (("baseline", baseline), ("new", new)):
        for number, record in enumerate(records, 1):
            check_latency_record(record, f"{side} record {number}")
    serve = diff_serve_records(base_serve, new_serve, threshold, cross_machine)
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
            "serve_pairs": serve["pairs"], "serve_unmatched_baseline": serve["unmatched_baseline"],
            "serve_unmatched_new": serve["unmatched_new"],
            "regressed": any(p["verdict"] == "slower" for p in pairs) or serve["regressed"]}


# --------------------------------------------------------------------------- serve records

#: Each LoadGen scenario's figure in a serve record: (field, whether higher is better). MultiStream's is MLPerf's
#: 99th percentile of whole-query latency (`query_latency_ms_p99`).
SERVE_METRICS: dict[str, tuple[str, bool]] = {
    "server": ("samples_per_s", True), "offline": ("samples_per_s", True),
    "singlestream": ("latency_ms_p90", False), "multistream": ("query_latency_ms_p99", False),
}


def _is_comparable_serve(record: dict[str, Any]) -> bool:
    """A serve record with a performance figure: not an accuracy run, not a unit that could not be served."""
    return record.get("kind") == "serve" and record.get("mode") != "accuracy" and not record.get("error")


def check_serve_record(record: dict[str, Any], where: str) -> None:
    """Raise UnusableRecords (naming `where`) unless `record` is a serve record diff can compare: its matching
    fields of their JSON types, a known scenario, and its scenario's figure a positive, finite number."""
    for name, types in (("model", (str,)), ("engine", (str,)), ("scenario", (str,)), ("mode", (str,)),
                        ("source", (dict, type(None))), ("machine", (dict, type(None))),
                        ("input_shape", (list, type(None))), ("result", (str, type(None)))):
        value = record.get(name)
        if name not in record and type(None) not in types:
            raise UnusableRecords(f"{where}: the serve record lacks {name!r}; repair or remove that line")
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise UnusableRecords(f"{where}: {name!r} is {_json_type(value)}, not {wanted}; repair or remove that line")
    if record["scenario"] not in SERVE_METRICS:
        raise UnusableRecords(f"{where}: scenario {record['scenario']!r} is none of {', '.join(SERVE_METRICS)}; "
                              "repair or remove that line")
    field, _ = SERVE_METRICS[record["scenario"]]
    value = record.get(field)
    if value is None and field == "query_latency_ms_p99":
        value = record.get("latency_ms_p99")
    if not _positive_finite(value):
        raise UnusableRecords(f"{where}: the {record['scenario']} record's {field!r} is {_describe_bad(value)}, not "
                              "a positive, finite number; remeasure it")


def serve_metric(record: dict[str, Any]) -> tuple[str, float, bool]:
    """(field, value, higher is better) of a checked serve record's scenario figure."""
    field, higher = SERVE_METRICS[record["scenario"]]
    value = record.get(field)
    if value is None and field == "query_latency_ms_p99":  # a record without the per-query percentile
        field, value = "latency_ms_p99", record.get("latency_ms_p99")
    return field, float(value), higher


def _serve_key(record: dict[str, Any], cross_machine: bool) -> tuple:
    source = record.get("source") or {"name": record.get("model")}
    key = (record.get("model"), source.get("kind"), source.get("sha256"), record.get("engine"),
           record.get("precision"), record.get("device"), record.get("scenario"), record.get("mode"),
           tuple(record.get("input_shape") or ()))
    return key if cross_machine else (*key, machine_fingerprint(record))


def _serve_differences(base: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """Serving settings that differ between two matched serve records: {name: [baseline, new]}."""
    out = {}
    for name in ("workers", "threads", "max_batch", "batch_timeout_ms", "latency_bound_ms", "samples_per_query"):
        if base.get(name) != new.get(name):
            out[name] = [base.get(name), new.get(name)]
    a, b = base.get("loadgen_settings") or {}, new.get("loadgen_settings") or {}
    for name in ("min_duration_s", "min_queries"):
        if a.get(name) != b.get(name):
            out[name] = [a.get(name), b.get(name)]
    if (base.get("engine_info") or {}).get("version") != (new.get("engine_info") or {}).get("version"):
        out["engine version"] = [(base.get("engine_info") or {}).get("version"),
                                 (new.get("engine_info") or {}).get("version")]
    return out


def diff_serve_records(baseline: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]],
                       threshold: float = DEFAULT_DIFF_THRESHOLD, cross_machine: bool = False) -> dict[str, Any]:
    """Match `new` serve records to `baseline` ones (like with like) and compare each pair's scenario figure.

    A pair holds its key, `metric` (the field), both values, `ratio` (new/baseline), `better` ('higher' or
    'lower'), both LoadGen verdicts, `verdict` and `settings_differ`. The verdict is 'became INVALID' when
    LoadGen's verdict went from VALID to INVALID (a regression whatever the figure), else 'slower' (worse by
    more than `threshold`: samples/s down, or latency up), 'faster' (better by more than it), or 'within
    threshold'. The newest record wins where one side has several for a key; records from different machines
    are refused (UsageProblem) unless `cross_machine`. Returns {"pairs", "unmatched_baseline", "unmatched_new",
    "regressed"}.
    """
    if not 0 <= threshold < 1:
        raise UsageProblem(f"--threshold is a fraction like 0.05, got {threshold}")
    for side, records in (("baseline", baseline), ("new", new)):
        for number, record in enumerate(records, 1):
            check_serve_record(record, f"{side} serve record {number}")
    base_by_key = {_serve_key(r, cross_machine): r for r in baseline}
    new_by_key = {_serve_key(r, cross_machine): r for r in new}
    if not cross_machine and base_by_key and new_by_key and not set(base_by_key) & set(new_by_key):
        base_machines = {machine_fingerprint(r) for r in baseline}
        new_machines = {machine_fingerprint(r) for r in new}
        if base_machines != new_machines and {_serve_key(r, True) for r in baseline} & {_serve_key(r, True) for r in new}:
            raise UsageProblem(f"the serve records come from different machines ({', '.join(sorted(base_machines))} "
                               f"vs {', '.join(sorted(new_machines))}); pass --cross-machine to compare them anyway")
    pairs = []
    for key, new_record in new_by_key.items():
        base_record = base_by_key.get(key)
        if base_record is None:
            continue
        field, base_value, higher = serve_metric(base_record)
        _, new_value, _ = serve_metric(new_record)
        ratio = new_value / base_value
        worse = ratio < 1 - threshold if higher else ratio > 1 + threshold
        better = ratio > 1 + threshold if higher else ratio < 1 - threshold
        base_result, new_result = base_record.get("result"), new_record.get("result")
        verdict = ("became INVALID" if base_result == "VALID" and new_result not in (None, "VALID")
                   else "slower" if worse else "faster" if better else "within threshold")
        pairs.append({
            "key": {"model": new_record["model"], "engine": new_record["engine"],
                    "precision": new_record.get("precision"), "scenario": new_record["scenario"],
                    "mode": new_record["mode"], "input_shape": new_record.get("input_shape")},
            "metric": field, "better": "higher" if higher else "lower", "baseline": base_value, "new": new_value,
            "ratio": ratio, "baseline_result": base_result, "new_result": new_result, "verdict": verdict,
            "threshold": threshold, "settings_differ": _serve_differences(base_record, new_record),
            "baseline_commit": base_record.get("git_commit"), "new_commit": new_record.get("git_commit"),
        })
    return {"pairs": pairs, "unmatched_baseline": len(base_by_key) - len(pairs),
            "unmatched_new": len(new_by_key) - len(pairs),
            "regressed": any(p["verdict"] in ("slower", "became INVALID") for p in pairs)}
