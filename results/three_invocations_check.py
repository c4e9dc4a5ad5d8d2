"""The three-invocation check of a folder of `rbench compare resnet20 plain20 resnet20` runs: each engine and timing
mode, the four criteria of issue 23, PASS or FAIL, from the records in FOLDER/{workers,in-process}-{engine}-{1,2,3}
(a mode with no runs is left out). Usage: python results/three_invocations_check.py FOLDER"""

import sys
from pathlib import Path

from bench.records.io import read_records

FOLDER = Path(sys.argv[1])

for mode in ("workers", "in-process"):
    for engine in ("torch", "ort"):
        if not (FOLDER / f"{mode}-{engine}-1").is_dir():
            continue
        runs = []
        for i in (1, 2, 3):
            folder = FOLDER / f"{mode}-{engine}-{i}"
            latency, comparisons = read_records(f"{folder}/latency.jsonl"), read_records(f"{folder}/comparison.jsonl")
            plain, again = comparisons
            runs.append((latency[0]["latency_ms_p50"], plain, again))
        p50s = [r[0] for r in runs]
        checks = {"p50 within 10%": max(p50s) / min(p50s) <= 1.10,
                  "ratio hi/lo <= 1.10": all(p["ratio_ci"][1] / p["ratio_ci"][0] <= 1.10 for _, p, _ in runs),
                  "intervals cover the other runs' ratios": all(p["ratio_ci"][0] <= q["ratio"] <= p["ratio_ci"][1]
                                                                for _, p, _ in runs for _, q, _ in runs),
                  "A/A no measurable difference": all(a["verdict"] == "no measurable difference" for _, _, a in runs)}
        print(mode, engine, "resnet20 p50 ms", [round(v, 3) for v in p50s])
        for _, p, a in runs:
            print(f"   plain20/resnet20 {p['ratio']:.3f} [{p['ratio_ci'][0]:.3f}, {p['ratio_ci'][1]:.3f}] {p['verdict']}"
                  f" workers {p.get('workers')} target_met {p.get('target_met')} unstable {p.get('unstable')} | A/A {a['ratio']:.3f} "
                  f"[{a['ratio_ci'][0]:.3f}, {a['ratio_ci'][1]:.3f}] {a['verdict']}")
        for name, passed in checks.items():
            print(f"  {'PASS' if passed else 'FAIL'} {name}")
