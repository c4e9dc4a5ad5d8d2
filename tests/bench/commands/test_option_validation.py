"""Numeric options are checked in one place (bench.commands._options) before any work: finite, in range, within
the machine. Bad values are one line and exit 2; nothing is measured, trained or written."""

from __future__ import annotations

import click
import pytest

from bench.commands._options import Number, Threads, usable_cores


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default runs/, results/ folders never land in the checkout


def _refused(code: int, err: str, tmp_path, *words: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
    return lines[0]


@pytest.mark.parametrize("args", [
    ("--duration", "nan"), ("--duration", "inf"), ("--duration", "-1"), ("--warmup-s", "inf"),
    ("--warmup-s", "nan"), ("--iters", "0"), ("--rounds", "0"), ("--warmup", "-1"),
])
def test_latency_refuses_numbers_that_never_end_or_make_no_sense(run_cli, tmp_path, args):
    code, _, err = run_cli("latency", "resnet20", *args)
    _refused(code, err, tmp_path, args[0])


@pytest.mark.parametrize("command", [
    ("latency", "resnet20"), ("throughput", "resnet20"), ("compare", "resnet20", "plain20"),
    ("ladder", "resnet20", "--checkpoint", "best.pt"), ("train", "resnet20"), ("dynamic",),
    ("accuracy", "resnet20", "--checkpoint", "best.pt"),
])
def test_more_threads_than_usable_cores_is_refused_naming_the_cores(run_cli, tmp_path, command):
    too_many = usable_cores() + 1
    code, _, err = run_cli(*command, "--threads", str(too_many))
    line = _refused(code, err, tmp_path, "--threads", str(too_many))
    assert f"{usable_cores()} usable core" in line


@pytest.mark.parametrize("command", [
    ("compare", "resnet20", "--threshold", "nan"), ("device", "--budget-s", "inf"),
    ("train", "resnet20", "--lr", "nan"), ("export", "resnet20", "--min-agreement", "nan"),
    ("export", "resnet20", "--workspace-gib", "inf"), ("ladder", "resnet20", "--checkpoint", "x", "--threshold", "nan"),
])
def test_every_command_refuses_nan_and_inf(run_cli, tmp_path, command):
    code, _, err = run_cli(*command)
    _refused(code, err, tmp_path, "not a finite number")


def test_number_type_bounds():
    positive = Number(0, min_open=True)
    assert positive.convert("2.5", None, None) == 2.5 and positive.convert(3, None, None) == 3.0
    for bad in ("0", "-1", "nan", "inf", "-inf", "abc"):
        with pytest.raises(click.BadParameter):
            positive.convert(bad, None, None)
    share = Number(0, 1, min_open=True)
    assert share.convert("1", None, None) == 1.0
    with pytest.raises(click.BadParameter, match="> 0 and <= 1"):
        share.convert("1.5", None, None)


def test_threads_within_the_usable_cores_pass():
    assert Threads().convert(str(usable_cores()), None, None) == usable_cores()
    with pytest.raises(click.BadParameter):
        Threads().convert("0", None, None)


def test_a_bare_rbench_prints_its_help_not_an_error_line(run_cli):
    code, out, err = run_cli()
    assert code in (0, 2)
    text = out + err
    assert "rbench: error" not in text
    assert text.lstrip().startswith("Usage: rbench") and "\nCommands:\n" in text and len(text.splitlines()) > 10


def test_a_model_name_in_the_wrong_case_gets_a_near_match(run_cli, tmp_path):
    code, _, err = run_cli("flops", "RESNET20", "--out", tmp_path / "results")
    assert code == 2 and "did you mean resnet20" in err and len(err.strip().splitlines()) == 1


def test_a_negative_calibration_count_is_called_a_count(run_cli, tmp_path):
    code, _, err = run_cli("ladder", "resnet20", "--checkpoint", "best.pt", "--calibration", "digits:-5")
    line = _refused(code, err, tmp_path, "at least 1 image", "-5")
    assert "unknown" not in line


def test_ladder_rungs_that_name_no_rung_are_refused(run_cli, tmp_path):
    for spec in ("", " , "):
        code, _, err = run_cli("ladder", "resnet20", "--checkpoint", "best.pt", "--rungs", spec)
        _refused(code, err, tmp_path, "--rungs names no rung")


def test_train_into_a_folder_it_cannot_write_fails_before_loading_data(run_cli, tmp_path, monkeypatch):
    import bench.commands.measure as measure_commands
    import bench.data

    def no_loading(*args, **kwargs):
        raise AssertionError("the data set was loaded")

    monkeypatch.setattr(bench.data, "load_dataset", no_loading)
    monkeypatch.setattr(measure_commands.os, "access", lambda path, mode: False)  # tests may run as root
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--out", tmp_path / "run")
    assert code == 1 and "not writable" in err and "--out" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", [{"duration_s": float("nan")}, {"duration_s": float("inf")},
                                   {"warmup_s": float("inf")}, {"warmup_s": float("nan")}])
def test_library_settings_refuse_what_never_ends(field):
    from bench.errors import UsageProblem
    from bench.measure.settings import Settings

    with pytest.raises(UsageProblem, match="finite"):
        Settings(**field).validate()
