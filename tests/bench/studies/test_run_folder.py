"""The run folder of `rbench study`/`suite`: rbench deletes only what it wrote, distrusts unsound unit and
timing files, sweeps dead work folders, checks the device before writing, and times every invocation.

Measurement is stubbed (no training): these tests are about the folder, not the numbers.
"""

from __future__ import annotations

import json
import time

import pytest

from bench.atomic import LOCK_NAME, work_dir
from bench.errors import DataProblem, UsageProblem
from bench.studies import get_preset, runner, study_plan
from tests.conftest import record_of

SMOKE_STUDY = ("study", "activation", "--preset", "smoke", "--dataset", "digits", "--engines", "torch")


def _ctx(preset="smoke"):
    return runner.RunContext(dataset="digits", preset=get_preset(preset), engines=("torch",))


def _plans():
    return [study_plan("activation", get_preset("smoke"))]


def _unit_record(spec):
    return record_of("flops", unit=spec.unit_id, model=spec.model, params=1, macs=1, flops=2)


@pytest.fixture
def fake(monkeypatch):
    """measure_unit, time_study and the report stubbed; `fake.calls` lists the units measured,
    `fake.fail_on` a unit to interrupt (Ctrl-C), `fake.slow` a unit that takes 0.1 s."""

    class Fake:
        calls: list[str] = []
        timed: list[str] = []
        fail_on: str | None = None
        slow: str | None = None
        work_dirs: list = []

    state = Fake()
    state.calls, state.timed, state.work_dirs = [], [], []

    def measure(spec, ctx, work, on_stage=lambda s: None):
        state.calls.append(spec.unit_id)
        state.work_dirs.append((work, (work / LOCK_NAME).is_file()))
        (work / "weights.pt").write_bytes(b"weights")
        (work / "model.onnx").write_bytes(b"onnx")
        if spec.unit_id == state.slow:
            time.sleep(0.1)
        if spec.unit_id == state.fail_on:
            raise KeyboardInterrupt
        return [_unit_record(spec)]

    def time_study(plan, ctx, out, on_stage=lambda s: None):
        state.timed.append(plan.name)
        return [record_of("latency", unit=spec.unit_id, model=spec.model, engine="torch")
                for spec in runner.unique_units([plan])]

    monkeypatch.setattr(runner, "measure_unit", measure)
    monkeypatch.setattr(runner, "time_study", time_study)
    monkeypatch.setattr("bench.studies.reporting.render_report", lambda records, run, out: "# report\n")
    return state


def _finished_run(tmp_path, keep_artifacts=False):
    """A run folder as a finished run leaves it (run.json included)."""
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path, keep_artifacts=keep_artifacts)
    (tmp_path / "run.json").write_text(json.dumps({"tool": "rbench", "title": "rbench study activation"}))
    return plans


