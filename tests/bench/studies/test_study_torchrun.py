"""The studies under torchrun (`bench.studies.data_parallel`), gloo and 2 processes on the CPU: the run folder a
single process writes, trained by both, one report; resume; and a bad input said once, not once per rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import UsageProblem
from bench.records.io import read_records
from bench.studies import get_preset, study_plan
from bench.studies.runner import unique_units
from bench.train import distributed
from tests.bench.train.test_distributed import REPO, _env, _rbench, free_port

STUDY = ("study", "depth", "--preset", "smoke", "--dataset", "digits", "--engines", "torch")


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_process_study_writes_the_one_process_folder_and_resumes(run_cli, tmp_path):
    code, _, err = run_cli(*STUDY, "--out", tmp_path / "one")
    assert code == 0, err
    two = _rbench(*STUDY, "--out", tmp_path / "two", "--nproc", "2", timeout=300)
    assert two.returncode == 0, two.stderr
    assert two.stdout.splitlines() == [str(tmp_path / "two" / "report.md")]  # rank 0 alone reports
    # The smoke depth study: resnet20 and plain20, each with its extra (accuracy-only) seed.
    units = {spec.unit_id for spec in unique_units([study_plan("depth", get_preset("smoke"))])}
    assert {"resnet20-relu", "plain20-relu"} < units
    assert two.stderr.count("done in") == len(units) + 1
    assert f"training {len(units)} unit(s) with 2 processes (gloo)" in two.stderr
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    records = read_records(tmp_path / "two" / "records.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert {r["unit"] for r in train} == units
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" and r["batch_per_process"] == 32 for r in train)
    assert all("--nproc 2" in r["command"] for r in records)
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["unit_seconds"]["resnet20-relu"] > 0

    # An interrupted run: run.json (written last) and one unit missing. Only that unit is trained again.
    (tmp_path / "two" / "run.json").unlink()
    (tmp_path / "two" / "units" / "plain20-relu.jsonl").unlink()
    kept = (tmp_path / "two" / "units" / "resnet20-relu.jsonl").read_text()
    again = _rbench(*STUDY, "--out", tmp_path / "two", "--nproc", "2", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "training 1 unit(s)" in again.stderr and "plain20-relu: trained" in again.stderr
    assert "resnet20-relu: already measured, skipped" in again.stderr
    assert (tmp_path / "two" / "units" / "resnet20-relu.jsonl").read_text() == kept
    (redone,) = [r for r in read_records(tmp_path / "two" / "units" / "plain20-relu.jsonl") if r["kind"] == "train"]
    assert redone["world_size"] == 2
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_a_usage_error_under_torchrun_is_printed_by_rank_0_alone(tmp_path):
    """Every rank is given the same command line and refuses it alike: one line, and each rank's error file."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "study", "depth", "--preset", "huge", "--out",
                               str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                                  TORCHELASTIC_ERROR_FILE=str(tmp_path / f"error{rank}.json")))
             for rank in range(2)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [2, 2]
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error: unknown preset 'huge'"), err0
    assert err1 == "" and out1 == ""
    for rank in range(2):  # what torchrun's summary (and `--nproc`'s launcher) reads
        message = json.loads((tmp_path / f"error{rank}.json").read_text())["message"]
        assert "unknown preset 'huge'" in message["message"] and message["extraInfo"]["rbench_exit_code"] == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_refusal_inside_the_ranks_is_printed_once_under_nproc(tmp_path):
    """A run folder holding someone else's file: rank 0 refuses it for every rank; the launcher says it once."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = _rbench(*STUDY, "--out", out, "--nproc", "2", timeout=180)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("rbench: error: --out") and "not an rbench run folder" in lines[0]
    assert _files(out) == ["notes.txt"]


@pytest.mark.parametrize("env, exc, printed", [
    ({}, UsageProblem("x"), True),                                          # one process
    ({"RANK": "0", "WORLD_SIZE": "2"}, UsageProblem("x"), True),           # rank 0 speaks for the run
    ({"RANK": "1", "WORLD_SIZE": "2"}, UsageProblem("x"), False),          # the same command line: said by rank 0
    ({"RANK": "1", "WORLD_SIZE": "2"}, distributed.DistributedFailure("x"), True),  # its own failure
    ({"RANK": "1", "WORLD_SIZE": "2"}, distributed._this_rank(UsageProblem("x")), True),  # its own GPU
    ({"RANK": "1", "WORLD_SIZE": "2"}, distributed._every_rank(distributed.DistributedFailure("x")), False),
    ({"RANK": "0", "WORLD_SIZE": "2", distributed.LAUNCHED_ENV: "1"}, UsageProblem("x"), False),  # the launcher does
])
def test_who_prints_an_error(monkeypatch, env, exc, printed):
    for name in ("RANK", "WORLD_SIZE", distributed.LAUNCHED_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.prints_error(exc, getattr(exc, "exit_code", 2)) is printed


def test_a_process_count_the_batch_does_not_split_over_is_refused_before_launching(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "available_cores", lambda: 3)
    code, _, err = run_cli(*STUDY, "--out", tmp_path / "out", "--nproc", "3")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "does not split evenly over 3 processes" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_a_data_set_missing_on_every_rank_is_said_once(tmp_path):
    """`rbench train` under torchrun: every rank loads its data; a failure there is agreed on and said by rank 0."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "train", "resnet20", "--dataset", "fashion-mnist",
                               "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "-q"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, RBENCH_DIST_TIMEOUT="60"))
             for rank in range(2)]
    (_, err0), (_, err1) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [1, 1], (err0, err1)
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error: Fashion-MNIST not found"), err0
    assert err1 == ""
    assert not (tmp_path / "run").exists()


