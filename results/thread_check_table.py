"""The thread check of `rbench compare NET NET --engine torch` runs, as one markdown table: each run folder's first
latency record (its `thread_check`: the default's threads against the other count, timed in the same workers).
Usage: python results/thread_check_table.py RUN_FOLDER... (each holding a latency.jsonl); rows sorted by
MACs per weighted layer (conv, linear), the measure torch's default threads follow.
Reads the records of both forms: the default of every core against one thread (`one_thread_p50_ms`, the form
before torch's one-thread default for small batches) and either way round (`other_threads`, `other_p50_ms`)."""

import json
import sys
from pathlib import Path

from bench.engines.sources import resolve_source
from bench.measure.run import weighted_layers

rows = []
for folder in map(Path, sys.argv[1:]):
    record = json.loads((folder / "latency.jsonl").read_text().splitlines()[0])
    check = record["thread_check"]
    if "other_threads" in check:
        other, other_p50, ratio = check["other_threads"], check["other_p50_ms"], check["ratio_other_over_default"]
    else:
        other, other_p50, ratio = 1, check["one_thread_p50_ms"], check["ratio_one_over_default"]
    layers = weighted_layers(resolve_source(record["model"], input_shape=tuple(record["input_shape"])).module())
    rows.append((record["macs"] / layers, folder, record, check, other, other_p50, ratio))

print(f"`python results/thread_check_table.py {' '.join(sys.argv[1:])}`; the verdict is of the other count against "
      "the default, at batch 1\n")
print("| run | input | MACs per image (M) | per weighted layer (M) | default threads | p50 ms | modes ms | "
      "other threads | p50 ms | other over default [95% CI] | verdict | more threads faster |")
print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|")
for per_layer, folder, r, check, other, other_p50, ratio in sorted(rows, key=lambda row: row[0]):
    modes = ", ".join(f"{x:.2f}" for x in r["modes_ms"])
    faster = check.get("more_threads_faster", check.get("faster_with_threads"))
    low, high = check["ratio_ci"]
    print(f"| {folder.name} ({r['model']}) | {'x'.join(map(str, r['input_shape']))} | {r['macs'] / 1e6:.1f} | {per_layer / 1e6:.2f} | "
          f"{check['threads']} | {r['latency_ms_p50']:.3f} | {modes} | {other} | {other_p50:.3f} | "
          f"{ratio:.2f} [{low:.2f}, {high:.2f}] | {check['verdict']} | {'yes' if faster else 'no'} |")
