"""The ladder study: `bench.scenarios.ladder.run_ladder` on each net the suite trained, in its timing phase.

End to end at the smoke preset on scikit-learn digits (one net, three rungs, a few seconds), then
the run folder's rules with measurement stubbed: the training checkpoint is kept for the ladder,
a ladder's work folder is rbench's own, a finished ladder is skipped on resume.
"""

from __future__ import annotations

import json

import pytest

from bench.atomic import LOCK_NAME
from bench.errors import DataProblem
from bench.records.io import read_records, validate_record
from bench.studies import get_preset, runner, study_plan, timing
from bench.studies.plans import UnitSpec, timed_units
from tests.conftest import record_of

LADDER_STUDY = ("study", "ladder", "--preset", "smoke", "--dataset", "digits", "--engines", "torch")
UNIT = UnitSpec("resnet20").unit_id


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory):
    """One smoke ladder study for the module: (exit code, output, out folder)."""
    from click.testing import CliRunner

    from bench.cli import cli

    out = tmp_path_factory.mktemp("ladder") / "run"
    result = CliRunner().invoke(cli, [*LADDER_STUDY, "--out", str(out)], catch_exceptions=False)
    return result.exit_code, result.output, out


def _timing(out):
    return read_records(out / "timing" / "ladder.jsonl")


def test_the_smoke_ladder_study_records_every_rung_and_reports_it(ladder_run):
    code, output, out = ladder_run
    assert code == 0, output
    timed = _timing(out)
    for record in timed:
        validate_record(record)
        assert record["study"] == "ladder" and record["unit"] == UNIT and record["preset"] == "smoke"
    assert {r["kind"] for r in timed} == {"latency", "comparison", "accuracy"}
    rungs = {r["rung"] for r in timed if r["kind"] == "accuracy"}
    assert rungs == {"torch fp32", "ort fp32", "ort int8"}, "torch fp32 (the reference) and the preset's rungs"
    smoke = get_preset("smoke").studies["ladder"]
    assert {r["batch"] for r in timed if r["kind"] == "latency"} == {1, smoke.throughput_batch}
    # Batch 1 gets the budget's iters; the throughput batch its own (fewer: each run there costs a batch).
    assert {r["batch"]: r["iters"] for r in timed if r["kind"] == "latency"} == \
        {1: smoke.iters, smoke.throughput_batch: smoke.throughput_iters}
    assert all(r["samples"] == smoke.test_limit for r in timed if r["kind"] == "accuracy")
    (carrier,) = [r for r in timed if r.get("ladder")]
    assert (carrier["kind"], carrier["rung"], carrier["batch"]) == ("latency", "torch fp32", 1)
    rows = carrier["ladder"]["rows"]
    assert [(r["engine"], r["precision"]) for r in rows] == [("torch", "fp32"), ("ort", "fp32"), ("ort", "int8")]
    assert all("file" not in r for r in rows), "the rows name no file of the removed work folder"
    assert carrier["ladder"]["int8"]["check"]["images"] == smoke.test_limit

    records = read_records(out / "records.jsonl")
    assert {r["study"] for r in records} == {"ladder"}
    report = (out / "report.md").read_text()
    assert "## Precision ladder" in report
    # One table of every rung, the net's cells side by side (the full per-rung table is `rbench ladder`'s).
    assert "| engine | precision | resnet20 p50 ms | resnet20 speedup vs torch fp32 |" in report
    assert f"sees the same {smoke.test_limit} test images" in report and "torch fp32 scores resnet20 " in report
    assert f"images/s at batch {smoke.throughput_batch} ({smoke.throughput_iters} timed runs)" in report
    assert "Int8 files: minmax calibration on" in report
    assert (out / "figures" / "ladder_resnet20.png").is_file()
    assert "![resnet20 precision ladder](figures/ladder_resnet20.png)" in report
    assert not (out / "artifacts").exists(), "the checkpoint, ONNX and int8 files are removed at the end"


def test_the_ladder_starts_from_the_units_training_checkpoint(ladder_run):
    code, output, out = ladder_run
    assert code == 0, output
    (train,) = [r for r in read_records(out / "units" / f"{UNIT}.jsonl") if r["kind"] == "train"]
    accuracy = [r for r in _timing(out) if r["kind"] == "accuracy"]
    assert {r["checkpoint"] for r in accuracy} == {f"artifacts/{UNIT}/checkpoint.pt"}
    assert {r["checkpoint_epoch"] for r in accuracy} == {train["best_epoch"]}, "the best-validation checkpoint"
    assert {r["model_config"]["name"] for r in accuracy} == {"resnet20"}
    assert {r["dataset"]["name"] for r in accuracy} == {"digits"}