# --------------------------------------------------------------------------- 1: delete only what rbench wrote


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_folder_with_foreign_files_is_refused_and_left_alone(tmp_path, fake, resume):
    plans = _finished_run(tmp_path)
    (tmp_path / "units" / "important.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UsageProblem, match=r"rbench did not write \(units/important.txt\).*move them"):
        runner.check_run_folder(tmp_path, _ctx(), resume=resume, plans=plans)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing deleted"
    assert (tmp_path / "units" / "important.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["timing/notes.md", "artifacts/mine/data.bin", "units/notes.jsonl"])
def test_foreign_files_in_timing_and_artifacts_are_refused_too(tmp_path, fake, where):
    plans = _finished_run(tmp_path, keep_artifacts=True)
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("{}\n")
    with pytest.raises(UsageProblem, match="rbench did not write"):
        runner.check_run_folder(tmp_path, _ctx(), resume=False, plans=plans)
    assert (tmp_path / where).exists() and (tmp_path / "run.json").exists()


def test_a_fresh_start_deletes_only_rbench_files(tmp_path, fake):
    plans = _finished_run(tmp_path, keep_artifacts=True)
    assert (tmp_path / "artifacts").is_dir()
    (tmp_path / "notes.txt").write_text("mine")  # beside the subfolders: never rbench's to touch
    note = runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    assert note and "measuring again" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "settings.json"]
    assert json.loads((tmp_path / "settings.json").read_text())["tool"] == "rbench"


def test_an_older_rbench_unit_file_of_a_unit_no_plan_makes_is_ours(tmp_path, fake):
    """A unit an earlier preset made, written by an rbench whose records lack a field added since: still rbench's
    to delete on a fresh start (it refused to, after the quick preset dropped two units); a record of another unit
    under its name is not."""
    plans = _finished_run(tmp_path)
    old = {"schema": "rbench.record/1", "kind": "accuracy", "unit": "vgg11bn-old", "top1": 0.5}  # no correct_bits
    (tmp_path / "units" / "vgg11bn-old.jsonl").write_text(json.dumps(old) + "\n")
    runner.check_run_folder(tmp_path, _ctx(), resume=False, plans=plans)
    assert not (tmp_path / "units" / "vgg11bn-old.jsonl").exists()
    _finished_run(tmp_path)
    (tmp_path / "units" / "other.jsonl").write_text(json.dumps(old) + "\n")
    with pytest.raises(UsageProblem, match="rbench did not write"):
        runner.check_run_folder(tmp_path, _ctx(), resume=False, plans=plans)


def test_a_folder_that_is_not_a_run_folder_is_refused(run_cli, tmp_path, fake):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    code, _, stderr = run_cli(*SMOKE_STUDY, "--out", out)
    assert code == 2
    assert "not an rbench run folder" in stderr and "choose another --out" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["thesis.tex"], "nothing written"
    assert fake.calls == []


def test_a_settings_json_that_is_not_rbench_is_not_overwritten(tmp_path):
    (tmp_path / "settings.json").write_text('{"editor.tabSize": 4}\n')
    with pytest.raises(UsageProblem, match="settings.json is not rbench's"):
        runner.check_run_folder(tmp_path, _ctx(), resume=False)
    assert (tmp_path / "settings.json").read_text() == '{"editor.tabSize": 4}\n'


@pytest.mark.parametrize("text", ["not json", "{}", '{"title": "my notes"}'])
def test_a_run_json_that_is_not_rbench_is_no_finished_run(tmp_path, fake, text):
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path)
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(UsageProblem, match="run.json"):
        runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    assert (tmp_path / "run.json").read_text() == text
    assert all(runner.unit_path(tmp_path, spec).exists() for spec in runner.unique_units(plans))


def test_an_older_run_folder_without_the_marker_still_resumes(tmp_path, fake):
    plans = _plans()
    (tmp_path / "units").mkdir()
    spec = runner.unique_units(plans)[0]
    runner.unit_path(tmp_path, spec).write_text(json.dumps(_unit_record(spec)) + "\n")
    (tmp_path / "settings.json").write_text(json.dumps(_ctx().fingerprint()))  # no "tool" key
    assert runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans) is None
    assert runner.unit_path(tmp_path, spec).exists()
    assert json.loads((tmp_path / "settings.json").read_text())["tool"] == "rbench"


# --------------------------------------------------------------------------- 2: unsound unit and timing files


def _complete_unit_file(spec):
    return json.dumps(_unit_record(spec)) + "\n"


@pytest.mark.parametrize("content, reason", [
    ("", "empty"),
    ("\n\n", "empty"),
    ('{"schema": "rbench.record', "not JSON"),  # a cut-short write
    ("{}\n", "lacks"),
    ("[1, 2]\n", "not a record"),
    (None, "record of unit"),  # another unit's records under this unit's name
    ("TRUNCATE", "cut-short"),  # a complete record without its newline
])
def test_an_unsound_unit_file_is_measured_again(tmp_path, fake, content, reason):
    plans = _plans()
    units = runner.unique_units(plans)
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path)
    bad = units[1]
    if content is None:
        content = _complete_unit_file(units[0])
    elif content == "TRUNCATE":
        content = _complete_unit_file(bad).rstrip("\n")
    runner.unit_path(tmp_path, bad).write_text(content)
    fake.calls.clear()
    events = []
    records = runner.run_plans(plans, _ctx(), tmp_path, on_event=lambda kind, p: events.append((kind, p)))
    assert fake.calls == [bad.unit_id]
    redo = [p for kind, p in events if kind == "unit-redo"]
    assert len(redo) == 1 and redo[0]["unit"] == bad.unit_id and reason in redo[0]["reason"]
    assert f"units/{bad.unit_id}.jsonl" in redo[0]["reason"]
    assert {r["unit"] for r in records} == {u.unit_id for u in units}, "no model vanishes from the report"


