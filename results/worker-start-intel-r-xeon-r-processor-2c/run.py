"""Worker start by exec against fork of a zygote: seconds a generation of 8 workers takes to get ready and to stop.

The generation is what `rbench compare resnet20 plain20 resnet20 --engine torch,ort` starts at once: the three
entries on each engine, and the one-thread twin of each engine's first entry. Exec and fork alternate (A B A B), 6
generations each; the first fork generation also starts the zygotes, and is kept apart. From the repository root:

    python results/worker-start-intel-r-xeon-r-processor-2c/run.py > results/worker-start-intel-r-xeon-r-processor-2c/table.md

It writes `generations.jsonl` (one line per generation) beside itself and prints the table.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.engines.sources import resolve_source
from bench.measure import workers, zygote
from bench.measure.settings import Settings
from bench.records.io import machine_slug

HERE = Path(__file__).resolve().parent
REPEATS = 6


def specs(workdir: Path) -> list[tuple[dict, dict]]:
    out = []
    for engine in ("torch", "ort"):
        for index, name in enumerate(("resnet20", "plain20", "resnet20")):
            spec = workers.portable_spec(resolve_source(name), engine, "fp32", 1, Settings(), workdir, index)
            out.append((spec, workers.thread_policy(engine, None)))
        twin = {**out[-3][0], "engine_options": {**out[-3][0].get("engine_options", {}), "threads": 1}}
        out.append((twin, workers.thread_policy(engine, 1)))
    return out


def generation(entries: list[tuple[dict, dict]], workdir: Path, mode: str) -> dict:
    os.environ[zygote.START_ENV] = mode
    begun = time.perf_counter()
    started = [workers.Worker(spec, workers.worker_environment(policy), workdir, 120.0) for spec, policy in entries]
    starts = [w.receive()["threads"]["start"] for w in started]
    ready = time.perf_counter()
    for w in started:
        w.stop()
    stopped = time.perf_counter()
    assert all(s.startswith("fork") for s in starts) if mode == "fork" else all(s == "exec" for s in starts)
    return {"mode": mode, "workers": len(started), "ready_s": round(ready - begun, 3), "stop_s": round(stopped - ready, 3)}


def main() -> None:
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        entries = specs(workdir)
        for repeat in range(REPEATS):
            for mode in ("exec", "fork"):
                row = generation(entries, workdir, mode)
                row.update(repeat=repeat, zygote_start=mode == "fork" and repeat == 0, machine=machine_slug(),
                           timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                lines.append(row)
    zygote.close_all()
    (HERE / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    print("| start | generations | workers each | median s to ready | median s to stop |")
    print("|---|---|---|---|---|")
    for label, rows in (("exec", [r for r in lines if r["mode"] == "exec"]),
                        ("fork, zygotes already started", [r for r in lines if r["mode"] == "fork" and not r["zygote_start"]]),
                        ("fork, first generation (starts the zygotes)", [r for r in lines if r["zygote_start"]])):
        print(f"| {label} | {len(rows)} | {rows[0]['workers']} | {statistics.median(r['ready_s'] for r in rows):.2f} | "
              f"{statistics.median(r['stop_s'] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
