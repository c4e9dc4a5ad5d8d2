"""Fork against exec worker starts, four invocations each of `rbench compare resnet20 plain20 resnet20`: does the
zygote (every worker of an invocation forked from one process, so sharing its memory layout) hide spread between
invocations that workers started by exec would show? Usage: python results/fork-exec-intel-r-xeon-r-processor-2c/analyze.py

Per start mode and engine: each invocation's plain20/resnet20 ratio and resnet20 p50; the standard deviation of the
log ratio between invocations, against the mean standard error each interval claims (log(hi/lo) / 3.92) and the
spread of the worker pairs' own log ratios inside an invocation; whether every interval covers every other
invocation's ratio. Then, per invocation, resnet20's worker medians in generation order beside the other two
entries' (the same generations): a slow generation slows every process in it alike."""

import json
import math
import statistics as st
from pathlib import Path

HERE = Path(__file__).parent


def read(folder):
    lat = [json.loads(line) for line in (folder / "latency.jsonl").read_text().splitlines()]
    comp = [json.loads(line) for line in (folder / "comparison.jsonl").read_text().splitlines()]
    return lat, comp


for mode in ("fork", "exec"):
    for engine in ("ort", "torch"):
        runs = [read(HERE / mode / f"workers-{engine}-{i}") for i in (1, 2, 3, 4)]
        ratios = [c[0]["ratio"] for _, c in runs]
        ses = [math.log(c[0]["ratio_ci"][1] / c[0]["ratio_ci"][0]) / 3.92 for _, c in runs]
        pairs = [st.stdev([math.log(b / a) for a, b in zip(lat[0]["worker_medians_ms"], lat[1]["worker_medians_ms"])])
                 for lat, _ in runs]
        cover = all(c[0]["ratio_ci"][0] <= q <= c[0]["ratio_ci"][1] for _, c in runs for q in ratios)
        p50s = ", ".join(f"{lat[0]['latency_ms_p50']:.3f}" for lat, _ in runs)
        counts = ", ".join(str(c[0]["workers"]) for _, c in runs)
        print(f"{mode} {engine}: ratios {', '.join(f'{r:.3f}' for r in ratios)}; resnet20 p50 {p50s} ms; "
              f"workers {counts}")
        print(f"  sd of the log ratio between invocations {st.stdev(math.log(r) for r in ratios):.4f}; "
              f"mean interval s.e. {st.mean(ses):.4f}; worker-pair sd inside an invocation {st.mean(pairs):.4f}; "
              f"every interval covers every ratio: {cover}")
print()
for mode in ("fork", "exec"):
    for engine in ("ort", "torch"):
        for i in (1, 2, 3, 4):
            lat, _ = read(HERE / mode / f"workers-{engine}-{i}")
            print(f"{mode} {engine} {i}: worker medians by generation (ms)")
            for r, label in zip(lat, ("resnet20", "plain20", "resnet20 (A/A)")):
                print(f"  {label:15} {' '.join(f'{m:.2f}' for m in r['worker_medians_ms'])}")