@pytest.mark.parametrize("content", ["", '{"schema', "UNIT_ONLY"])
def test_an_unsound_timing_file_is_timed_again(tmp_path, fake, content):
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path)
    if content == "UNIT_ONLY":  # a timing file that lacks units of the study
        spec = runner.unique_units(plans)[0]
        content = json.dumps(record_of("latency", unit=spec.unit_id, engine="torch")) + "\n"
    runner.timing_path(tmp_path, plans[0]).write_text(content)
    fake.timed.clear()
    events = []
    records = runner.run_plans(plans, _ctx(), tmp_path, on_event=lambda kind, p: events.append(kind))
    assert "timing-redo" in events and fake.timed == ["activation"]
    assert sum(r["kind"] == "latency" for r in records) == 3


def test_collecting_an_unsound_unit_file_is_a_one_line_data_problem(tmp_path, fake):
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path)
    spec = runner.unique_units(plans)[2]
    runner.unit_path(tmp_path, spec).write_text('{"cut')
    with pytest.raises(DataProblem, match=f"{spec.unit_id}.jsonl.*not JSON") as error:
        runner.collect_records(plans, tmp_path)
    assert "\n" not in str(error.value)


def test_the_cli_says_which_unit_it_measures_again(run_cli, tmp_path, fake):
    out = tmp_path / "out"
    fake.fail_on = runner.unique_units(_plans())[2].unit_id
    code, _, _ = run_cli(*SMOKE_STUDY, "--out", out)
    assert code == 130
    bad = runner.unique_units(_plans())[0]
    runner.unit_path(out, bad).write_text("")
    fake.fail_on = None
    code, _, stderr = run_cli(*SMOKE_STUDY, "--out", out)
    assert code == 0, stderr
    assert f"{bad.unit_id}: units/{bad.unit_id}.jsonl is empty; measuring it again" in stderr


# --------------------------------------------------------------------------- 3: work folders


def test_units_are_measured_in_locked_work_folders(tmp_path, fake):
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    runner.run_plans(plans, _ctx(), tmp_path)
    assert fake.work_dirs and all(locked for _, locked in fake.work_dirs), "each scratch folder holds its lock"
    assert all(work.parent == tmp_path / "units" and not work.exists() for work, _ in fake.work_dirs)


def test_work_folders_a_killed_run_left_are_swept_and_live_ones_kept(tmp_path, fake):
    plans = _plans()
    runner.check_run_folder(tmp_path, _ctx(), resume=True, plans=plans)
    dead = []
    for sub in ("units", "artifacts"):
        folder = tmp_path / sub / f".{runner.unique_units(plans)[0].unit_id}.k1ll3d_x"
        (folder / "train").mkdir(parents=True)
        (folder / LOCK_NAME).write_text("rbench work folder of process 1\n")  # nobody holds its lock
        (folder / "weights.pt").write_bytes(b"half")
        dead.append(folder)
    unmarked = tmp_path / "units" / ".resnet20-relu.oldstyle"  # no lock file: not provably rbench's
    unmarked.mkdir()
    with work_dir(tmp_path / "units", "live-unit") as live:
        runner.run_plans(plans, _ctx(), tmp_path)
        assert live.exists(), "a folder a live process holds is left alone"
    assert not any(folder.exists() for folder in dead)
    assert unmarked.exists()


# --------------------------------------------------------------------------- 4: devices and engines up front


