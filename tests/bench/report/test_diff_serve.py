"""`rbench diff` on serve records: like with like, each scenario's figure, VALID -> INVALID is a regression.

The records are written by hand (no LoadGen run): each test is about what diff does with them.
"""

from __future__ import annotations

import json

import pytest

from bench.report.diff import UnusableRecords, diff_records, diff_serve_records

MACHINE = {"cpu": "Test CPU", "cores_usable": 2, "arch": "x86_64", "gpu": None}


def _serve(scenario: str = "server", **changes) -> dict:
    """A serve record as `rbench serve` writes one (only the fields diff reads)."""
    record = {"schema": "rbench.record/1", "kind": "serve", "model": "resnet20", "engine": "ort",
              "source": {"kind": "zoo", "name": "resnet20", "sha256": None}, "precision": "fp32", "device": "cpu",
              "input_shape": [3, 32, 32], "scenario": scenario, "mode": "performance", "result": "VALID",
              "samples_per_s": 400.0, "latency_ms_p90": 2.0, "latency_ms_p99": 3.0, "query_latency_ms_p99": 12.0,
              "workers": 1, "threads": 2, "max_batch": 8, "loadgen_settings": {"min_duration_s": 10.0},
              "engine_info": {"version": "1"}, "machine": MACHINE, "error": None, "git_commit": None}
    record.update(changes)
    return record


@pytest.mark.parametrize("scenario, field, worse, better", [
    ("server", "samples_per_s", 300.0, 500.0),
    ("offline", "samples_per_s", 300.0, 500.0),
    ("singlestream", "latency_ms_p90", 3.0, 1.0),
    ("multistream", "query_latency_ms_p99", 20.0, 6.0),
])
def test_each_scenario_is_judged_by_its_own_figure_in_its_own_direction(scenario, field, worse, better):
    base = [_serve(scenario)]
    for value, verdict in ((worse, "slower"), (better, "faster"), (base[0][field] * 1.01, "within threshold")):
        report = diff_serve_records(base, [_serve(scenario, **{field: value})])
        (pair,) = report["pairs"]
        assert (pair["metric"], pair["verdict"]) == (field, verdict), pair
        assert report["regressed"] is (verdict == "slower")
        assert pair["better"] == ("higher" if field == "samples_per_s" else "lower")


def test_valid_to_invalid_is_a_regression_even_when_the_figure_holds():
    report = diff_serve_records([_serve()], [_serve(result="INVALID", samples_per_s=401.0)])
    (pair,) = report["pairs"]
    assert pair["verdict"] == "became INVALID" and report["regressed"]
    # INVALID -> VALID is no regression
    report = diff_serve_records([_serve(result="INVALID")], [_serve(samples_per_s=401.0)])
    assert report["pairs"][0]["verdict"] == "within threshold" and not report["regressed"]


def test_only_like_is_compared_with_like():
    base = [_serve("server"), _serve("offline", samples_per_s=900.0), _serve("server", engine="openvino")]
    new = [_serve("server", samples_per_s=100.0, mode="find_peak"), _serve("offline", samples_per_s=880.0)]
    report = diff_serve_records(base, new)
    assert [(p["key"]["scenario"], p["verdict"]) for p in report["pairs"]] == [("offline", "within threshold")]
    assert (report["unmatched_baseline"], report["unmatched_new"]) == (2, 1)


def test_settings_that_differ_are_listed():
    report = diff_serve_records([_serve()], [_serve(threads=1, max_batch=16)])
    assert report["pairs"][0]["settings_differ"] == {"threads": [2, 1], "max_batch": [8, 16]}


def test_records_of_another_machine_are_refused_unless_asked():
    from bench.errors import UsageProblem

    other = {**MACHINE, "cpu": "Other CPU"}
    with pytest.raises(UsageProblem, match="different machines"):
        diff_serve_records([_serve()], [_serve(machine=other)])
    assert diff_serve_records([_serve()], [_serve(machine=other)], cross_machine=True)["pairs"]


@pytest.mark.parametrize("changes, words", [
    ({"samples_per_s": 0.0}, ("samples_per_s", "positive")),
    ({"samples_per_s": None}, ("samples_per_s", "null")),
    ({"scenario": "batch"}, ("scenario", "batch")),
    ({"model": 3}, ("model", "an integer")),
])
def test_a_serve_record_diff_cannot_compare_is_unusable(changes, words):
    with pytest.raises(UnusableRecords) as info:
        diff_serve_records([_serve()], [_serve(**changes)])
    assert all(word in str(info.value) for word in words), info.value


def test_diff_records_takes_latency_and_serve_records_together():
    report = diff_records([_serve()], [_serve(samples_per_s=200.0)])
    assert report["pairs"] == [] and report["serve_pairs"][0]["verdict"] == "slower" and report["regressed"]


def _write(path, *records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_command_reads_serve_records_and_exits_1_on_a_regression(run_cli, tmp_path):
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    # accuracy runs and units not served carry no performance figure: passed over, never an error
    _write(base, _serve(), _serve(mode="accuracy", samples_per_s=None), _serve("offline", error="no LoadGen"))
    _write(new, _serve(result="INVALID"))
    code, out, err = run_cli("diff", base, new)
    assert code == 1, (code, out, err)
    assert "became INVALID" in out and "1 matched serve pairs" in out and "regression" in err
    _write(new, _serve(samples_per_s=410.0))
    code, out, err = run_cli("diff", base, new, "--json")
    assert code == 0, (code, out, err)
    assert json.loads(out)["serve_pairs"][0]["verdict"] == "within threshold"


def test_a_bad_serve_record_is_a_data_error_naming_its_line(run_cli, tmp_path):
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    _write(base, _serve())
    _write(new, _serve(), _serve(latency_ms_p90=-1.0, scenario="singlestream"))
    code, out, err = run_cli("diff", base, new)
    assert code == 3 and f"{new}:2" in err and "latency_ms_p90" in err, (code, out, err)