def _agreeing_rank(rank: int, port: int, out: str) -> None:
    import os

    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RBENCH_DIST_TIMEOUT="60")
    seen = {}

    def only_rank_1_fails():
        if rank == 1:
            raise UsageProblem("no data here")
        return "loaded"

    def refuse():
        raise UsageProblem("bad run folder")

    with distributed.session("cpu"):
        for name, call in [("together", lambda: distributed.together(only_rank_1_fails)),
                           ("decided", lambda: distributed.decided_by_main(lambda: rank * 10 + 7)),
                           ("refused", lambda: distributed.decided_by_main(refuse))]:  # rank 0 alone calls it
            try:
                seen[name] = call()
            except UsageProblem as exc:
                seen[name] = [str(exc), getattr(exc, "every_rank", False)]
        seen["finite"] = distributed.all_finite(torch.tensor(float("nan") if rank else 1.0))
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))


def test_ranks_agree_on_a_check_and_on_a_non_finite_loss(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_agreeing_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # Rank 1 alone failed: both raise its line, which rank 0 prints and rank 1 keeps to itself.
    assert rank0["together"] == ["rank 1 of 2: no data here", False]
    assert rank1["together"] == ["rank 1 of 2: no data here", True]
    assert rank0["decided"] == rank1["decided"] == 7  # rank 0's answer, everywhere
    assert rank0["refused"] == ["bad run folder", False] and rank1["refused"] == ["bad run folder", True]
    assert rank0["finite"] is False and rank1["finite"] is False  # both stop, neither waits for the other


def test_units_trained_beforehand_are_measured_as_if_trained_in_place(tmp_path):
    """The hand-over from the training phase to `run_plans` (one process here): the same records as a plain run,
    a unit that diverged included; per-unit seeds kept; nothing of the training phase left in the folder."""
    import contextlib

    from bench.studies import get_preset
    from bench.studies.data_parallel import train_units
    from bench.studies.plans import StudyKind, StudyPlan, StudyUnit, UnitSpec
    from bench.studies.runner import DIVERGED, RunContext, check_run_folder, pending_units, run_plans

    units = (StudyUnit("seed 1", UnitSpec("resnet20", seed=1, accuracy_only=True, max_batches=2)),
             StudyUnit("keep last", UnitSpec("resnet20", seed=0, accuracy_only=True, max_batches=2,
                                             train=(("restore_best", False),))),
             StudyUnit("diverges", UnitSpec("resnet20", seed=0, accuracy_only=True, max_batches=2,
                                            train=(("lr", 1e12), ("optimizer", "sgd")))))
    plans = [StudyPlan("optimizer", "t", "q", units, kind=StudyKind.ACCURACY)]

    def run(folder: Path, beforehand: bool):
        ctx = RunContext(dataset="digits", preset=get_preset("smoke"), engines=("torch",), command="test")
        check_run_folder(folder, ctx, resume=True, plans=plans)
        with contextlib.ExitStack() as stack:
            if beforehand:
                train_units(pending_units(plans, folder), ctx, folder, stack)
                assert set(ctx.trained) == {u.spec.unit_id for u in units}
            records = run_plans(plans, ctx, folder)
            assert not ctx.trained  # every one handed over
        return records

    def comparable(records):  # less the clock: seconds, img/s
        return [{k: r.get(k) for k in ("unit", "kind", "best_val_acc", "top1", "confusion_matrix", "train_config")}
                | {"history": [{k: v for k, v in h.items() if k not in ("seconds", "img_s")}
                               for h in r.get("history") or []]} for r in records]

    plain, handed = run(tmp_path / "plain", False), run(tmp_path / "handed", True)
    assert comparable(handed) == comparable(plain)
    diverged = [r for r in handed if r["kind"] == "train" and r["train_config"].get(DIVERGED)]
    assert [r["unit"] for r in diverged] == [units[2].spec.unit_id]
    assert {r["train_config"]["seed"] for r in handed if r["kind"] == "train"} == {0, 1}
    assert _files(tmp_path / "handed") == _files(tmp_path / "plain")
