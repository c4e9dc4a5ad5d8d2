"""The thread check's figures from the records here and from the three-invocation runs: python results/thread-check-amd-epyc-2c/table.py"""

import json
from pathlib import Path

HERE = Path(__file__).parent
rows = []
for m in ("resnet56", "vgg11_bn", "resnet50"):
    rows.append((m, json.loads((HERE / m / "latency.jsonl").read_text().splitlines()[0])))
for i in (1, 2, 3):
    path = HERE.parent / "three-invocations-amd-epyc-2c" / f"workers-torch-{i}" / "latency.jsonl"
    rows.append((f"resnet20 (three-invocations-amd-epyc-2c/workers-torch-{i})", json.loads(path.read_text().splitlines()[0])))
print("`python results/thread-check-amd-epyc-2c/table.py`; verdict: of 1 thread against the default 2\n")
print("| net | MACs per image (M) | 2 threads p50 ms | modes ms | 1 thread p50 ms | 1 thread over 2 [95% CI] | verdict |")
print("|---|---:|---:|---|---:|---:|---|")
for name, r in sorted(rows, key=lambda row: row[1]["macs"] or 0):
    t = r["thread_check"]
    modes = ", ".join(f"{x:.2f}" for x in r["modes_ms"])
    print(f"| {name} | {r['macs'] / 1e6:.1f} | {r['latency_ms_p50']:.3f} | {modes} | {t['one_thread_p50_ms']:.3f} | "
          f"{t['ratio_one_over_default']:.2f} [{t['ratio_ci'][0]:.2f}, {t['ratio_ci'][1]:.2f}] | {t['verdict']} |")
