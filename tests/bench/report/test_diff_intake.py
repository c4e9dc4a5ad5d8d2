"""`rbench diff` refuses records it cannot trust, with its own exit code, and reads what a full disk leaves.

The records here are written by hand (no timing): each test is about what diff does with the file.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

#: What `rbench diff` exits with when a records file is unusable (a data error, not a regression).
DATA_ERROR = 3


def _record(scale: float = 1.0, **changes) -> dict:
    """A latency record as `rbench latency` writes one, with 40 quiet latencies around `scale` ms."""
    latencies = [float(v) for v in scale * (1 + 0.01 * np.random.default_rng(0).standard_normal(40))]
    record = {"schema": "rbench.record/1", "kind": "latency", "model": "resnet20",
              "source": {"kind": "zoo", "name": "resnet20", "sha256": None}, "engine": "torch", "precision": "fp32",
              "batch": 1, "input_shape": [3, 32, 32], "error": None,
              "machine": {"cpu": "Test CPU", "cores_usable": 2, "arch": "x86_64", "gpu": None},
              "latencies_ms": latencies, "latency_ms_p50": float(np.median(latencies)),
              "settings": {"threads": 1}, "engine_info": {"version": "1", "options": {}}, "git_commit": None}
    record.update(changes)
    return record


def _write(path, *records, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


@pytest.fixture
def baseline(tmp_path):
    path = tmp_path / "baseline.jsonl"
    _write(path, _record())
    return path


@pytest.mark.parametrize("latencies, words", [
    ([float("inf")] * 40, ("Infinity", "not JSON")),  # json.dumps writes Infinity/NaN, which JSON has not
    ([float("nan")] * 40, ("NaN", "not JSON")),
    ([1.0] * 39 + [float("-inf")], ("-Infinity", "not JSON")),
    ("[1.0, 1e999]", ("latencies_ms", "inf", "finite")),  # valid JSON that overflows to infinity
    ([-0.5] * 40, ("latencies_ms", "-0.5", "positive")),
    ([0.0] * 40, ("latencies_ms", "positive")),
])
def test_non_finite_or_non_positive_latencies_are_a_data_error(run_cli, tmp_path, baseline, latencies, words):
    new = tmp_path / "new.jsonl"
    if isinstance(latencies, str):
        new.write_text(json.dumps(_record(latencies_ms="@")).replace('"@"', latencies) + "\n")
    else:
        _write(new, _record(latencies_ms=latencies))
    code, out, err = run_cli("diff", baseline, new)
    assert code == DATA_ERROR, (code, out, err)
    assert f"{new}:1" in err and all(word in err for word in words), err
    assert len(err.strip().splitlines()) == 1 and "no measurable difference" not in out


def test_a_non_positive_or_overflowing_median_is_a_data_error_too(run_cli, tmp_path, baseline):
    new = tmp_path / "new.jsonl"
    for p50 in ("-1.0", "1e999"):
        new.write_text(json.dumps(_record(latency_ms_p50="@")).replace('"@"', p50) + "\n")
        code, _, err = run_cli("diff", baseline, new)
        assert code == DATA_ERROR and "latency_ms_p50" in err and len(err.strip().splitlines()) == 1


def test_a_bad_baseline_is_refused_as_well(run_cli, tmp_path, baseline):
    bad = tmp_path / "bad.jsonl"
    _write(bad, _record(latencies_ms=[-1.0] * 40))
    code, _, err = run_cli("diff", bad, baseline)
    assert code == DATA_ERROR and f"{bad}:1" in err


@pytest.mark.parametrize("changes, field", [
    ({"latencies_ms": "1.0, 2.0"}, "latencies_ms"),
    ({"latencies_ms": [1.0, "2.0"]}, "latencies_ms"),
    ({"latency_ms_p50": None}, "latency_ms_p50"),
    ({"source": "resnet20"}, "source"),
    ({"machine": "a laptop"}, "machine"),
    ({"input_shape": "3x32x32"}, "input_shape"),
    ({"batch": "one"}, "batch"),
    ({"settings": ["threads", 1]}, "settings"),
])
def test_malformed_records_are_one_line_data_errors(run_cli, tmp_path, baseline, changes, field):
    new = tmp_path / "new.jsonl"
    _write(new, _record(**changes))
    code, _, err = run_cli("diff", baseline, new)
    assert code == DATA_ERROR, err
    assert f"{new}:1" in err and field in err and len(err.strip().splitlines()) == 1


def test_a_missing_median_is_a_data_error(run_cli, tmp_path, baseline):
    record = _record()
    del record["latency_ms_p50"]
    new = tmp_path / "new.jsonl"
    _write(new, record)
    code, _, err = run_cli("diff", baseline, new)
    assert code == DATA_ERROR and "latency_ms_p50" in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_utf8_is_a_data_error(run_cli, tmp_path, baseline):
    new = tmp_path / "new.jsonl"
    new.write_bytes(json.dumps(_record()).encode() + b"\n\xff\xfe garbage\n")
    code, _, err = run_cli("diff", baseline, new)
    assert code == DATA_ERROR and f"{new}:2" in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_whole_line_is_a_data_error_not_a_regression(run_cli, tmp_path, baseline):
    new = tmp_path / "new.jsonl"
    _write(new, _record(), tail="{not json\n")
    code, _, err = run_cli("diff", baseline, new)
    assert code == DATA_ERROR and f"{new}:2" in err


def test_a_cut_short_last_line_is_skipped_with_one_warning_line(run_cli, tmp_path, baseline):
    """What a full disk leaves: the last line without its end. Diff compares the whole lines."""
    new = tmp_path / "new.jsonl"
    _write(new, _record(), tail=json.dumps(_record())[:57])
    code, out, err = run_cli("diff", baseline, new)
    assert code == 0, err
    assert "no measurable difference" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: warning: ") and f"{new}:2" in lines[0]
    assert "Warning" not in err and "warnings.warn" not in err


def test_a_regression_still_exits_1(run_cli, tmp_path, baseline):
    new = tmp_path / "new.jsonl"
    _write(new, _record(1.5))
    code, _, err = run_cli("diff", baseline, new)
    assert code == 1 and "regression" in err


def test_help_documents_the_exit_codes(run_cli):
    code, out, _ = run_cli("diff", "--help")
    assert code == 0 and "Exit 3" in out


def test_the_library_refuses_unchecked_records_too():
    """diff_records is public: records handed to it in Python get the same checks as read ones."""
    from bench.errors import DataProblem
    from bench.report.diff import diff_records

    with pytest.raises(DataProblem, match="latencies_ms"):
        diff_records([_record()], [_record(latencies_ms=[math.nan] * 40)])
