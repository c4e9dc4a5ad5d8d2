"""Each ladder comparison of the records in this folder judged again by this checkout's rule
(`bench.measure.intervals.paired_worker_ratio`) from its workers' runs: the verdict the run gave, the one the rule
gives now, and the medians of both sides' worker processes. Usage, from the repository root:
python results/ladder-modes-intel-r-xeon-r-processor-2c/analyze.py"""

from pathlib import Path

from bench.measure.intervals import paired_worker_ratio, split_workers
from bench.records.io import read_records

HERE = Path(__file__).resolve().parent
records = read_records(str(HERE / "ladder.jsonl"))
latency = {(r["unit"], r["batch"], r["engine"], r["precision"]): r for r in records if r["kind"] == "latency"}
counts = {"run": {}, "now": {}}
for c in (r for r in records if r["kind"] == "comparison"):
    unit, batch, cand = c["unit"], c["batch"], c["candidate"]
    base, new = latency[(unit, batch, "torch", "fp32")], latency[(unit, batch, cand["engine"], cand["precision"])]
    now = paired_worker_ratio(split_workers(base["latencies_ms"], base["worker_rounds"]),
                              split_workers(new["latencies_ms"], new["worker_rounds"]), c["threshold"])
    low, high = c["ratio_ci"]
    wide = high / low > 1.15
    for key, verdict in (("run", c["verdict"]), ("now", now["verdict"])):
        label = "unstable" if verdict == "unstable" else ("wider than hi/lo 1.15" if wide else "narrower")
        counts[key][label] = counts[key].get(label, 0) + 1
    print(f"{unit} batch {batch} {c['rung']} over torch fp32: {c['ratio']:.3f} [{low:.3f}, {high:.3f}] "
          f"(hi/lo {high / low:.2f}); run: {c['verdict']}; now: {now['verdict']}"
          + (f" ({now['note']})" if now["unstable"] else ""))
    print(f"    worker medians ms: torch fp32 {base['worker_medians_ms']}, {c['rung']} {new['worker_medians_ms']}")
for key, title in (("run", "as the run judged"), ("now", "by this checkout's rule")):
    print(f"{title}: " + ", ".join(f"{n} {label}" for label, n in sorted(counts[key].items())))
