"""Records -> rows and Markdown: the formatting every report section shares.

Pure functions: numbers to table cells, result records (`bench.records.io`) to one row per unit, rows to a
Markdown table, and the ratio and accuracy-gap phrases the findings use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.report.cells import fmt_count, fmt_ms, fmt_num, fmt_pct, fmt_pp, fmt_ratio, fmt_text  # noqa: F401 - the studies read them here
from bench.report.seeds import seed_cell, seed_groups

Record = dict[str, Any]
Column = tuple[str, str, Callable[[Any], str]]  # (header, row key, formatter)


# --------------------------------------------------------------------------- formatting


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub Markdown table of `rows`, one column per (header, key, formatter)."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(f(row.get(k)) for _, k, f in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


# --------------------------------------------------------------------------- records -> rows


def records_of(records: Iterable[Record], kind: str | None = None, study: str | None = None,
               **match: Any) -> list[Record]:
    """The records of `kind` (and `study`) whose fields equal `match` (a None value matches a missing key)."""
    out = []
    for r in records:
        if kind is not None and r.get("kind") != kind:
            continue
        if study is not None and r.get("study") != study:
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def is_ladder_record(record: Record) -> bool:
    """Whether `record` comes from a precision ladder's timing phase (it names its rung: 'ort int8')."""
    return bool(record.get("rung"))


def engines_in(records: Iterable[Record]) -> list[str]:
    """Engines the studies timed, in first-seen order (a precision ladder's rungs have their own section)."""
    seen: dict[str, None] = {}
    for r in records:
        if r.get("kind") == "latency" and r.get("engine") and not is_ladder_record(r):
            seen.setdefault(r["engine"], None)
    return list(seen)


def model_depth(name: str) -> int | None:
    """The depth in a CIFAR ResNet/plain name ('plain56' -> 56)."""
    m = re.fullmatch(r"(?:resnet|plain)(\d+)", name or "")
    return int(m.group(1)) if m else None


def unit_rows(records: Sequence[Record], study: str) -> list[dict[str, Any]]:
    """One row per unit of `study` (in plan order): everything its tables and plots need."""
    from bench.measure.intervals import split_workers

    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("study") != study or r.get("accuracy_only"):  # an extra seed: only in the seed summary below
            continue
        label = r.get("label") or r.get("unit")
        row = rows.setdefault(label, {"label": label, "model": r.get("model"), "group": r.get("group", ""),
                                      "unit": r.get("unit"), "act": r.get("act"), "history": []})
        kind = r["kind"]
        if kind == "train":
            row.update(history=r.get("history") or [], final_train_error=r.get("final_train_error"),
                       final_val_error=r.get("final_val_error"), best_epoch=r.get("best_epoch"),
                       train_seconds=r.get("train_seconds"), epochs=r.get("epochs"),
                       train_images_per_epoch=r.get("train_images_per_epoch"),
                       val_size=((r.get("dataset") or {}).get("sizes") or {}).get("val"))
        elif kind == "flops":
            row.update(params=r.get("params"), macs=r.get("macs"), flops=r.get("flops"),
                       counters_agree=r.get("counters_agree"))
        elif kind == "export":
            row.update(parity_passed=r.get("parity_passed"), parity_max_abs_err=r.get("parity_max_abs_err"),
                       exporter=r.get("exporter"))
        elif kind == "latency":
            row[f"latency_p50_{r['engine']}"] = r.get("latency_ms_p50")
            row[f"latency_ci_{r['engine']}"] = r.get("latency_ms_p50_ci")
            row[f"latencies_{r['engine']}"] = (r.get("latencies_ms"), r.get("rounds"))
            if r.get("timing_mode") == "workers":  # each worker's rounds, paired by index with its neighbours'
                row[f"workers_{r['engine']}"] = split_workers(r.get("latencies_ms") or [], r.get("worker_rounds"),
                                                              r.get("workers"), r.get("rounds"))
            row[f"latency_p99_{r['engine']}"] = r.get("latency_ms_p99")
            row[f"latency_cv_{r['engine']}"] = r.get("latency_cv")
        elif kind == "throughput":
            row[f"throughput_{r['engine']}"] = r.get("throughput_img_s")
            row["throughput_batch"] = r.get("batch")
        elif kind == "accuracy":
            if r.get("eval_channels"):
                row.setdefault("subsets", {})[r["eval_channels"]] = r.get("top1")
                row["subset_mode"] = r.get("eval_channel_mode")  # 'average' (naive) or 'select' (fed natively)
                continue
            row[f"top1_{r['engine']}"] = r.get("top1")
            row.setdefault("samples", r.get("samples"))
            row[f"f1_{r['engine']}"] = r.get("f1_macro")
            row.setdefault("per_class", r.get("per_class"))
            if r.get("top1") is not None:
                row.setdefault("top1", r.get("top1"))
                row.setdefault("test_error", 1.0 - r["top1"])
            if r.get("agreement") is not None and r.get("engine") != r.get("reference_engine"):
                row[f"agreement_{r['engine']}"] = r.get("agreement")
    seeds = {g["label"]: g for g in seed_groups(records, study, by="label", engine="torch")}
    for row in rows.values():
        row["seeds"] = seeds.get(row["label"])
        row["top1_seeds"] = seed_cell(row["seeds"]) if row["seeds"] else "n/a"
    return list(rows.values())


