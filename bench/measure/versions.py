"""Two versions of rbench timed interleaved in one invocation: a regression check that machine drift cannot fool.

`rbench diff` compares records of two runs taken apart; on a VM whose speed drifts over minutes
(results/regress-spread-*) the same code, one minute apart, diffed as a regression beyond 5%. Here
the baseline is a git revision instead of stored numbers: its tree is unpacked into a work folder,
and every entry (model x engine) is timed twice in the same generations of workers: once by a worker
importing the baseline's code (`PYTHONPATH` first entry), once by one importing this checkout's,
round by round in turn (`bench.measure.workers`). A slow period of the machine falls on both, and
the ratio new/base pairs workers of the same generation, so its interval holds the spread between
processes and not the drift between runs.

Each side builds a zoo net from its own `nets` (torch) and runs it through its own engine and timing
code; ONNX engines time the one ONNX file this checkout exported, so a change in the exporter is not
in the ratio, only in the runtime's path.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem

ROOT = Path(__file__).resolve().parents[2]


def unpack_revision(rev: str, dest: Path, repo: Path = ROOT) -> Path:
    """`rev`'s tree of `repo` unpacked into `dest` (git archive); UsageProblem when git does not know `rev`."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise UsageProblem(f"{rev!r} is not a commit of {repo}; give a branch, tag or commit (e.g. main or HEAD~1)") \
            from None
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=archive, check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(dest, filter="data")
    if not (dest / "bench" / "measure" / "worker.py").is_file():
        raise UsageProblem(f"{rev} ({commit[:10]}) has no timing workers (bench/measure/worker.py): compare against a "
                           "revision from after worker timing landed")
    return dest


def base_tree(base: str, scratch: Path, repo: Path = ROOT) -> Path:
    """The code to time as the baseline: `base` itself when it is a folder holding a checkout of rbench, else the
    tree of git revision `base` unpacked into `scratch`."""
    folder = Path(base)
    if folder.is_dir():
        if not (folder / "bench" / "measure" / "worker.py").is_file():
            raise UsageProblem(f"{base} is a folder but not a checkout of rbench with timing workers "
                               "(no bench/measure/worker.py); give a git revision or another checkout")
        return folder.resolve()
    return unpack_revision(base, scratch, repo)


def time_versions(models: list[str], engines: list[str], base_root: Path, settings, workdir: Path, rng, *,
                  threshold: float, base_label: str, batch: int = 1, on_progress=None,
                  command: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(latency records, comparisons): every model x engine timed by `base_root`'s code and by this checkout's,
    interleaved; one comparison per pair (new over base), with the hierarchical interval and a verdict against
    `threshold`. Records carry `label`: "base <base_label>" or "new" (`version_of` reads it)."""
    from bench.engines.sources import resolve_source
    from bench.measure.run import model_costs
    from bench.measure.settings import cached_peak, layer_macs
    from bench.measure.workers import (
        WorkerEntry,
        portable_spec,
        thread_policy,
        watched_in_workers,
        worker_comparisons,
        worker_records,
    )

    pairs = []
    for index, model in enumerate(models):
        src = resolve_source(model)
        if src.kind != "zoo":
            raise UsageProblem(f"{model}: only zoo nets can be built by both versions; `rbench list` names them")
        costs = model_costs(src)
        for engine in engines:
            spec = portable_spec(src, engine, settings.precision, batch, settings, workdir, index, by_name=True,
                                 costs=costs)
            threads, why = settings.threads_for(engine, layer_macs(costs, batch))
            entries = []
            for root in (base_root, ROOT):
                policy = thread_policy(engine, threads, threads_why=why)
                entries.append(WorkerEntry(src, engine, settings.precision, costs, cached_peak(settings, engine),
                                           {**spec, "root": str(root)}, policy, device=settings.device,
                                           own_precision=True))
            pairs.append(entries)
    flat = [e for pair in pairs for e in pair]
    outcome, state = watched_in_workers(flat, settings, workdir, rng, on_progress, groups=pairs)
    latency, comparisons = [], []
    for base, new in pairs:
        records = [worker_records([entry], batch, settings, outcome, state, {"label": label}, command)[0]
                   for entry, label in ((base, f"base {base_label}"), (new, "new"))]
        latency += records
        comparisons += worker_comparisons([base, new], records, threshold, {"label": f"new vs base {base_label}"},
                                          command)
    return latency, comparisons


def regressions(comparisons: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The comparisons (new over base) that are a regression: significantly slower beyond `threshold`, or unstable
    with every one of their modes slower beyond it (the processes disagree on how much slower, not on whether)."""
    def slower(c: dict[str, Any]) -> bool:
        modes = c.get("ratio_modes") or []
        return c["verdict"] == "slower" or (c["verdict"] == "unstable" and bool(modes) and min(modes) > 1 + threshold)
    return [c for c in comparisons if slower(c)]
