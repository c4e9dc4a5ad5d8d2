"""A study report's latency ratios of nets timed in worker processes: the workers' structure read back from the
records, the hierarchical interval (spread between processes included), and "unstable" with the ratio's modes."""

from __future__ import annotations

import re

import numpy as np

from bench.measure.intervals import split_workers
from bench.report.format import latency_comparison, unit_rows
from bench.report.summary import UNSTABLE, latency_row
from tests.conftest import record_of


def _workers(rng, levels, rounds=10, runs=5, noise=0.01):
    """Per worker (its level in ms), `rounds` rounds of `runs` runs with a little noise."""
    return [[list(level * rng.lognormal(0, noise, runs)) for _ in range(rounds)] for level in levels]


def _latency(unit, workers, engine="torch", with_field=True):
    flat = [v for w in workers for r in w for v in r]
    fields = dict(timing_mode="workers", workers=len(workers), rounds=sum(len(w) for w in workers))
    if with_field:
        fields["worker_rounds"] = [[len(r) for r in w] for w in workers]
    return record_of("latency", unit=unit, study="depth", label=unit, model=unit, engine=engine, batch=1,
                     latencies_ms=flat, latency_ms_p50=float(np.median(flat)), **fields)


def test_a_records_workers_come_back_from_its_fields_or_from_even_rounds():
    rng = np.random.default_rng(0)
    workers = _workers(rng, [1.0, 1.1, 0.9], rounds=4, runs=3)
    flat = [v for w in workers for r in w for v in r]
    assert split_workers(flat, [[3] * 4] * 3) == workers
    assert split_workers(flat, None, workers=3, rounds=12) == workers  # a record from before `worker_rounds`
    assert split_workers(flat, None, workers=5, rounds=12) is None  # does not divide: no structure is made up
    assert split_workers(flat[:-1], [[3] * 4] * 3) is None


def test_the_spread_between_workers_widens_the_reports_interval():
    """Each process of b sits at its own level (+/-8%), and a's at 2x its paired one give or take 6% of its own:
    the interval over workers holds that spread (and the true ratio, 2), where the pooled rounds' did not."""
    rng = np.random.default_rng(1)
    base_levels = 1.0 + 0.08 * rng.standard_normal(6)
    new_levels = 2.0 * base_levels * (1.0 + 0.06 * rng.standard_normal(6))
    rows = {r["label"]: r for r in unit_rows([_latency("a", _workers(rng, new_levels)),
                                              _latency("b", _workers(rng, base_levels))], "depth")}
    c = latency_comparison(rows["a"], rows["b"], "torch")
    assert c["low"] < 2.0 < c["high"], c
    pooled = latency_comparison({**rows["a"], "workers_torch": None}, {**rows["b"], "workers_torch": None}, "torch")
    assert c["high"] / c["low"] > pooled["high"] / pooled["low"], (c, pooled)


def test_worker_pairs_whose_ratios_split_read_unstable_in_the_report_and_its_summary():
    rng = np.random.default_rng(2)
    base_levels = [1.0] * 6
    new_levels = [1.5, 1.5, 1.5, 2.5, 2.5, 2.5]  # three processes see 1.5x, three 2.5x
    for with_field in (True, False):
        rows = {r["label"]: r for r in unit_rows([_latency("a", _workers(rng, new_levels), with_field=with_field),
                                                  _latency("b", _workers(rng, base_levels), with_field=with_field)],
                                                 "depth")}
        c = latency_comparison(rows["a"], rows["b"], "torch")
        assert c["unstable"] and re.match(r"unstable: ratio 1\.5\d* in 3 processes, 2\.5\d* in 3", c["verdict"]), c
        assert c["low"] is None and c["high"] is None, "no interval that pretends the processes agree"
        row = latency_row("Latency of a over b", rows["a"], rows["b"], "torch")
        assert row.status == UNSTABLE and row.answer.startswith("unstable") and "[" not in row.figure


def test_a_clear_difference_between_steady_workers_is_decided():
    rng = np.random.default_rng(3)
    rows = {r["label"]: r for r in unit_rows([_latency("a", _workers(rng, [3.0] * 4)),
                                              _latency("b", _workers(rng, [1.0] * 4))], "depth")}
    c = latency_comparison(rows["a"], rows["b"], "torch")
    assert c["verdict"] == "slower" and not c["unstable"] and 2.9 < c["ratio"] < 3.1
