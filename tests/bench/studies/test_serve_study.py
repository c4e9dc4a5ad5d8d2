"""The serve study: a LoadGen Server peak search of the depth study's resnet20 in the suite's timing phase.

End to end at the smoke preset on scikit-learn digits with onnxruntime (one LoadGen run of half a second), then
its report section on hand-written records, its plan and budget checks, and its cost estimate.
"""

from __future__ import annotations

import pytest

from bench.errors import UsageProblem
from bench.records.io import read_records, validate_record
from bench.studies import STUDIES, get_preset, get_study, study_plan
from bench.studies.base import StudyKind, UnitSpec
from bench.studies.serve import ServeBudget, serve_engine, serve_section, summary_rows
from tests.conftest import record_of

UNIT = UnitSpec("resnet20").unit_id


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory):
    """One smoke serve study for the module: (exit code, output, out folder)."""
    pytest.importorskip("mlperf_loadgen")
    from click.testing import CliRunner

    from bench.cli import cli

    out = tmp_path_factory.mktemp("serve") / "run"
    args = ["study", "serve", "--preset", "smoke", "--dataset", "digits", "--engines", "torch,ort", "--out", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output, out


def test_the_smoke_serve_study_records_a_peak_search_and_reports_it(serve_run, run_cli):
    code, output, out = serve_run
    assert code == 0, output
    (record,) = read_records(out / "timing" / "serve.jsonl")
    validate_record(record)
    assert (record["kind"], record["unit"], record["engine"], record["scenario"], record["mode"]) == \
        ("serve", UNIT, "ort", "server", "find_peak")
    assert record["dataset"]["name"] == "digits" and record["result"] in ("VALID", "INVALID")
    assert len(record["peak_search"]) == 1 and record["loadgen_dir"] is None  # the LoadGen logs are not kept
    assert not (out / "artifacts").exists()
    report = (out / "report.md").read_text()
    assert "the search**" in report and "ms bound and early stopping confirms it" in report
    assert "**Server peak**" not in report  # one net: its peak is the finding and a row of the search
    # `rbench report DIR` renders the serve records again through the study's section
    (out / "report.md").unlink()
    code, _, err = run_cli("report", out, "--partial")
    assert code == 0, err
    assert "the search**" in (out / "report.md").read_text()


def test_the_serve_study_reuses_the_depth_study_s_resnet20():
    preset = get_preset("quick")
    serve, depth = study_plan("serve", preset), study_plan("depth", preset)
    assert serve.kind is StudyKind.OWN and serve.timed
    assert [u.spec.unit_id for u in serve.units] == [UNIT]
    assert UNIT in {u.spec.unit_id for u in depth.units}
    assert STUDIES[-1] == "serve"


def test_the_presets_size_the_search():
    smoke = get_study("serve").budget_of(get_preset("smoke"))
    quick = get_study("serve").budget_of(get_preset("quick"))
    assert smoke.search_steps * smoke.search_duration_s <= 1
    assert quick.search_steps * quick.search_duration_s <= 20


@pytest.mark.parametrize("budget, words", [
    (ServeBudget(models=("resnet_nope",)), "serve model"),
    (ServeBudget(search_duration_s=0.0), "--search-duration"),
    (ServeBudget(search_steps=0), "--search-steps"),
    (ServeBudget(latency_bound_ms=-1.0), "--latency-bound-ms"),
])
def test_a_bad_budget_is_refused_before_anything_runs(budget, words):
    from dataclasses import replace

    preset = get_preset("smoke")
    preset = replace(preset, studies={**preset.studies, "serve": budget})
    with pytest.raises(UsageProblem, match=words):
        study_plan("serve", preset)


def test_the_engine_is_the_budget_s_when_the_run_measures_it():
    assert serve_engine(ServeBudget(), ("torch", "ort")) == "ort"
    assert serve_engine(ServeBudget(), ("openvino",)) == "openvino"


def test_the_shard_estimate_counts_the_search():
    from bench.studies.shard import TIMING_FIXED_SECONDS, timing_cost

    preset = get_preset("quick")
    budget = get_study("serve").budget_of(preset)
    cost = timing_cost(study_plan("serve", preset), preset)
    assert cost >= TIMING_FIXED_SECONDS + budget.search_steps * budget.search_duration_s


def _record(**fields):
    steps = [{"target_qps": 400.0, "result": "INVALID", "result_reasons": ["99th percentile latency over the bound"],
              "samples_per_s": 380.0, "latency_ms_p99": 30.0, "queries": 1000},
             {"target_qps": 200.0, "result": "VALID", "result_reasons": [], "samples_per_s": 199.0,
              "latency_ms_p99": 4.0, "queries": 1000}]
    values = {"model": "resnet20", "engine": "ort", "scenario": "server", "mode": "find_peak", "result": "VALID",
              "peak_qps": 200.0, "peak_invalid_above": 400.0, "peak_search": steps, "latency_bound_ms": 15.0,
              "workers": 1, "threads": 2, "max_batch": 8, "shortened": ["min duration 3 s < MLPerf's 600 s"],
              "loadgen_settings": {"min_duration_s": 3.0}, "study": "serve", "label": "resnet20", "unit": UNIT}
    return record_of("serve", **{**values, **fields})


def test_the_section_states_the_peak_and_the_invalid_step_above_it(tmp_path):
    text, findings = serve_section([_record(), record_of("serve", study="depth")], tmp_path, ["ort"])
    assert "| 2 | 200 | VALID | 199.0 | 4.00 | 1000 | - |" in text  # one net: its peak is a row of its search
    assert "**Server peak**" not in text
    assert "99th percentile latency over the bound" in text
    two, _ = serve_section([_record(), _record(model="resnet56", label="resnet56", unit="resnet56-relu")], tmp_path,
                           ["ort"])
    assert "**Server peak**" in two  # several nets: one table to compare their peaks
    assert "| resnet20 | ort | 200 | 400 | 199.0 | 4.00 | 15 | 2 | 1 x 2 | 8 |" in two
    (finding,) = findings
    assert "holds 200 QPS" in finding and "INVALID at 400 QPS" in finding and "not an MLPerf-valid" in finding
    (row,) = summary_rows([_record()])
    assert (row["label"], row["value"], row["invalid_above"]) == ("resnet20", 200.0, 400.0)


def test_the_section_says_when_no_step_was_valid_or_nothing_was_served(tmp_path):
    steps = [{"target_qps": 100.0, "result": "INVALID", "result_reasons": [], "samples_per_s": 90.0,
              "latency_ms_p99": 40.0, "queries": 1000}]
    _, findings = serve_section([_record(peak_qps=None, peak_search=steps)], tmp_path, ["ort"])
    assert "no step was VALID" in findings[0] and "100 QPS" in findings[0]
    missing = {**_record(peak_qps=None, peak_search=None), "error": "MLPerf LoadGen is missing"}
    text, findings = serve_section([missing], tmp_path, ["ort"])
    assert "not served here (MLPerf LoadGen is missing)" in text and "not served" in findings[0]


def test_a_unit_without_loadgen_gets_a_valid_record_that_says_why():
    from bench.studies.context import RunContext
    from bench.studies.serve import not_served_record

    ctx = RunContext(dataset="digits", preset=get_preset("smoke"), engines=("ort",))
    record = not_served_record("resnet20", "ort", ctx, {"unit": UNIT}, "LoadGen is not installed")
    validate_record(record)
    assert record["error"] == "LoadGen is not installed" and record["samples_per_s"] is None
