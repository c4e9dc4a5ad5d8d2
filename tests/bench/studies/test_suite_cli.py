"""`rbench suite --preset smoke` end to end on scikit-learn digits (offline), resume, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.records.io import read_records, validate_record
from bench.studies import STUDIES

#: The report's length: the committed quick report is about 150 lines, and the smoke suite's has its shape.
REPORT_MAX_LINES = 170
#: Whole smoke suites end to end (a minute or more each): `nox -s slow`, which CI runs too.
pytestmark = pytest.mark.slow


#: What `bench.report.figures.label_problems` found in each figure the module's smoke suite saved, by file name.
LABEL_PROBLEMS: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke suite for the module: (exit code, stdout, stderr, out folder); every figure it saves is checked
    for clipped and overlapping labels on the way (LABEL_PROBLEMS)."""
    from click.testing import CliRunner

    from bench.cli import cli
    from bench.report import figures, plots

    save = plots.save_figure

    def checking_save(fig, path):
        LABEL_PROBLEMS[str(getattr(path, "name", path))] = figures.label_problems(fig)
        return save(fig, path)

    out = tmp_path_factory.mktemp("suite") / "smoke"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save_figure", checking_save)
        patch.setattr(figures, "save_figure", checking_save)
        result = CliRunner().invoke(cli, ["suite", "--preset", "smoke", "--dataset", "digits", "--engines",
                                          "torch,ort", "--out", str(out)], catch_exceptions=False)
    return result.exit_code, result.output, out


def test_smoke_suite_writes_a_report_and_valid_records(smoke_run):
    code, output, out = smoke_run
    assert code == 0, output
    report = (out / "report.md").read_text()
    records = read_records(out / "records.jsonl")
    assert records
    for record in records:
        validate_record(record)
    assert {r["study"] for r in records} == set(STUDIES)
    kinds = {r["kind"] for r in records}
    assert {"train", "flops", "export", "latency", "throughput", "accuracy"} <= kinds
    assert {r["engine"] for r in records if r["kind"] == "latency"} == {"torch", "ort"}
    assert all(r["parity_passed"] for r in records if r["kind"] == "export")
    assert all(r["dataset"]["name"] == "digits" for r in records if r["kind"] in ("train", "accuracy"))
    for study in ("Summary", "Method", "Depth", "Dynamic", "Activation", "Families", "Precision ladder",
                  "Training recipe", "Learning rate x optimizer x augmentation"):
        assert f"## {study}" in report
    # The training-recipe studies: accuracy only (torch), every configuration with two seeds, nothing timed.
    recipe = [r for r in records if r["study"] in ("recipe", "optimizer")]
    assert {r["kind"] for r in recipe} == {"train", "accuracy"}
    assert {r["train_config"]["seed"] for r in recipe if r["kind"] == "train"} == {0, 1}
    # Each recipe study gives its table with the seed report's figures, or says in one line that nothing trained.
    for title, reference in (("## Training recipe", "72.3%"), ("## Learning rate x optimizer", "86.0%")):
        section = report.split(title, 1)[1].split("\n## ", 1)[0]
        assert "No configuration trained at this budget" in section or (
            reference in section and "CIFAR-10, from the seed report, not comparable across data sets" in section)
    ladder = [r for r in records if r["study"] == "ladder" and r.get("rung")]
    assert {r["rung"] for r in ladder if r["kind"] == "accuracy"} == {"torch fp32", "ort fp32", "ort int8"}
    assert (out / "figures" / "ladder_resnet20.png").is_file()
    assert "digits (asked for)" in report
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "smoke" and run["measured_seconds"] > 0
    assert not (out / "artifacts").exists(), "scratch checkpoints and ONNX files are removed by default"


def test_the_smoke_report_has_the_shape_of_the_committed_one(smoke_run):
    """The report CI builds is shaped as the committed quick one: it opens with the summary table (beside the
    latency-vs-FLOPs figure), says each finding once, stays short, and carries the figures with intervals and the
    activation study's per-class table."""
    code, output, out = smoke_run
    assert code == 0, output
    report = (out / "report.md").read_text()
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Summary", "## Method"], headings
    summary = report.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert summary.startswith("\n| study | question | answer | figure [95% CI] | status |")
    assert "![latency vs FLOPs](figures/latency_vs_flops.png)" in summary
    said = [line for line in report.splitlines() if line.strip() and not line.startswith("|---")]
    assert len(said) == len(set(said)), [line for line in said if said.count(line) > 1]
    assert len(report.splitlines()) <= REPORT_MAX_LINES, len(report.splitlines())
    activation = report.split("## Activation", 1)[1].split("\n## ", 1)[0]
    assert "precision / recall / F1" in activation and "| activation |" in activation
    assert re.search(r"\| relu \|( \d\.\d\d / \d\.\d\d / \d\.\d\d \|)+", activation)
    for name in ("latency_vs_flops", "depth_accuracy", "depth_curves", "ladder_resnet20", "activation_curves"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    # Every figure of the report, drawn from these records, with its labels readable.
    assert {f"{Path(link).name}" for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)} <= set(LABEL_PROBLEMS)
    assert not {name: p for name, p in LABEL_PROBLEMS.items() if p}


