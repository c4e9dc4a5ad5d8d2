"""Timing in worker processes: the thread policy, a worker's start, modes, interval coverage, failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.measure import intervals, workers
from bench.measure.settings import Settings


def test_policy_pins_torch_threads_and_keeps_the_users_own():
    policy = workers.thread_policy("torch", 2, {})
    assert policy["set"] == {"OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}
    kept = workers.thread_policy("torch", 2, {"OMP_PROC_BIND": "close", "OMP_WAIT_POLICY": "PASSIVE"})
    assert kept["set"] == {} and kept["user"] == {"OMP_PROC_BIND": "close", "OMP_WAIT_POLICY": "PASSIVE"}
    assert workers.thread_policy("torch", 1, {})["set"] == {}
    assert workers.thread_policy("ort", 2, {})["set"] == {}


def test_worker_starts_with_the_policy_environment_and_the_parents_cores(tmp_path):
    from bench.engines.sources import resolve_source
    from tests.bench.user_models import TinyNet

    src = resolve_source(TinyNet(), input_shape=(3, 8, 8), name="tiny")
    spec = workers.portable_spec(src, "torch", "fp32", 1, Settings(threads=1), tmp_path, 0)
    policy = {"set": {"OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}, "user": {}, "why": "test"}
    worker = workers.Worker(spec, workers.worker_environment(policy), tmp_path, timeout_s=60)
    try:
        ready = worker.receive()
        assert ready["threads"]["env"]["OMP_PROC_BIND"] == "spread"
        assert ready["threads"]["affinity"] == sorted(os.sched_getaffinity(0))
        assert ready["threads"]["torch_threads"] == 1 and ready["threads"]["pid"] != os.getpid()
        reply = worker.request({"cmd": "round", "warmup": 1, "iters": 3})
        assert len(reply["latencies_ms"]) == 3 and all(v > 0 for v in reply["latencies_ms"])
    finally:
        worker.stop()
    assert worker.proc.returncode == 0


def test_one_thread_workers_of_a_generation_share_a_core_and_the_cores_take_turns():
    assert [workers.generation_cpu(g, [0, 1]) for g in range(5)] == [0, 1, 0, 1, 0]
    assert [workers.generation_cpu(g, [2, 5, 7]) for g in range(4)] == [2, 5, 7, 2]
    assert workers.generation_cpu(3, [4]) is None  # one core: nothing to choose
    one = workers.WorkerEntry(None, "torch", "fp32", {}, None, {"engine": "torch", "engine_options": {"threads": 1}},
                              {"set": {}, "user": {}})
    assert workers._spec_for(one, 1)["cpus"] == [1] and "cpus" not in one.spec
    every = workers.WorkerEntry(None, "ort", "fp32", {}, None, {"engine": "ort", "engine_options": {"threads": None}},
                                {"set": {}, "user": {}})
    assert "cpus" not in workers._spec_for(every, 1)  # several threads: their own placement
    placed = workers.WorkerEntry(None, "torch", "fp32", {}, None, one.spec, {"set": {}, "user": {"OMP_PLACES": "{1}"}})
    assert "cpus" not in workers._spec_for(placed, 1)  # the user's own placement wins
    gpu = workers.WorkerEntry(None, "torch", "fp32", {}, None, {**one.spec, "device": "cuda"}, {"set": {}, "user": {}})
    assert "cpus" not in workers._spec_for(gpu, 1)
    assert "cpus" not in workers._spec_for(one, None)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs 2 usable cores")
def test_a_pinned_worker_runs_on_its_core_and_says_so(tmp_path):
    from bench.engines.sources import resolve_source
    from tests.bench.user_models import TinyNet

    src = resolve_source(TinyNet(), input_shape=(3, 8, 8), name="tiny")
    spec = workers.portable_spec(src, "torch", "fp32", 1, Settings(threads=1), tmp_path, 0)
    core = sorted(os.sched_getaffinity(0))[-1]
    worker = workers.Worker({**spec, "cpus": [core]}, workers.worker_environment({"set": {}}), tmp_path, timeout_s=60)
    try:
        ready = worker.receive()
        assert ready["threads"]["pinned_cpus"] == [core] and ready["threads"]["main_thread_affinity"] == [core]
        assert ready["threads"]["affinity"] == sorted(os.sched_getaffinity(0))  # what it started with
    finally:
        worker.stop()


def _population(rng, worker_means, rounds=8, per_round=20, noise=0.01):
    return [[list(m * np.exp(rng.normal(0, noise, per_round))) for _ in range(rounds)] for m in worker_means]


def test_a_two_mode_population_is_unstable_with_both_modes():
    rng = np.random.default_rng(1)
    population = _population(rng, [2.3, 2.31, 5.6, 2.29, 5.65])
    found = intervals.detect_modes([[v for r in w for v in r] for w in population])
    assert found["unstable"] and found["mode_workers"] == [3, 2]
    assert found["modes_ms"][0] == pytest.approx(2.3, rel=0.02) and found["modes_ms"][1] == pytest.approx(5.62, rel=0.02)
    assert intervals.describe_modes(found["modes_ms"], found["mode_workers"]).startswith("unstable: 2.3 ms in 3")


def test_one_mode_with_small_spread_between_processes_is_stable():
    rng = np.random.default_rng(2)
    population = _population(rng, [2.30, 2.33, 2.28, 2.35])
    assert not intervals.detect_modes([[v for r in w for v in r] for w in population])["unstable"]


def test_slow_periods_in_time_are_found_in_every_worker_and_named():
    """A host that runs the VM 1.55x slower for a stretch: rounds 3-6 of every worker slow, the rest fast."""
    rng = np.random.default_rng(4)
    population = [[list((3.1 if 3 <= r < 7 else 2.0) * np.exp(rng.normal(0, 0.02, 20))) for r in range(10)]
                  for _ in range(4)]
    found = intervals.detect_periods(population)
    assert found["slow_periods"] and found["period_rounds"] == [24, 16]
    assert found["period_modes_ms"] == pytest.approx([2.0, 3.1], rel=0.02)
    assert intervals.describe_periods(found["period_modes_ms"], found["period_rounds"]) == \
        "2 ms in 24 rounds, 3.1 ms in 16 rounds"
    assert not intervals.detect_modes([[v for r in w for v in r] for w in population])["unstable"]  # not processes


def test_a_slow_period_on_both_sides_leaves_the_ratio_stable_a_process_mode_on_one_side_does_not():
    rng = np.random.default_rng(6)

    def side(scale, slow_workers):
        return [[list(scale * (1.3 if w in slow_workers else 1.0) * np.exp(rng.normal(0, 0.01, 20)))
                 for _ in range(8)] for w in range(6)]

    base, new = side(2.0, {4}), side(1.9, {4})  # worker pair 4 ran while the machine was slow
    assert intervals.detect_modes([[v for r in w for v in r] for w in base])["unstable"]  # one entry cannot tell
    assert not intervals.ratio_modes(base, new)["unstable"]
    stuck = side(1.9, {1, 4})  # worker 1 of the new side alone in a slow mode of its own
    found = intervals.ratio_modes(base, stuck)
    assert found["unstable"] and found["mode_workers"] == [5, 1]
    assert intervals.describe_modes(found["modes_ms"], found["mode_workers"], unit="").startswith("unstable: ratio 0.95")


def test_a_side_in_two_modes_the_pairing_does_not_cancel_makes_the_ratio_unstable():
    """One torch thread pinned to a core ran at 2.1 ms for stretches and 3.4 ms for others; onnxruntime on both
    cores did not follow, so its ratio over torch took one value per stretch. A twin on the same core that
    follows the stretches keeps one ratio."""
    rng = np.random.default_rng(7)

    def worker(levels):
        return [list(level * np.exp(rng.normal(0, 0.01, 20))) for level in levels]

    fast_then_slow = [2.1] * 6 + [3.4] * 4  # the fourth worker's core was fast for its first 6 rounds
    torch_side = [worker([3.4] * 10) for _ in range(3)] + [worker(fast_then_slow)]
    ort_side = [worker([0.5] * 10) for _ in range(4)]
    assert intervals.detect_modes([[v for r in w for v in r] for w in torch_side])["unstable"]
    pairs = [[float(np.median(n[r]) / np.median(b[r])) for r in range(10)] for b, n in zip(torch_side, ort_side)]
    assert not intervals.detect_modes(pairs)["unstable"], "the rounds' own intervals overlap: not enough alone"
    found = intervals.ratio_modes(torch_side, ort_side)
    assert found["unstable"] and found["mode_workers"] == [3, 1]
    assert found["modes_ms"] == pytest.approx([0.5 / 3.4, 0.5 / 2.1], rel=0.03)
    c = intervals.paired_worker_ratio(torch_side, ort_side, 0.03)
    assert c["verdict"] == "unstable" and c["note"].startswith("unstable: ratio 0.147 in 3 processes, 0.23")
    twin = [[list(1.5 * np.array(r)) for r in w] for w in torch_side]  # the same stretches, 1.5x the time
    assert not intervals.ratio_modes(torch_side, twin)["unstable"]
    assert intervals.paired_worker_ratio(torch_side, twin, 0.03)["verdict"] == "slower"


@pytest.mark.parametrize("slow_rounds", [0, 1, 3])
def test_one_speed_or_a_few_outlier_rounds_are_not_slow_periods(slow_rounds):
    rng = np.random.default_rng(5)
    population = [[list((3.1 if w == 0 and r < slow_rounds else 2.0) * np.exp(rng.normal(0, 0.03, 20)))
                   for r in range(10)] for w in range(4)]  # at most 3 of 40 rounds slow: under the 10% share
    found = intervals.detect_periods(population)
    assert not found["slow_periods"] and found["period_rounds"] == [40]


def test_interval_covers_when_the_spread_between_workers_dominates():
    """Each process draws its own speed (5% spread), rounds within it agree to 1%: the ratio's interval must
    still cover the true ratio about 95% of the time (at least 90% of 200 seeded experiments)."""
    rng = np.random.default_rng(3)
    truth, hits, experiments = 1.2, 0, 200
    for seed in range(experiments):
        base_means = 2.0 * np.exp(rng.normal(0, 0.05, 4))
        new_means = 2.0 * truth * np.exp(rng.normal(0, 0.05, 4))
        base = _population(rng, base_means, rounds=6, per_round=8)
        new = _population(rng, new_means, rounds=6, per_round=8)
        _, low, high = intervals.ratio_interval(base, new, resamples=400, seed=seed)
        hits += low <= truth <= high
    assert hits / experiments >= 0.90


def test_rounds_of_one_process_alone_would_miss_the_spread_between_processes():
    """The check above has teeth: an interval over rounds only (all workers' rounds pooled as if one process)
    covers far less often on the same population."""
    from bench.measure.stats import ratio_interval as rounds_only

    rng = np.random.default_rng(3)
    hits = 0
    for seed in range(100):
        base = _population(rng, 2.0 * np.exp(rng.normal(0, 0.05, 4)), rounds=6, per_round=8)
        new = _population(rng, 2.4 * np.exp(rng.normal(0, 0.05, 4)), rounds=6, per_round=8)
        _, low, high = rounds_only([r for w in base for r in w], [r for w in new for r in w], resamples=400, seed=seed)
        hits += low <= 1.2 <= high
    assert hits / 100 < 0.8


def test_level_interval_is_narrow_when_workers_agree():
    rng = np.random.default_rng(4)
    point, low, high = intervals.level_interval(_population(rng, [2.0, 2.0, 2.0, 2.0], noise=0.005))
    assert intervals.target_met(point, low, high, 0.03)


@pytest.mark.slow
def test_a_worker_that_crashes_or_hangs_is_an_error_record_and_the_rest_go_on(tmp_path):
    from bench.engines.sources import resolve_source
    from bench.measure.run import model_costs
    from tests.bench.measure.faulty_models import CrashingNet, HangingNet
    from tests.bench.user_models import TinyNet

    items = []
    for module, name in ((TinyNet(), "good"), (CrashingNet(), "crashing"), (HangingNet(), "hanging")):
        src = resolve_source(module, input_shape=(3, 8, 8), name=name)
        items.append((src, model_costs(src), "torch", "fp32"))
    settings = Settings(threads=1, workers=1, rounds=3, iters=6, warmup=1, worker_timeout_s=4)
    records, comparisons = workers.measure(items, 1, settings, Path(tmp_path), np.random.default_rng(0),
                                           threshold=0.03)
    good, crashed, hung = records
    assert good["error"] is None and good["timing_mode"] == "workers" and good["workers"] == 1
    assert "exited with status 7" in crashed["error"] and crashed["latency_ms_p50"] is None
    assert "hung" in hung["error"]
    assert comparisons == []  # nothing to compare the good entry with


def test_a_source_a_worker_cannot_open_is_an_error_record(tmp_path):
    from bench.engines.sources import resolve_source
    from tests.bench.user_models import TinyNet

    src = resolve_source(TinyNet(), input_shape=(3, 8, 8), name="tiny")
    entry_spec = workers.portable_spec(src, "torch", "fp32", 1, Settings(threads=1), tmp_path, 0)
    entry_spec["module_file"] = str(tmp_path / "missing.pt")
    entry = workers.WorkerEntry(src, "torch", "fp32", {"flops": None}, None, entry_spec,
                                workers.thread_policy("torch", 1))
    outcome = workers.time_in_workers([entry], Settings(threads=1, workers=1, rounds=1, iters=2), tmp_path,
                                      np.random.default_rng(0))
    assert entry.error.startswith("worker failed to start") and "missing.pt" in entry.error
    assert outcome["workers"] == 1 and not outcome["target_met"]


@pytest.mark.slow
def test_compare_in_workers_end_to_end(run_cli, results_dir):
    from bench.records.io import read_records

    code, out, err = run_cli("compare", "resnet20", "resnet20", "--engine", "torch", "--timing", "workers",
                             "--workers", "2", "--max-time", "1", "--rounds", "3", "--iters", "9", "--warmup", "1",
                             "--threads", "1", "--out", results_dir)
    assert code == 0, err
    latency = read_records(results_dir / "latency.jsonl")
    # At least --workers; more while --max-time lasts (forked workers are quick to start).
    assert len({r["workers"] for r in latency}) == 1 and latency[0]["workers"] >= 2
    assert all(r["timing_mode"] == "workers" and len(r["worker_medians_ms"]) == r["workers"] for r in latency)
    assert all(r["iters"] == 9 * r["workers"] and r["settings"]["threads_in_workers"]["torch_threads"] == 1
               for r in latency)
    (comparison,) = read_records(results_dir / "comparison.jsonl")
    assert comparison["timing_mode"] == "workers" and comparison["target_met"] in (True, False)


def test_each_generation_starts_its_workers_in_a_new_random_order(tmp_path, monkeypatch):
    """Nothing tied to a worker's place in the start order may stay with one entry for a whole run."""
    started: list[str] = []

    class FakeWorker:
        def __init__(self, spec, env, workdir, timeout_s):
            started.append(spec["name"])

        def receive(self, timeout_s=None):
            return {"info": {}, "device": "cpu", "input_shape": [3, 8, 8], "threads": {}}

        def request(self, message):
            return {"latencies_ms": [1.0], "warmup_iters": 0, "warmup_s": 0.0, "timed_wall_s": 0.001,
                    "memory_peak_bytes": 0, "memory_kind": "rss", "include_transfers": False, "timer": "perf_counter"}

        def stop(self):
            pass

    monkeypatch.setattr(workers, "Worker", FakeWorker)
    names = [f"e{i}" for i in range(6)]
    entries = [workers.WorkerEntry(None, "ort", "fp32", {}, None, {"engine": "ort", "name": n}, {"set": {}})
               for n in names]
    rng = np.random.default_rng(0)
    orders = []
    for generation in range(4):
        started.clear()
        workers._generation(entries, Settings(threads=2, rounds=2, iters=2), tmp_path, rng, None, generation)
        assert sorted(started) == names  # every entry once
        orders.append(tuple(started))
    assert len(set(orders)) > 1  # 4 draws of 720 orders: all equal only by a broken shuffle
    assert all(len(e.workers) == 4 for e in entries)


def test_a_round_after_another_engines_round_waits_for_its_threads_to_settle(tmp_path, monkeypatch):
    """Round by round, a pause comes only where the engine changes: onnxruntime's and OpenVINO's pools spin on
    after their round, and a torch round right after one ran 2.5x slower."""
    log: list[str] = []

    class FakeWorker:
        def __init__(self, spec, env, workdir, timeout_s):
            self.engine = spec["engine"]

        def receive(self, timeout_s=None):
            return {"info": {}, "device": "cpu", "input_shape": [3, 8, 8], "threads": {}}

        def request(self, message):
            log.append(self.engine)
            return {"latencies_ms": [1.0], "warmup_iters": 0, "warmup_s": 0.0, "timed_wall_s": 0.001,
                    "memory_peak_bytes": 0, "memory_kind": "rss", "include_transfers": False, "timer": "perf_counter"}

        def stop(self):
            pass

    monkeypatch.delenv(workers.GAP_ENV, raising=False)
    monkeypatch.setattr(workers, "Worker", FakeWorker)
    monkeypatch.setattr(workers.time, "sleep", lambda s: log.append(f"pause {s:g}"))
    entries = [workers.WorkerEntry(None, engine, "fp32", {}, None, {"engine": engine}, {"set": {}})
               for engine in ("torch", "torch", "ort")]
    workers._generation(entries, Settings(threads=1, rounds=4, iters=4), tmp_path, np.random.default_rng(0), None)
    assert all(len(e.workers[0]["rounds"]) == 4 for e in entries)
    rounds = [item for item in log if not item.startswith("pause")]
    assert len(rounds) == 12
    for before, after in zip(log, log[1:]):
        if not before.startswith("pause") and not after.startswith("pause"):
            assert before == after  # no pause only between rounds of one engine
        if after.startswith("pause"):
            assert after == f"pause {workers.ENGINE_SWITCH_GAP_S:g}" and not before.startswith("pause")
    switches = sum(1 for a, b in zip(rounds, rounds[1:]) if a != b)
    assert switches and log.count(f"pause {workers.ENGINE_SWITCH_GAP_S:g}") == switches


def test_a_round_takes_each_engines_entries_together_in_a_new_random_order():
    """A round pauses at most once per engine, and no entry keeps its place in the round."""
    engines = ["torch", "ort", "openvino", "torch", "ort", "openvino", "openvino"]
    rng = np.random.default_rng(0)
    orders = [workers.round_order(engines, rng) for _ in range(40)]
    for order in orders:
        assert sorted(order) == list(range(len(engines)))  # every entry once
        runs = [engines[i] for i in order]
        changes = sum(1 for a, b in zip(runs, runs[1:]) if a != b)
        assert changes == len(set(engines)) - 1  # each engine's entries in one stretch
    assert len({tuple(engines[i] for i in o) for o in orders}) > 1, "the engines' order is drawn anew"
    assert len({tuple(o) for o in orders}) > 6, "and so is the order within an engine"
    for index in range(len(engines)):
        assert len({o.index(index) for o in orders}) > 1, f"entry {index} always at one place"
    assert workers.round_order(["ort"], rng) == [0] and workers.round_order([], rng) == []


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_pause_setting_that_is_no_pause_is_one_line(value, monkeypatch):
    from bench.errors import UsageProblem

    monkeypatch.setenv(workers.GAP_ENV, value)
    with pytest.raises(UsageProblem, match="RBENCH_ENGINE_SWITCH_GAP_S=.* is not a pause in seconds"):
        workers.engine_switch_gap_s()
    monkeypatch.setenv(workers.GAP_ENV, "0")
    assert workers.engine_switch_gap_s() == 0.0


def _entry_with(rounds_per_worker, engine="torch"):
    entry = workers.WorkerEntry(None, engine, "fp32", {}, None, {"engine": engine, "engine_options": {}}, {"set": {}})
    entry.workers = [{"rounds": rounds, "threads": {}} for rounds in rounds_per_worker]
    return entry


def _rounds(level, workers_=3, rounds=5, seed=0):
    rng = np.random.default_rng(seed)
    return [[list(level * (1 + 0.01 * rng.standard_normal(8))) for _ in range(rounds)] for _ in range(workers_)]


def _entry_at(threads, rounds_per_worker, engine="torch"):
    entry = _entry_with(rounds_per_worker, engine)
    entry.spec["engine_options"] = {"threads": threads}
    return entry


def test_the_thread_check_says_when_one_thread_is_as_fast_as_the_default():
    """Item 5 of the worker-timing issue: where 2 threads are no faster than 1 the record says so; where they
    are, it says that too, from rounds timed in the same generations."""
    default = _entry_at(2, _rounds(2.0))
    same = workers.thread_check(default, _entry_at(1, _rounds(2.0, seed=1)), 0.03)
    assert same["verdict"] == "no measurable difference" and same["more_threads_faster"] is False
    assert same["other_p50_ms"] == pytest.approx(2.0, rel=0.02) and (same["threads"], same["other_threads"]) == (2, 1)
    assert same["ratio_ci"][0] <= 1.0 <= same["ratio_ci"][1]
    one_slower = workers.thread_check(default, _entry_at(1, _rounds(3.6, seed=2)), 0.03)
    assert one_slower["verdict"] == "slower" and one_slower["more_threads_faster"] is True
    assert one_slower["ratio_other_over_default"] == pytest.approx(1.8, rel=0.03)
    failed = _entry_at(1, [])
    failed.error = "worker failed to start: boom"
    assert workers.thread_check(default, failed, 0.03) == {"threads": 2, "other_threads": 1,
                                                           "error": "worker failed to start: boom"}


def test_the_thread_check_of_a_one_thread_default_asks_whether_every_core_is_faster():
    """torch's default for a small batch is one thread: its twin runs every core, and "faster" now means the
    twin's threads were faster (the rule misjudged the net), not that one thread was."""
    default = _entry_at(1, _rounds(2.0))
    same = workers.thread_check(default, _entry_at(2, _rounds(2.0, seed=3)), 0.03)
    assert (same["threads"], same["other_threads"]) == (1, 2) and same["more_threads_faster"] is False
    two_faster = workers.thread_check(default, _entry_at(2, _rounds(1.2, seed=4)), 0.03)
    assert two_faster["verdict"] == "faster" and two_faster["more_threads_faster"] is True
    assert two_faster["ratio_other_over_default"] == pytest.approx(0.6, rel=0.03)
    two_slower = workers.thread_check(default, _entry_at(2, _rounds(3.0, seed=5)), 0.03)
    assert two_slower["verdict"] == "slower" and two_slower["more_threads_faster"] is False


def test_only_each_engines_first_entry_at_batch_1_with_default_threads_gets_a_twin(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    entries = [_entry_with([], engine) for engine in ("torch", "torch", "ort", "trt")]
    entries[0].spec["engine_options"] = {"threads": 1}  # torch's default for a small batch
    twins = workers.thread_twins(entries, 1, Settings(thread_check=True))
    assert [(i, t.engine_name, t.spec["engine_options"]["threads"]) for i, t in twins] == [(0, "torch", 2),
                                                                                       (2, "ort", 1)]
    assert twins[0][1].policy["set"] == {"OMP_PROC_BIND": "spread", "OMP_PLACES": "threads"}  # 2 threads: pinned
    assert twins[1][1].policy["set"] == {}  # one thread: nothing to pin
    assert entries[0].spec["engine_options"] == {"threads": 1}  # the entry itself keeps the default
    for batch, settings in ((8, Settings(thread_check=True)), (1, Settings(thread_check=True, threads=2)),
                            (1, Settings())):
        assert workers.thread_twins(entries, batch, settings) == []
    monkeypatch.setattr(workers, "usable_cores", lambda: 1)
    assert workers.thread_twins(entries, 1, Settings(thread_check=True)) == []


def test_torch_takes_one_thread_for_a_small_batch_and_every_core_for_a_large_one():
    """The default threads follow a batch's work per weighted layer: the CIFAR ResNets' 2M at batch 1 get one thread,
    ResNet-18 at 64x64 (7M per layer, about resnet56's MACs in all) and ResNet-50 every core."""
    from bench.measure.settings import TORCH_ONE_THREAD_LAYER_MACS, layer_macs

    resnet20, resnet18_64, resnet50 = {"macs": 41.3e6, "layers": 20}, {"macs": 148.9e6, "layers": 21}, \
        {"macs": 4.13e9, "layers": 54}
    settings = Settings()
    assert settings.engine_options("torch", layer_macs(resnet20, 1))["threads"] == 1
    assert settings.engine_options("torch", layer_macs(resnet18_64, 1))["threads"] is None  # torch's own: every core
    assert settings.engine_options("torch", layer_macs(resnet50, 1))["threads"] is None
    assert settings.engine_options("torch", layer_macs(resnet20, 8))["threads"] is None  # the batch's work counts
    assert settings.engine_options("torch", TORCH_ONE_THREAD_LAYER_MACS)["threads"] == 1
    assert layer_macs({"macs": 41.3e6, "layers": None}, 1) is None and layer_macs({"macs": None}, 1) is None
    assert settings.engine_options("torch", None)["threads"] is None  # unknown work: the engine's default
    assert settings.engine_options("ort", layer_macs(resnet20, 1))["threads"] is None  # onnxruntime is faster with 2
    assert Settings(threads=2).engine_options("torch", layer_macs(resnet20, 1))["threads"] == 2  # --threads wins
    assert Settings(device="cuda").engine_options("torch", layer_macs(resnet20, 1))["threads"] is None
    threads, why = settings.threads_for("torch", layer_macs(resnet20, 1))
    assert threads == 1 and "one thread" in why and "2.06M here" in why
    assert settings.threads_for("torch", None) == (None, "the engine's default: every usable core")


def test_costs_count_the_weighted_layers_of_a_module_and_of_its_onnx_file(tmp_path):
    from bench.engines.sources import onnx_file, resolve_source
    from bench.measure.run import model_costs

    src = resolve_source("resnet20")
    costs = model_costs(src)
    assert costs["layers"] == 20  # 19 convs (option-A shortcuts hold none) and the classifier
    assert model_costs(resolve_source(str(onnx_file(src, "fp32", tmp_path, 1))))["layers"] == 20


@pytest.mark.skipif(workers.usable_cores() < 2, reason="the thread check needs 2 usable cores")
def test_the_thread_check_runs_in_the_same_workers_and_lands_in_the_record(tmp_path):
    from bench.engines.sources import resolve_source
    from bench.measure.run import model_costs
    from bench.records.schema import validate_record
    from tests.bench.user_models import TinyNet

    src = resolve_source(TinyNet(), input_shape=(3, 8, 8), name="tiny")
    settings = Settings(workers=1, max_time_s=0, rounds=3, iters=6, warmup=1, thread_check=True)
    records, _ = workers.measure([(src, model_costs(src), "torch", "fp32")], 1, settings, Path(tmp_path),
                                 np.random.default_rng(0), threshold=0.03)
    (record,) = records
    validate_record(record)
    check = record["thread_check"]
    assert (check["threads"], check["other_threads"]) == (1, workers.usable_cores())  # a tiny net: 1 thread
    assert check["workers"] == 1 and check["other_p50_ms"] > 0
    assert record["settings"]["threads_in_workers"]["torch_threads"] == 1
    assert record["settings"]["threads_in_workers"]["pinned_cpus"] == [[workers.generation_cpu(0)]]  # per worker
    assert "one thread" in record["settings"]["threads_in_workers"]["threads_why"]
    assert check["verdict"] in ("faster", "slower", "no measurable difference")
    assert record["iters"] == 6  # the twin's runs are its own, not pooled into the entry's


def test_the_cli_notes_when_more_threads_are_no_faster(capsys):
    from bench.commands.measure import _warn_noise

    record = {"model": "resnet50", "engine": "ort", "batch": 1, "contention": {}, "peak_flops_s": 1.0,
              "thread_check": {"threads": 2, "other_threads": 1, "other_p50_ms": 2.05, "ratio_other_over_default": 1.01,
                               "ratio_ci": [0.98, 1.04], "verdict": "no measurable difference",
                               "more_threads_faster": False}}
    _warn_noise([record])
    err = capsys.readouterr().err
    assert "the default 2 threads are not measurably faster than 1 here (1 thread: p50 2.050 ms, 1.01x [0.98, 1.04]" in err
    _warn_noise([{**record, "thread_check": {**record["thread_check"], "verdict": "faster", "ratio_other_over_default": 0.8,
                                             "ratio_ci": [0.75, 0.86]}}])
    assert "the default 2 threads are slower than 1 here (1 thread: p50 2.050 ms, 0.80x" in capsys.readouterr().err
    _warn_noise([{**record, "thread_check": {**record["thread_check"], "verdict": "slower",
                                             "more_threads_faster": True}}])
    assert "threads" not in capsys.readouterr().err  # the threads help: nothing to say
    small = {**record, "model": "resnet20", "engine": "torch",
             "thread_check": {"threads": 1, "other_threads": 2, "other_p50_ms": 2.1, "ratio_other_over_default": 1.02,
                              "ratio_ci": [0.97, 1.07], "verdict": "no measurable difference",
                              "more_threads_faster": False}}
    _warn_noise([small])
    assert ("1 thread, the default for a batch this small: 2 threads were not measurably faster (2 threads: p50 "
            "2.100 ms, 1.02x [0.97, 1.07]") in capsys.readouterr().err
    _warn_noise([{**small, "thread_check": {**small["thread_check"], "verdict": "faster", "more_threads_faster": True}}])
    assert "2 threads were faster than the default 1 here" in capsys.readouterr().err
