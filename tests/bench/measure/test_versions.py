"""Two versions of rbench timed interleaved (`bench.measure.versions`, `rbench regress`).

The baseline here is a copy of this checkout's code with a planted change in its timing (latencies
reported at a tenth or ten times their value), so each side's records must come from its own code, and the
verdict must find the planted difference in the right direction.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.errors import UsageProblem
from bench.measure import versions
from bench.measure.settings import Settings

FAST = ["--engine", "torch", "--workers", "4", "--max-time", "0", "--threshold", "0.05"]


def _copy_code(dest: Path, scale: float | None = None) -> Path:
    """This checkout's importable code in `dest`; with `scale`, its timing reports every latency times `scale`."""
    for package in ("bench", "nets", "export"):
        shutil.copytree(versions.ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    if scale is not None:
        with open(dest / "bench" / "measure" / "timing.py", "a") as f:
            f.write(f"\n\n_planted = measure_latency\n\n\ndef measure_latency(*args, **kwargs):\n"
                    f"    run = _planted(*args, **kwargs)\n"
                    f"    run['latencies_ms'] = [v * {scale} for v in run['latencies_ms']]\n    return run\n")
    return dest


def test_each_side_runs_its_own_code_and_a_planted_slowdown_of_the_base_reads_faster(tmp_path):
    base = _copy_code(tmp_path / "base", scale=10.0)  # far beyond what tests running beside it do to a worker
    settings = Settings(threads=1, workers=4, rounds=4, iters=16, warmup=2, max_time_s=0.0, timing="workers")
    latency, comparisons = versions.time_versions(["resnet20"], ["torch"], base, settings, tmp_path,
                                                  np.random.default_rng(0), threshold=0.05, base_label="planted")
    base_record, new_record = latency
    assert (base_record["label"], new_record["label"]) == ("base planted", "new")
    assert base_record["settings"]["threads_in_workers"]["code"] == str(base)
    assert new_record["settings"]["threads_in_workers"]["code"] == str(versions.ROOT)
    (comparison,) = comparisons
    assert comparison["verdict"] in ("faster", "unstable") and 0.03 < comparison["ratio"] < 0.3, comparison
    if comparison["verdict"] == "unstable":  # the processes disagree on how much faster, never on whether
        assert max(comparison["ratio_modes"]) < 0.95
    assert comparison["workers"] == 4


def test_regress_exits_1_when_this_checkout_is_slower_than_the_base(run_cli, tmp_path):
    # The base reports a tenth: this checkout reads ten times as slow, far beyond what a busy machine (tests
    # running beside this one) can do to one worker of a pair; it may still split the pairs into modes.
    base = _copy_code(tmp_path / "base", scale=0.1)
    code, out, err = run_cli("regress", str(base), "resnet20", *FAST, "--out", str(tmp_path / "out"))
    assert code == 1, out + err
    assert "regression" in err
    lines = (tmp_path / "out" / "comparison.jsonl").read_text().splitlines()
    (comparison,) = [json.loads(line) for line in lines]
    assert comparison["verdict"] in ("slower", "unstable") and comparison["ratio"] > 3, comparison
    if comparison["verdict"] == "unstable":
        assert min(comparison["ratio_modes"]) > 1.05


def test_an_unstable_pair_is_a_regression_only_when_every_mode_is_slower():
    def pair(verdict, modes=None):
        return {"verdict": verdict, "ratio_modes": modes}
    pairs = [pair("unstable", [1.2, 2.5]), pair("unstable", [0.98, 1.6]), pair("unstable"), pair("slower"),
             pair("faster", [1.2, 2.5]), pair("no measurable difference")]
    assert versions.regressions(pairs, 0.05) == [pairs[0], pairs[3]]


def test_a_base_that_is_neither_a_commit_nor_a_checkout_is_one_line(run_cli, tmp_path):
    for args, message in ((["no-such-revision-xyz"], "is not a commit"),
                          ([str(tmp_path)], "not a checkout of rbench"),
                          (["HEAD", "--engine", "tensorflow"], "unknown engine 'tensorflow'")):
        code, out, err = run_cli("regress", *args, *FAST[2:])
        assert code == 2 and message in err, (args, out, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_revision_is_unpacked_with_its_workers(tmp_path):
    if not (versions.ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(versions.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("git cannot read this checkout")
    tree = versions.unpack_revision("HEAD", tmp_path / "base")
    assert (tree / "bench" / "measure" / "worker.py").is_file() and (tree / "nets").is_dir()
    with pytest.raises(UsageProblem, match="not a commit"):
        versions.unpack_revision("no-such-revision-xyz", tmp_path / "other")


def test_a_side_that_cannot_be_timed_is_exit_1_not_a_pass(run_cli, tmp_path):
    base = _copy_code(tmp_path / "base")
    with open(base / "bench" / "measure" / "timing.py", "a") as f:  # the base's worker fails in its first round
        f.write("\n\ndef measure_latency(*args, **kwargs):\n    raise RuntimeError('planted failure')\n")
    code, out, err = run_cli("regress", str(base), "resnet20", *FAST)
    assert code == 1, out + err
    assert "planted failure" in err and "1 of 2 entries could not be timed" in err