def test_a_resumed_run_skips_a_finished_ladder_and_times_an_unsound_one_again(ladder_run, run_cli):
    code, output, out = ladder_run
    assert code == 0, output
    timing = out / "timing" / "ladder.jsonl"
    before = timing.read_text()
    (out / "run.json").unlink()  # as an interruption after the timing phase leaves it
    code, _, stderr = run_cli(*LADDER_STUDY, "--out", out)
    assert code == 0, stderr
    assert "ladder: already timed, skipped" in stderr and f"{UNIT}: already measured, skipped" in stderr
    assert timing.read_text() == before

    (out / "run.json").unlink()
    timing.write_text(before[: len(before) // 2])  # cut short
    code, _, stderr = run_cli(*LADDER_STUDY, "--out", out)
    assert code == 0, stderr
    assert "timing it again" in stderr
    # Its checkpoint went with the artifacts of the finished run: the unit is prepared again for the ladder.
    assert f"{UNIT}: done" in stderr
    assert read_records(timing) and "## Precision ladder" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- the run folder, measurement stubbed


def _ctx():
    return runner.RunContext(dataset="digits", preset=get_preset("smoke"), engines=("torch",))


@pytest.fixture
def fake(monkeypatch):
    """measure_unit leaves weights, ONNX file and checkpoint; time_study returns a latency record per unit."""
    calls: list[str] = []

    def measure(spec, ctx, work, on_stage=lambda s: None):
        calls.append(spec.unit_id)
        for name in (runner.WEIGHTS, runner.ONNX, runner.CHECKPOINT):
            (work / name).write_bytes(b"scratch")
        return [record_of("flops", unit=spec.unit_id, model=spec.model, params=1, macs=1, flops=2)]

    def time_study(plan, ctx, out, on_stage=lambda s: None):
        # As the real one: the units the timing phase measures, never a study's extra (accuracy-only) seeds.
        return [record_of("latency", unit=unit.spec.unit_id, model=unit.spec.model, engine="torch")
                for unit in timed_units(plan)]

    monkeypatch.setattr(runner, "measure_unit", measure)
    monkeypatch.setattr(runner, "time_study", time_study)
    return calls


def test_only_a_ladder_unit_keeps_its_checkpoint_and_a_missing_one_is_prepared_again(tmp_path, fake):
    smoke = get_preset("smoke")
    plans = [study_plan("depth", smoke), study_plan("ladder", smoke)]
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path, keep_artifacts=True)
    assert (tmp_path / "artifacts" / UNIT / runner.CHECKPOINT).is_file()
    assert not (tmp_path / "artifacts" / UnitSpec("plain20").unit_id / runner.CHECKPOINT).exists()
    assert runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans) is None, "all of it is rbench's"

    # The ladder still to time, its unit's checkpoint gone: that unit alone is prepared again.
    (tmp_path / "timing" / "ladder.jsonl").unlink()
    (tmp_path / "artifacts" / UNIT / runner.CHECKPOINT).unlink()
    fake.clear()
    runner.run_plans(plans, _ctx(), tmp_path)
    assert fake == [UNIT]
    assert read_records(tmp_path / "timing" / "ladder.jsonl")


def test_a_ladder_work_folder_is_rbench_s_own_and_a_dead_one_is_swept(tmp_path, fake):
    plans = [study_plan("ladder", get_preset("smoke"))]
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    dead = tmp_path / "artifacts" / f".ladder-{UNIT}.k1ll3d_x"
    dead.mkdir(parents=True)
    (dead / LOCK_NAME).write_text("rbench work folder of process 1\n")  # nobody holds its lock
    (dead / "resnet20-int8.onnx").write_bytes(b"half")
    assert runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans) is None
    runner.run_plans(plans, _ctx(), tmp_path)
    assert not dead.exists()


def test_a_ladder_without_its_checkpoint_is_a_one_line_data_problem(tmp_path):
    plan = study_plan("ladder", get_preset("smoke"))
    (tmp_path / "artifacts" / UNIT).mkdir(parents=True)
    with pytest.raises(DataProblem, match="checkpoint.pt is missing.*run the same command again"):
        runner.time_study(plan, _ctx(), tmp_path)


def test_the_ladder_payload_is_strict_json(tmp_path):
    """NaN anywhere in the rows (a degenerate interval) must not make the timing file unwritable."""
    from types import SimpleNamespace

    latency = record_of("latency", model="resnet20", engine="torch", precision="fp32", batch=1)
    result = SimpleNamespace(records=[latency], int8=None,
                             rows=[{"engine": "torch", "precision": "fp32", "runs": True, "speedup_ci": [float("nan"), 1.0],
                                    "file": "/gone/resnet20.onnx"}])
    from bench.measure.run import Settings

    plan = study_plan("ladder", get_preset("smoke"))
    (record,) = timing._ladder_records(result, plan, UnitSpec("resnet20"), _ctx(), "artifacts/x/checkpoint.pt", Settings())
    validate_record(record)
    json.dumps(record, allow_nan=False)
    assert record["ladder"]["rows"][0]["speedup_ci"] == [None, 1.0] and "file" not in record["ladder"]["rows"][0]
    assert record["rung"] == "torch fp32" and record["unit"] == UnitSpec("resnet20").unit_id