def measurement_columns(engines: Sequence[str]) -> list[Column]:
    """The standard columns: params, MACs, FLOPs, top-1 and latency/throughput per engine."""
    cols: list[Column] = [("model", "label", fmt_text), ("params", "params", fmt_count), ("MACs", "macs", fmt_count),
                          ("FLOPs", "flops", fmt_count)]
    cols.append(SEED_COLUMN)  # torch's; every other engine's agreement with it is in the export-parity line
    for e in engines:
        cols.append((f"p50 ms {e}", f"latency_p50_{e}", fmt_ms))
    for e in engines:
        cols.append((f"img/s {e}", f"throughput_{e}", fmt_num))
    return cols


# --------------------------------------------------------------------------- plots


def image_link(path: Path | None, out_dir: Path, alt: str) -> str:
    """A Markdown image paragraph of the figure at `path` (relative to `out_dir`); '' for no figure."""
    return image_row(out_dir, (path, alt))


def image_row(out_dir: Path, *figures: tuple[Path | None, str]) -> str:
    """Several (path, alt text) figures in one Markdown paragraph, side by side where the page is wide enough; the
    figures that are None are left out ('' for none)."""
    links = [f"![{alt}]({Path(path).relative_to(out_dir).as_posix()})" for path, alt in figures if path]
    return " ".join(links) + "\n\n" if links else ""


def latency_comparison(a: dict, b: dict, engine: str) -> dict[str, Any] | None:
    """`a`'s p50 latency over `b`'s on `engine` (rows of `unit_rows`), timed together: {ratio, low, high, verdict,
    unstable}. Timed in the same generations of worker processes: the hierarchical interval over workers and
    rounds, or "unstable" with the ratio's modes (`bench.measure.intervals.paired_worker_ratio`); timed in one
    process: paired rounds (`bench.measure.stats.compare_latencies`). Verdicts 'faster', 'slower', 'no measurable
    difference' or 'unstable: ratio X in N processes, Y in M'; the bare ratio with no interval when a row lacks
    its raw latencies; None when a row was not timed on `engine`."""
    from bench.measure.intervals import paired_worker_ratio
    from bench.measure.stats import DEFAULT_THRESHOLD, compare_latencies

    a_workers, b_workers = a.get(f"workers_{engine}"), b.get(f"workers_{engine}")
    if a_workers and b_workers and len(a_workers) == len(b_workers):
        c = paired_worker_ratio(b_workers, a_workers, DEFAULT_THRESHOLD)
        if c["unstable"]:  # the modes instead of an interval that would pretend the processes agree
            return {"ratio": c["ratio"], "low": None, "high": None, "unstable": True, "verdict": c["note"]}
        return {"ratio": c["ratio"], "low": c["low"], "high": c["high"], "unstable": False, "verdict": c["verdict"]}

    (a_lat, a_rounds), (b_lat, b_rounds) = a.get(f"latencies_{engine}") or (None, None), \
        b.get(f"latencies_{engine}") or (None, None)
    if a_lat and b_lat:
        c = compare_latencies(b_lat, a_lat, b_rounds, a_rounds)
        return {"ratio": c["ratio"], "low": c["low"], "high": c["high"], "verdict": c["verdict"]}
    pa, pb = a.get(f"latency_p50_{engine}"), b.get(f"latency_p50_{engine}")
    if not pa or not pb:
        return None
    return {"ratio": pa / pb, "low": None, "high": None, "verdict": "no interval"}


