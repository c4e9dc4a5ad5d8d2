"""Interleaved comparisons (A/A and a real difference) and `rbench diff` on real records folders."""

from __future__ import annotations

import json

import pytest

from bench.records.builders import FIELDS
from bench.records.io import read_records, validate_record

FAST = ("--warmup", "2", "--threads", "1")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def test_a_model_against_itself_and_against_a_deeper_one(run_cli, results_dir):
    code, out, err = run_cli("compare", "resnet20", "resnet20", "resnet56", "--engine", "ort", "--iters", "40", *FAST,
                             "--out", results_dir)
    assert code == 0, err
    latency = read_records(results_dir / "latency.jsonl")
    assert [r["model"] for r in latency] == ["resnet20", "resnet20", "resnet56"]
    assert all(r["rounds"] == 10 and r["iters"] == 40 and r["latency_ms_p50_ci"] for r in latency)
    same, deeper = read_records(results_dir / "comparison.jsonl")
    for record in (same, deeper):
        validate_record(record)
        assert set(FIELDS["comparison"]) <= set(record) and record["interleaved"]
    assert same["verdict"] == "no measurable difference"
    assert same["ratio_ci"][0] <= 1.0 + same["threshold"] and same["ratio_ci"][1] >= 1.0 - same["threshold"]
    assert deeper["verdict"] == "slower" and deeper["ratio_ci"][0] > 2  # 3x the convolutions
    assert "no measurable difference" in out and "slower" in out


def test_several_engines_are_timed_interleaved(run_cli, results_dir):
    code, _, err = run_cli("latency", "resnet20", "--engine", "torch,ort", "--iters", "20", "--rounds", "4", *FAST,
                           "--out", results_dir)
    assert code == 0, err
    assert [(r["engine"], r["rounds"], r["iters"]) for r in read_records(results_dir / "latency.jsonl")] == \
        [("torch", 4, 20), ("ort", 4, 20)]


def _slow_down(src, dst, factor, seed=0):
    """A copy of a records file with controlled latencies scaled by `factor`: a synthetic regression.

    The measured latencies are replaced by a quiet, seeded sample around their own median: under a
    busy machine (CV near 100%) a real 30% slowdown is rightly not significant, and this test is
    about what diff does with a clear one, not about how quiet the test machine is.
    """
    import numpy as np

    dst.mkdir()
    lines = []
    rng = np.random.default_rng(seed)
    for record in read_records(src / "latency.jsonl"):
        median = float(np.median(record["latencies_ms"]))
        quiet = median * (1 + 0.02 * rng.standard_normal(len(record["latencies_ms"])))
        record["latencies_ms"] = [float(v) * factor for v in quiet]
        record["latency_ms_p50"] = float(np.median(record["latencies_ms"]))
        lines.append(json.dumps(record))
    (dst / "latency.jsonl").write_text("\n".join(lines) + "\n")


def test_diff_finds_a_regression_and_nothing_in_identical_runs(run_cli, tmp_path):
    base = tmp_path / "base"
    code, _, err = run_cli("latency", "resnet20", "--engine", "torch,ort", "--iters", "30", *FAST, "--out", base)
    assert code == 0, err
    code, out, err = run_cli("diff", base, base)
    assert code == 0, err
    assert out.count("no measurable difference") == 2
    _slow_down(base, tmp_path / "quiet", 1.0, seed=1)
    _slow_down(base, tmp_path / "slow", 1.3, seed=2)
    base = tmp_path / "quiet"
    code, out, err = run_cli("diff", base, tmp_path / "slow", "--json")
    assert code == 1 and "regression: 2 of 2 pairs" in err
    report = json.loads(out)
    assert [p["verdict"] for p in report["pairs"]] == ["slower", "slower"]
    assert all(1.25 < p["ratio"] < 1.35 for p in report["pairs"])
    code, _, _ = run_cli("diff", base, tmp_path / "slow", "--threshold", "0.5")
    assert code == 0  # a 30% slowdown is within a 50% threshold


def test_two_invocations_of_the_same_settings_differ_in_nothing_but_the_zygote():
    """Each invocation forks its workers from its own zygote, whose process id the record's start names: that is
    no setting, and a diff of two runs with the same settings lists none (it listed threads_in_workers)."""
    from bench.report.diff import _differences

    def record(pid, code="/a"):
        return {"settings": {"threads": 1, "threads_in_workers": {"start": f"fork of zygote {pid}", "code": code}}}
    assert _differences(record(14454), record(14563)) == {}
    assert "threads_in_workers" in _differences(record(1), record(2, code="/b"))  # another checkout is a difference


def test_diff_lists_settings_that_differ_and_refuses_other_machines(run_cli, tmp_path):
    base, other = tmp_path / "base", tmp_path / "other"
    assert run_cli("latency", "resnet20", "--engine", "ort", "--iters", "20", *FAST, "--out", base)[0] == 0
    assert run_cli("latency", "resnet20", "--engine", "ort", "--iters", "20", *FAST, "--graph-optimization", "basic",
                   "--out", other)[0] == 0
    code, out, err = run_cli("diff", base, other, "--json")
    assert json.loads(out)["pairs"][0]["settings_differ"]["graph_optimization"] == ["all", "basic"]
    moved = tmp_path / "moved"
    moved.mkdir()
    record = read_records(other / "latency.jsonl")[0]
    record["machine"] = {**record["machine"], "cpu": "Some Other CPU"}
    (moved / "latency.jsonl").write_text(json.dumps(record) + "\n")
    code, _, err = run_cli("diff", base, moved)
    assert code == 2 and "different machines" in err and "--cross-machine" in err
    code, out, err = run_cli("diff", base, moved, "--cross-machine", "--json")
    assert code in (0, 1) and len(json.loads(out)["pairs"]) == 1


@pytest.mark.parametrize("content, message", [(None, "no records at"), ("{not json\n", "is not a JSON record"),
                                              ('{"kind": "flops"}\n', "no latency records")])
def test_diff_bad_input_is_one_line(run_cli, tmp_path, content, message):
    path = tmp_path / "records.jsonl"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli("diff", path, path)
    assert code in (2, 3) and message in err and len(err.strip().splitlines()) == 1  # 2: usage, 3: unusable records


def test_progress_counts_every_timed_run_across_rounds():
    import bench

    seen = {}
    bench.latency("resnet20", engines=["torch", "ort"], iters=12, rounds=4, warmup=1, threads=1,
                  on_progress=lambda engine, batch: lambda done, elapsed: seen.__setitem__(engine, done))
    assert seen == {"torch": 12, "ort": 12}