def _has_cuda():
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_anything_is_written(run_cli, tmp_path, fake):
    out = tmp_path / "out"
    code, _, stderr = run_cli(*SMOKE_STUDY[:-2], "--device", "cuda", "--out", out)
    assert code == 1
    assert "--device cuda" in stderr and "--device cpu" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists(), "nothing created in --out"
    assert fake.calls == []
    code, _, stderr = run_cli(*SMOKE_STUDY, "--device", "cpu", "--out", out)
    assert code == 0, stderr


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU; trt may work")
def test_trt_on_cpu_says_why(run_cli, tmp_path):
    out = tmp_path / "out"
    code, _, stderr = run_cli("suite", "--preset", "smoke", "--engines", "trt", "--device", "cpu", "--out", out)
    assert code == 2
    line = stderr.strip()
    assert "engine 'trt' does not work on cpu here: " in line
    why = line.split("here: ", 1)[1]
    assert "cuda" in why.lower() and len(why) > 10, line
    assert not out.exists()


def test_a_folder_with_nothing_measured_does_not_block_other_settings(tmp_path):
    runner.check_run_folder(tmp_path, _ctx("smoke"), resume=True)  # e.g. a first attempt that then failed
    assert runner.check_run_folder(tmp_path, _ctx("quick"), resume=True) is None
    assert json.loads((tmp_path / "settings.json").read_text())["preset"]["name"] == "quick"


# --------------------------------------------------------------------------- 5: run.json after a resume


def test_run_json_totals_every_invocation_and_times_this_one_apart(run_cli, tmp_path, fake):
    out = tmp_path / "out"
    units = [spec.unit_id for spec in runner.unique_units(_plans())]
    fake.slow, fake.fail_on = units[0], units[2]
    code, _, _ = run_cli(*SMOKE_STUDY, "--out", out)
    assert code == 130 and not (out / "run.json").exists()
    fake.slow = fake.fail_on = None
    code, _, stderr = run_cli(*SMOKE_STUDY, "--out", out)
    assert code == 0, stderr
    run = json.loads((out / "run.json").read_text())
    assert set(run["unit_seconds"]) == {*units, "timing:activation"}, "every unit, whichever invocation ran it"
    assert run["unit_seconds"][units[0]] >= 0.1
    assert run["measured_seconds"] == pytest.approx(sum(run["unit_seconds"].values()), abs=0.05)
    assert run["measured_seconds"] >= 0.1
    assert set(run["unit_seconds_this_invocation"]) == {units[2], "timing:activation"}
    assert "wall_seconds_this_invocation" in run and "measured_seconds_this_invocation" in run
    assert run["tool"] == "rbench"


@pytest.mark.parametrize("resume", [True, False])
def test_a_linked_figures_folder_is_refused_before_anything_is_written(tmp_path, fake, resume):
    """Every folder a run writes into is checked alike: figures/ as units/, timing/ and artifacts/."""
    run = tmp_path / "run"
    run.mkdir()
    _finished_run(run)
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "depth_curves.png").write_bytes(b"the user's own picture")
    (run / "figures").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageProblem, match="figures is a symbolic link"):
        runner.check_run_folder(run, _ctx(), resume=resume, plans=_plans())
    from bench.studies.run_folder import check_subfolders

    with pytest.raises(UsageProblem, match="figures is a symbolic link"):
        check_subfolders(run)  # what the report's rendering checks before it draws (`reporting.render_report`)
    assert (outside / "depth_curves.png").read_bytes() == b"the user's own picture"
    assert (run / "run.json").is_file(), "nothing of the run was deleted either"


def _read_only_folder():
    """A folder even root cannot write into (sysfs), or None where there is none."""
    import os
    from pathlib import Path

    probe = Path("/sys/rbench-write-probe")
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys")
    os.rmdir(probe)
    return None


@pytest.mark.parametrize("command", [("study", "activation"), ("suite",)])
def test_a_read_only_out_is_one_line_before_any_work(run_cli, fake, command):
    folder = _read_only_folder()
    if folder is None:
        pytest.skip("no read-only folder on this machine")
    code, _, stderr = run_cli(*command, "--preset", "smoke", "--dataset", "digits", "--engines", "torch",
                              "--out", folder / "rbench-run")
    assert code == 2, stderr
    assert "cannot be written" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert fake.calls == [], "refused before the first unit"
