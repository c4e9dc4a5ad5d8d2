"""Each latency record's speeds (the record's own `period_modes_ms`: clusters of round medians more than 20%
apart) and its round medians in the order they ran.

    python results/engine-switch-intel-r-xeon-r-processor-2c/rounds.py DIR/latency.jsonl
"""

import json
import sys

import numpy as np

for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] != "latency":
        continue
    per = len(r["latencies_ms"]) // r["rounds"]
    medians = [float(np.median(r["latencies_ms"][i * per:(i + 1) * per])) for i in range(r["rounds"])]
    speeds = ", ".join(f"{m:.2f} ms in {n} rounds" for m, n in zip(r["period_modes_ms"], r["period_rounds"]))
    print(f"{r['engine']:9s} p50 {r['latency_ms_p50']:.3f} ms; speeds: {speeds}; rounds: "
          + " ".join(f"{m:.2f}" for m in medians))