def test_the_smoke_suite_trains_a_second_seed_and_reports_its_spread(smoke_run):
    code, output, out = smoke_run
    assert code == 0, output
    records = read_records(out / "records.jsonl")
    extra = [r for r in records if r["study"] == "depth" and r.get("accuracy_only")]
    assert {(r["label"], r["kind"]) for r in extra} == {(label, kind) for label in ("resnet20", "plain20")
                                                        for kind in ("train", "accuracy")}
    assert {r["engine"] for r in extra if r["kind"] == "accuracy"} == {"torch"}, "scored by torch only"
    assert {r["train_config"]["seed"] for r in extra if r["kind"] == "train"} == {1}
    units = {r["unit"] for r in extra}
    assert not [r for r in records if r["unit"] in units and r["kind"] in ("flops", "export", "latency", "throughput")]
    report = (out / "report.md").read_text()
    # The 20-layer pair's top-1 is the mean and min-max over its two seeds; the gap's interval carries both seeds.
    row = next(line for line in report.splitlines() if line.startswith("| resnet20 | residual |"))
    assert re.search(r"\| \d+\.\d% \(\d+\.\d%-\d+\.\d%\) \|", row), row
    finding = next(line for line in report.splitlines() if line.startswith("- At 20 layers the shortcuts"))
    assert " pp [" in finding and any(v in finding for v in (", better", ", worse", "not decided at this budget"))


def test_an_interrupted_suite_resumes_and_measures_only_what_is_missing(smoke_run, run_cli):
    code, _, out = smoke_run
    assert code == 0
    from bench.studies import get_preset, study_plan
    from bench.studies.runner import unique_units, unit_path

    units = unique_units([study_plan(s, get_preset("smoke")) for s in STUDIES])
    # What an interruption leaves: no run.json (written last) and the unit in progress missing.
    (out / "run.json").unlink()
    missing = units[-1]
    unit_path(out, missing).unlink()
    kept = {spec.unit_id: unit_path(out, spec).read_text() for spec in units[:-1]}
    code, stdout, stderr = run_cli("suite", "--preset", "smoke", "--dataset", "digits", "--engines", "torch,ort",
                                   "--out", out)
    assert code == 0, stderr
    assert stderr.count("already measured, skipped") == len(units) - 1
    assert f"{missing.unit_id}: done" in stderr
    assert {spec.unit_id: unit_path(out, spec).read_text() for spec in units[:-1]} == kept
    assert (out / "run.json").exists() and read_records(unit_path(out, missing))


def test_a_finished_run_folder_is_measured_again(tmp_path):
    from bench.studies import get_preset
    from bench.studies.runner import RunContext, check_run_folder

    ctx = RunContext(dataset="digits", preset=get_preset("smoke"), engines=("torch",), device="cpu",
                     data_root=None, command="rbench suite")
    from bench.studies.plans import UnitSpec
    from tests.conftest import record_of

    assert check_run_folder(tmp_path, ctx, resume=True) is None
    (tmp_path / "units").mkdir()
    unit = UnitSpec("resnet20").unit_id  # rbench deletes only files it wrote: a unit file of its own
    (tmp_path / "units" / f"{unit}.jsonl").write_text(json.dumps(record_of("flops", unit=unit)) + "\n")
    assert check_run_folder(tmp_path, ctx, resume=True) is None, "an interrupted run resumes"
    assert (tmp_path / "units" / f"{unit}.jsonl").exists()
    (tmp_path / "run.json").write_text(json.dumps({"tool": "rbench", "title": "rbench suite"}))
    note = check_run_folder(tmp_path, ctx, resume=True)
    assert note and "measuring again" in note
    assert not (tmp_path / "units").exists() and not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("args, message", [
    (("study", "width", "--preset", "smoke"), "unknown study 'width'"),
    (("study", "depth", "--preset", "huge"), "unknown preset 'huge'"),
    (("suite", "--preset", "huge"), "unknown preset 'huge'"),
    (("suite", "--preset", "smoke", "--dataset", "mnist"), "unknown dataset 'mnist'"),
    (("suite", "--preset", "smoke", "--engines", "tensorflow"), "unknown engine 'tensorflow'"),
    (("suite", "--preset", "smoke", "--engines", "trt"), "engine 'trt'"),
])
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(*args, "--out", out)
    if "--engines" in args and "trt" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU; trt may work")
    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists(), "a bad input must leave no partial records"


def test_one_study_runs_alone_into_its_own_folder(run_cli, tmp_path):
    out = tmp_path / "study"
    code, stdout, stderr = run_cli("study", "activation", "--preset", "smoke", "--dataset", "digits",
                                   "--engines", "ort", "--out", out)
    assert code == 0, stderr
    report = (out / "report.md").read_text()
    assert "## Activation" in report and "## Depth" not in report
    records = read_records(out / "records.jsonl")
    assert {r["study"] for r in records} == {"activation"}
    assert {r["label"] for r in records} == {"relu", "leaky_relu", "silu"}
    assert {r["engine"] for r in records if r["kind"] == "latency"} == {"ort"}


