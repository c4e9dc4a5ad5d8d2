"""Whether this machine runs at one speed: resnet20 (untrained), batch 1, torch only (no rbench timing code), in
fresh processes at 1 thread and at 2 threads bound one per core, each timed for 15 s in 0.5 s windows.

    cd results/slow-periods-intel-r-xeon-r-processor-2c
    python windows.py > windows.jsonl && python windows.py --summary < windows.jsonl > summary.txt

Each line: one process, its thread count and the median latency (ms) of each window, in the order they ran.
"""

import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, time, torch, nets
model = nets.create_model("resnet20").eval()
x = torch.randn(1, 3, 32, 32)
windows = []
with torch.inference_mode():
    for _ in range(50):
        model(x)
    for _ in range(30):
        times, end = [], time.perf_counter() + 0.5
        while time.perf_counter() < end:
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
        times.sort()
        windows.append(round(times[len(times) // 2] * 1e3, 4))
print(json.dumps({"threads": torch.get_num_threads(), "window_p50_ms": windows}))
"""

SETTINGS = {1: {"OMP_NUM_THREADS": "1"},
            2: {"OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}}

def summary(lines) -> None:
    for line in lines:
        record = json.loads(line)
        w = sorted(record["window_p50_ms"])
        print(f"process {record['process']} threads {record['threads']}: window p50 min {w[0]:.2f} ms, median "
              f"{w[len(w) // 2]:.2f} ms, max {w[-1]:.2f} ms, max/min {w[-1] / w[0]:.2f}")


if __name__ == "__main__" and sys.argv[1:] == ["--summary"]:
    summary(sys.stdin)
elif __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for process in range(4):
        for extra in SETTINGS.values():
            env = {**os.environ, **extra, "PYTHONPATH": root}
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            line = json.loads(out.stdout)
            line.update(process=process, started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            print(json.dumps(line), flush=True)
