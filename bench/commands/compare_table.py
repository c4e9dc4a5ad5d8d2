"""`rbench compare`'s table: one row per entry, its ratio and verdict, as rich rows or Markdown."""

from __future__ import annotations

from typing import Any


def _fmt(value, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _p50_with_interval(record: dict[str, Any]) -> str:
    """'0.456 (0.450-0.470)': the median and its distribution-free 95% interval."""
    ci = record.get("latency_ms_p50_ci")
    return _fmt(record["latency_ms_p50"]) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _timed_what(settings, records: list[dict[str, Any]]) -> str:
    """'... timed runs in N interleaved rounds', and in how many worker processes per entry."""
    runs = f"{settings.iters} timed runs" if settings.iters else \
        (f"{settings.duration_s} s of timed runs" if settings.duration_s else "0.1 s of timed runs per round")
    text = f"{runs} in {settings.rounds} interleaved rounds"
    workers = [r.get("workers") for r in records if r.get("timing_mode") == "workers" and r.get("workers")]
    if workers:
        text += f" in each of {min(workers)} worker processes per entry"
    return text


COMPARE_COLUMNS = ("model", "engine", "params (M)", "MACs (M)", "p50 ms (95% CI)", "p99 ms", "CV", "img/s",
                   "ratio (95% CI)", "verdict")


def compare_rows(records: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    pending = list(comparisons)  # one per record after the first that was measured, in order
    for index, r in enumerate(records):
        params = _fmt(r["params"] / 1e6 if r.get("params") else None, ".3f")
        macs = _fmt(r["macs"] / 1e6 if r.get("macs") else None, ".1f")
        if r.get("error"):
            rows.append((r["model"], r["engine"], params, macs, r["error"], "", "", "", "", ""))
            continue
        ratio, verdict = ("1 (baseline)", "") if index == 0 else ("-", "")
        if index > 0 and pending:
            c = pending.pop(0)
            ratio = f"{c['ratio']:.3f} ({c['ratio_ci'][0]:.3f}-{c['ratio_ci'][1]:.3f})"
            verdict = c.get("note") if c["verdict"] == "unstable" and c.get("note") else c["verdict"]
            if c.get("target_met") is False:
                verdict += f" (+/-{100 * c['precision_target']:g}% not reached in the time given)"
        rows.append((r["model"], r["engine"], params, macs, _p50_with_interval(r), _fmt(r["latency_ms_p99"]),
                     f"{100 * r['latency_cv']:.1f}%", _fmt(r["throughput_img_s"], ".1f"), ratio, verdict))
    return rows


def compare_markdown(rows, records, settings, batch: int) -> str:
    """A Markdown table with the machine and the exact command above it."""
    from bench.records.io import current_command, describe_machine

    machine = describe_machine()
    gpu = machine.get("gpu")
    threads = settings.threads or f"default ({machine['cores_usable']} usable cores)"
    in_workers = bool(records) and records[0].get("timing_mode") == "workers"
    over = "the worker processes and their rounds" if in_workers else "the rounds"
    lines = [
        f"<!-- made by: {current_command()} -->",
        f"Machine: {machine['cpu']}, {machine['cores_usable']} cores" + (f", {gpu['name']}" if gpu else "") +
        f"; torch {machine['versions']['torch']}, onnxruntime {machine['versions']['onnxruntime']}.",
        f"Batch {batch}, {settings.precision}, {settings.device}; warm-up {settings.warmup} runs, "
        f"{_timed_what(settings, records)}; "
        f"intra-op threads: {threads}. Ratios are medians over the first row's, with a bootstrap 95% interval over "
        f"{over}; a verdict needs the whole interval beyond the threshold. "
        "Latency excludes host-device copies" + (" (included here)." if settings.include_transfers else "."),
        "",
        "| " + " | ".join(COMPARE_COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COMPARE_COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    loads = [r["load_average_after"][0] for r in records if r.get("load_average_after")]
    if loads:
        lines += ["", f"1-minute load average after each run: {min(loads):.1f} to {max(loads):.1f} on "
                      f"{machine['cores_usable']} cores (above the core count, other work shared the CPU)."]
    return "\n".join(lines)
