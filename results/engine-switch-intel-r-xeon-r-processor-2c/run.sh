#!/usr/bin/env bash
# torch, onnxruntime and OpenVINO timed in turn in worker processes, without and with the pause before a round whose
# engine differs from the last one's. From the repository root, on a quiet machine (about 2 minutes):
#   bash results/engine-switch-intel-r-xeon-r-processor-2c/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
for gap in 0 0.05; do
    rm -rf "$HERE/gap-$gap"
    RBENCH_ENGINE_SWITCH_GAP_S=$gap python -m bench latency resnet20 --engine torch,ort,openvino --timing workers \
        --workers 4 --max-time 1 --out "$HERE/gap-$gap" > /dev/null
    echo "pause $gap s before a round of another engine:"
    python "$HERE/rounds.py" "$HERE/gap-$gap/latency.jsonl"
done > "$HERE/rounds.txt"