def test_suite_records_and_cli_records_carry_the_same_keys(smoke_run, run_cli, tmp_path, monkeypatch):
    """The suite and the CLI build each kind with one builder: the same keys, less the study's own context."""
    from bench.records.builders import STUDY_FIELDS
    from bench.records.io import REQUIRED_FIELDS

    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))
    code, output, out = smoke_run
    assert code == 0, output
    cli_out = tmp_path / "cli"
    fast = ("--warmup", "1", "--iters", "2", "--threads", "1", "--input-size", "16", "--in-chans", "1", "--out", cli_out)
    for args in (("latency", "resnet20", "--engine", "torch,ort", *fast), ("throughput", "resnet20", "--batch", "1,2", *fast),
                 ("flops", "resnet20", "--input-size", "16", "--out", cli_out),
                 ("export", "resnet20", "--input-size", "16", "--out", tmp_path / "exports", "--results", cli_out)):
        got, _, err = run_cli(*args)
        assert got == 0, err
    ignore = set(REQUIRED_FIELDS) | {"rbench_version"} | set(STUDY_FIELDS)
    suite = {}
    for record in read_records(out / "records.jsonl"):
        suite.setdefault(record["kind"], set(record) - ignore)
    for kind in ("latency", "throughput", "flops", "export"):
        (cli_record, *_) = read_records(cli_out / f"{kind}.jsonl")
        assert set(cli_record) - ignore == suite[kind], kind


def test_the_smoke_suite_in_two_shards_merges_into_the_unsharded_run(smoke_run, run_cli, tmp_path):
    """Two shards as two processes (two hosts of a job array), merged: the same units, studies, findings and
    accuracy as the one unsharded run (training is seeded, so each net's top-1 is the same wherever it ran)."""
    import subprocess
    import sys

    code, output, whole = smoke_run
    assert code == 0, output
    shards = [tmp_path / f"shard-{i}" for i in (1, 2)]
    jobs = [subprocess.Popen([sys.executable, "-m", "bench", "suite", "--preset", "smoke", "--dataset", "digits",
                              "--engines", "torch,ort", "--shard", f"{i}/2", "--out", str(folder)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, folder in enumerate(shards, 1)]
    for job in jobs:
        _, stderr = job.communicate(timeout=900)
        assert job.returncode == 0, stderr[-2000:]
    studies = [[s["name"] for s in json.loads((folder / "run.json").read_text())["studies"]] for folder in shards]
    assert sorted(studies[0] + studies[1]) == sorted(STUDIES) and all(studies)
    merged = tmp_path / "merged"
    code, _, stderr = run_cli("report", *shards, "--out", merged)
    assert code == 0, stderr

    def top1(records):
        return {(r["study"], r["unit"], r["engine"], r.get("rung"), r.get("eval_channels")): r["top1"]
                for r in records if r["kind"] == "accuracy"}

    ours, theirs = read_records(merged / "records.jsonl"), read_records(whole / "records.jsonl")
    assert {r["unit"] for r in ours} == {r["unit"] for r in theirs}
    assert {(r["study"], r["kind"]) for r in ours} == {(r["study"], r["kind"]) for r in theirs}
    ours_top1, theirs_top1 = top1(ours), top1(theirs)
    assert ours_top1.keys() == theirs_top1.keys()
    for key, value in ours_top1.items():
        # int8 rungs are calibrated anew in each process; a borderline image can flip (seen: 1 of 100). fp32 is exact.
        assert value == pytest.approx(theirs_top1[key], abs=0.03 if "int8" in str(key[3]) else 0), key

    def findings(path):  # each finding line's subject (its first words): which comparisons the report makes
        text = path.read_text().split("## Method", 1)[1]
        subjects = [" ".join(line.split(":")[0].split()[:3]) for line in text.splitlines()
                    if line.startswith(("- ", "  - "))]
        # How many lines one subject gets follows the timing verdicts (a ladder says "slower" and "no measurable
        # difference" only when some rung is), and the shards were timed side by side on shared cores: compare
        # the subjects in order, each run of one subject counted once.
        return [s for i, s in enumerate(subjects) if i == 0 or s != subjects[i - 1]]

    assert findings(merged / "report.md") == findings(whole / "report.md")


def test_smoke_dynamic_study_says_where_the_extra_latency_goes(smoke_run):
    """The dynamic study splits its dynamic ResNet's latency into attention, aggregation and conv."""
    code, output, out = smoke_run
    assert code == 0, output
    splits = [r for r in read_records(out / "records.jsonl") if r["kind"] == "cost_split"]
    assert [(r["study"], r["group"], r["engine"], r["batch"]) for r in splits] == [("dynamic", "ResNet dynamic", "torch", 1)]
    assert splits[0]["layers"] and set(splits[0]["total_ms"]) >= {"attention", "aggregation", "conv", "static_conv"}
    assert "**Where the time goes**" in (out / "report.md").read_text()
