"""The three-invocation check: each engine and timing mode, the four criteria, PASS or FAIL, from the records here
(the sub-folders beside this file; a mode with no runs is left out)."""

from pathlib import Path

from bench.records.io import read_records

for mode in ("workers", "in-process"):
    for engine in ("torch", "ort"):
        if not (Path(__file__).parent / f"{mode}-{engine}-1").is_dir():
            continue
        runs = []
        for i in (1, 2, 3):
            folder = Path(__file__).parent / f"{mode}-{engine}-{i}"
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