def latency_ratios(a: dict, b: dict, engines: Sequence[str]) -> str:
    """`a`'s p50 latency over `b`'s per engine, in the report's one ratio notation with what its interval supports:
    "torch 1.96x [1.90, 2.01] slower; ort 1.01x [0.97, 1.04] no measurable difference"."""
    parts = []
    for e in engines:
        c = latency_comparison(a, b, e)
        parts.append(f"{e} n/a" if c is None else f"{e} {fmt_ratio(c['ratio'], c['low'], c['high'])} {c['verdict']}")
    return "; ".join(parts)


def ratio_text(a: Any, b: Any) -> str:
    """a / b in the report's ratio notation (a count: no interval)."""
    return "n/a" if not a or not b else fmt_ratio(a / b)


def pp_text(a: Any, b: Any) -> str:
    """Difference of two fractions in percentage points."""
    return "n/a" if a is None or b is None else fmt_pp(a - b)


#: Torch top-1 with its 95% interval: Wilson over the test images for one training run, or the mean and min-max over
#: the seeds a net was trained with (`Preset.accuracy_seeds`).
SEED_COLUMN: Column = ("top-1 [95% CI] or mean (min-max, seeds)", "top1_seeds", fmt_text)


def accuracy_comparison(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """`a`'s torch top-1 minus `b`'s (rows of `unit_rows`, or seed groups) with its 95% interval
    (`bench.report.stats.compare_groups`: a paired bootstrap over test images and seeds) and verdict: 'better',
    'worse' or 'not decided at this budget'. None when either has no trained seed."""
    from bench.report.stats import compare_groups, difference_verdict

    ga, gb = a.get("seeds", a), b.get("seeds", b)
    if not ga or not gb:
        return None
    c = compare_groups(ga, gb)
    if c is None:
        return None
    return {**c, "verdict": difference_verdict(c["low"], c["high"])}


def accuracy_gap(a: dict[str, Any], b: dict[str, Any], *, as_error: bool = False) -> str:
    """`a`'s torch top-1 minus `b`'s as a finding says it: '+4.4 pp [+1.2, +7.5], better' or '... not decided at this
    budget'. `as_error`: the gap in test error (signs flipped, and lower error is better)."""
    c = accuracy_comparison(a, b)
    if c is None:
        return pp_text(a.get("top1"), b.get("top1")) + " (no interval: a net has no trained seed)"
    sign = -1 if as_error else 1
    low, high = sorted((sign * c["low"], sign * c["high"]))
    return f"{fmt_pp(sign * c['estimate'], low, high)}, {c['verdict']}"


def mean_top1(row: dict[str, Any]) -> float:
    """A row's mean torch top-1 over its seeds, else its own top-1."""
    mean = (row.get("seeds") or {}).get("mean")
    return mean if mean is not None else row.get("top1") or 0.0


def training_line(rows: Sequence[dict[str, Any]]) -> str:
    r = next((r for r in rows if r.get("epochs")), None)
    if not r:
        return ""
    return (f"Training: {r['epochs']} epoch(s) of up to {r.get('train_images_per_epoch')} images each "
            f"(best-validation weights measured).\n\n")



def per_class_table(rows: Sequence[dict[str, Any]], *, name: str = "model") -> str:
    """Per-class precision / recall / F1 on the test split (torch), one row per net and one column per class, each
    cell 'P / R / F1'; '' when no row holds per-class figures."""
    rows = [r for r in rows if r.get("per_class")]
    if not rows:
        return ""
    classes = [c.get("name", str(c["class"])) for c in rows[0]["per_class"]]
    table = [{"label": r["label"], **{cls: c for cls, c in zip(classes, r["per_class"], strict=False)}} for r in rows]

    def cell(c: Any) -> str:
        return "n/a" if not c else f"{c['precision']:.2f} / {c['recall']:.2f} / {c['f1']:.2f}"

    return markdown_table(table, [(name, "label", fmt_text)] + [(cls, cls, cell) for cls in classes])
