#!/usr/bin/env bash
# rbench serve's cross-checks and its Server peak search on this machine, into this folder.
#
#   bash results/serve-<machine>/run.sh          # from the repository root, on a quiet machine (about 8 minutes)
#   DURATION=2 PEAK_STEPS=2 SEARCH_DURATION=1 OUT=/tmp/serve-try bash results/serve-<machine>/run.sh   # a quick try of the script
#
# 1. SingleStream's p90 against `rbench latency`'s p90: the same source (zoo resnet20), engine (ort), 1 thread.
# 2. Offline samples/s against `rbench throughput`'s images/s at the same batch (32), 2 threads.
# 3. `rbench serve resnet20 --scenario server --engine ort --find-peak`: LoadGen's summary of every step.
# Then crosscheck.md states both ratios. The folder must be named for this machine (bench.records.io.machine_slug).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SLUG="$(python -c 'from bench.records.io import machine_slug; print(machine_slug())')"
if [ "$(basename "$HERE")" != "serve-$SLUG" ] && [ -z "${OUT:-}" ]; then
    echo "run.sh: this machine is $SLUG, the folder is $(basename "$HERE"): copy it to results/serve-$SLUG/" >&2
    exit 2
fi
OUT="${OUT:-$HERE}"
DURATION="${DURATION:-60}"     # seconds of each LoadGen run and of each rbench timing
PEAK_STEPS="${PEAK_STEPS:-10}"  # most LoadGen runs of the peak search
SEARCH_DURATION="${SEARCH_DURATION:-10}"  # least seconds of each step of the peak search
MODEL=resnet20
mkdir -p "$OUT"
rm -rf "$OUT/loadgen" "$OUT"/serve.jsonl "$OUT"/latency.jsonl "$OUT"/throughput.jsonl
run() { echo "+ rbench $*" | tee -a "$OUT/commands.txt" >&2; python -m bench "$@"; }
: > "$OUT/commands.txt"

run serve "$MODEL" --engine ort --threads 1 --scenario singlestream --min-duration "$DURATION" \
    --out "$OUT/loadgen/singlestream" --results-dir "$OUT" -q
run latency "$MODEL" --engine ort --threads 1 --batch 1 --duration "$DURATION" --out "$OUT"

run serve "$MODEL" --engine ort --threads 2 --scenario offline --max-batch 32 --min-duration "$DURATION" \
    --out "$OUT/loadgen/offline" --results-dir "$OUT" -q
run throughput "$MODEL" --engine ort --threads 2 --batch 32 --duration "$DURATION" --out "$OUT"

run serve "$MODEL" --engine ort --scenario server --find-peak --search-steps "$PEAK_STEPS" \
    --search-duration "$SEARCH_DURATION" \
    --out "$OUT/loadgen/server-peak" --results-dir "$OUT" -q

python - "$OUT" <<'PY'
"""crosscheck.md: LoadGen's figures over rbench's own timing of the same thing, and the peak search's outcome."""
import sys
from pathlib import Path

from bench.records.io import read_records

out = Path(sys.argv[1])
serve = read_records(out / "serve.jsonl")
single = next(r for r in serve if r["scenario"] == "singlestream")
offline = next(r for r in serve if r["scenario"] == "offline")
peak = next(r for r in serve if r["scenario"] == "server")
latency = next(r for r in read_records(out / "latency.jsonl") if r["batch"] == 1 and not r.get("error"))
throughput = max((r for r in read_records(out / "throughput.jsonl") if r["batch"] == 32 and not r.get("error")),
                 key=lambda r: r["throughput_img_s"])
ss_ratio = single["latency_ms_p90"] / latency["latency_ms_p90"]
off_ratio = offline["samples_per_s"] / throughput["throughput_img_s"]
lines = [
    "# rbench serve against rbench's own timing\n",
    f"Machine: {latency['machine']['cpu']} ({latency['machine']['cores_usable']} usable cores); commands in "
    "[commands.txt](commands.txt), records in serve.jsonl, latency.jsonl, throughput.jsonl, LoadGen's files in "
    "loadgen/.\n",
    "| check | LoadGen | rbench | ratio | aim |", "|---|---:|---:|---:|---|",
    f"| SingleStream p90 ms vs `rbench latency` p90 (ort, 1 thread, batch 1) | {single['latency_ms_p90']:.3f} | "
    f"{latency['latency_ms_p90']:.3f} | {ss_ratio:.3f} | within 10% ({'met' if abs(ss_ratio - 1) <= 0.10 else 'MISSED'}) |",
    f"| Offline samples/s vs `rbench throughput` images/s (ort, 2 threads, batch 32) | {offline['samples_per_s']:.1f} | "
    f"{throughput['throughput_img_s']:.1f} | {off_ratio:.3f} | within 15% "
    f"({'met' if abs(off_ratio - 1) <= 0.15 else 'MISSED'}) |",
    "",
    f"Server peak search (ort, {peak['workers']} worker of {peak['threads']} threads, max batch {peak['max_batch']}): "
    f"{peak['peak_qps']} QPS VALID, {peak['peak_invalid_above']} QPS INVALID above it; LoadGen's summary of every "
    "step is in loadgen/server-peak/peak/step-*/mlperf_log_summary.txt.",
    "",
    "| step | target QPS | LoadGen | samples/s | p99 ms |", "|---:|---:|---|---:|---:|",
    *(f"| {i} | {s['target_qps']:g} | {s['result']} | {s['samples_per_s'] or 0:.1f} | {s['latency_ms_p99'] or 0:.2f} |"
      for i, s in enumerate(peak.get("peak_search") or [], 1)),
]
(out / "crosscheck.md").write_text("\n".join(lines) + "\n")
print((out / "crosscheck.md").read_text())
PY
