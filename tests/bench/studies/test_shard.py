"""`rbench suite --shard I/N` and `rbench report DIR...`: the split, its balance, and the merge's refusals.

The end-to-end check (shards run as separate processes, merged, against one unsharded run) is in
test_suite_cli.py, beside the unsharded smoke run it compares with.
"""

from __future__ import annotations

import json

import pytest

from bench.errors import DataProblem, UsageProblem
from bench.studies import STUDIES, get_preset, study_plan
from bench.studies.plans import StudyPlan, StudyUnit, UnitSpec
from bench.studies.runner import unique_units
from bench.studies.shard import Shard, assign_studies, merge_runs, parse_shard, read_costs, shard_plans
from tests.conftest import record_of


@pytest.mark.parametrize("text, shard", [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 3 / 3 ", Shard(3, 3))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["3/2", "0/2", "2/0", "1", "a/b", "-1/2", "1/2/3", ""])
def test_a_bad_shard_spec_is_a_usage_problem(text):
    with pytest.raises(UsageProblem, match="--shard"):
        parse_shard(text)


def _id(model):
    return UnitSpec(model).unit_id


def _plan(name, *units):
    return StudyPlan(name, name, "?", tuple(StudyUnit(u, UnitSpec(u)) for u in units))


@pytest.mark.parametrize("preset", ["smoke", "quick", "full"])
@pytest.mark.parametrize("count", [1, 2, 3, len(STUDIES)])
def test_the_shards_hold_every_study_once_and_every_unit(preset, count):
    p = get_preset(preset)
    plans = [study_plan(name, p) for name in STUDIES]
    shards = assign_studies(plans, count, p)
    assert len(shards) == count and all(shards), "every shard gets work when N <= studies"
    names = [plan.name for shard in shards for plan in shard]
    assert sorted(names) == sorted(STUDIES)
    for shard in shards:  # the suite's own order inside a shard
        assert [plan.name for plan in shard] == [n for n in STUDIES if n in {plan.name for plan in shard}]
    assert {s.unit_id for shard in shards for s in unique_units(shard)} == {s.unit_id for s in unique_units(plans)}
    assert shards == assign_studies(plans, count, p), "the same split on every call (every host)"
    assert [shard_plans(plans, Shard(i + 1, count), p) for i in range(count)] == shards


def test_a_study_goes_where_its_units_already_are_when_that_is_cheaper():
    plans = [_plan("a", "x", "y"), _plan("b", "x"), _plan("c", "z")]
    costs = {_id("x"): 10, _id("y"): 5, _id("z"): 12, "timing:a": 0, "timing:b": 0, "timing:c": 0}  # b: free on a's shard
    shards = assign_studies(plans, 2, get_preset("smoke"), costs)
    assert [[p.name for p in s] for s in shards] == [["a", "b"], ["c"]]


def test_the_split_balances_measured_costs():
    plans = [_plan("a", "p"), _plan("b", "q"), _plan("c", "r"), _plan("d", "s")]
    costs = {_id("p"): 8, _id("q"): 7, _id("r"): 5, _id("s"): 4, **{f"timing:{n}": 0 for n in "abcd"}}
    loads = [sum(costs[u.spec.unit_id] for p in s for u in p.units)
             for s in assign_studies(plans, 2, get_preset("smoke"), costs)]
    assert sorted(loads) == [12, 12]


def test_more_shards_than_studies_is_refused():
    p = get_preset("smoke")
    with pytest.raises(UsageProblem, match=f"N <= {len(STUDIES)}"):
        assign_studies([study_plan(n, p) for n in STUDIES], len(STUDIES) + 1, p)


def test_read_costs(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(json.dumps({"unit_seconds": {"resnet20-relu": 20.9, "timing:depth": 16.7}}))
    assert read_costs(good) == {"resnet20-relu": 20.9, "timing:depth": 16.7}
    for text in ("{", json.dumps({"unit_seconds": {"a": "slow"}}), json.dumps([1])):
        good.write_text(text)
        with pytest.raises(UsageProblem, match="--shard-costs"):
            read_costs(good)


# --------------------------------------------------------------------------- the merge, on hand-made run folders

SETTINGS = {"preset": "smoke", "preset_settings": {"name": "smoke"}, "dataset": "digits", "engines": ["torch"],
            "device": "cpu"}
MACHINE = {"cpu": "Test CPU", "cores_usable": 2, "gpu": None}


def _run_folder(path, studies, machine=MACHINE, **settings):
    """A finished run folder holding `studies` ({name: [unit ids]}), with one accuracy and one latency record each."""
    path.mkdir(parents=True)
    run = {"tool": "rbench", "title": "rbench suite", **SETTINGS, **settings, "command": f"rbench suite ({path.name})",
           "measured_seconds": 10, "machine": machine,
           "studies": [{"name": n, "title": n, "question": "?", "units": [], "notes": []} for n in studies]}
    (path / "run.json").write_text(json.dumps(run))
    (path / "settings.json").write_text(json.dumps({"tool": "rbench", "seed": 0}))
    lines = []
    for name, units in studies.items():
        for unit in units:
            for kind in ("accuracy", "latency"):
                record = record_of(kind, unit=unit, engine="torch")
                record.update(study=name, machine=machine)
                lines.append(json.dumps(record))
    (path / "records.jsonl").write_text("\n".join(lines) + "\n")
    return path


def _suite(tmp_path, machine2=MACHINE):
    smoke = get_preset("smoke")
    plans = {n: [u.spec.unit_id for u in study_plan(n, smoke).units] for n in STUDIES}
    one = _run_folder(tmp_path / "one", {n: plans[n] for n in STUDIES[:2]})
    two = _run_folder(tmp_path / "two", {n: plans[n] for n in STUDIES[2:]}, machine=machine2)
    return one, two, plans


def test_merge_pools_the_studies_and_says_where_each_was_timed(tmp_path):
    other = {**MACHINE, "cpu": "Other CPU"}
    one, two, plans = _suite(tmp_path, machine2=other)
    merged = merge_runs([one, two])
    assert not merged.missing_studies and not merged.missing_units
    assert {r["study"] for r in merged.records} == set(STUDIES)
    assert [s["name"] for s in merged.run["studies"]] == list(STUDIES)
    assert merged.run["timed_on"] == {n: ("test-cpu-2c" if n in STUDIES[:2] else "other-cpu-2c") for n in STUDIES}
    from bench.studies.shard import merge_note

    note = merge_note(merged.run)
    assert "Merged from 2 run folders" in note and "on other-cpu-2c" in note and "on test-cpu-2c" in note


@pytest.mark.parametrize("setting, value", [("preset", "quick"), ("dataset", "fashion-mnist"), ("engines", ["ort"]),
                                            ("device", "cuda")])
def test_merge_refuses_runs_of_different_settings(tmp_path, setting, value):
    one = _run_folder(tmp_path / "one", {"depth": ["resnet20-relu"]})
    two = _run_folder(tmp_path / "two", {"dynamic": ["x"]}, **{setting: value})
    with pytest.raises(UsageProblem, match=f"different {setting}"):
        merge_runs([one, two], allow_missing=True)


def test_merge_names_the_missing_studies_and_units(tmp_path):
    one, _, plans = _suite(tmp_path)
    with pytest.raises(UsageProblem) as info:
        merge_runs([one])
    message = str(info.value)
    assert "activation, family, ladder" in message and "resnet20-leakyrelu" in message and "--partial" in message
    merged = merge_runs([one], allow_missing=True)
    assert merged.missing_studies == list(STUDIES[2:])
    assert "resnet20-leakyrelu" in merged.missing_units and "resnet20-relu" not in merged.missing_units


def test_merge_refuses_a_study_in_two_folders_and_a_folder_that_is_no_run(tmp_path):
    one, _, plans = _suite(tmp_path)
    again = _run_folder(tmp_path / "again", {"depth": plans["depth"]})
    with pytest.raises(UsageProblem, match="study depth is in both"):
        merge_runs([one, again], allow_missing=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageProblem, match="no finished run"):
        merge_runs([one, tmp_path / "empty"])
    with pytest.raises(UsageProblem, match="not a folder"):
        merge_runs([tmp_path / "nowhere"])


def test_merge_refuses_a_study_timed_on_two_machines(tmp_path):
    folder = _run_folder(tmp_path / "one", {"depth": ["resnet20-relu", "plain20-relu"]})
    lines = folder.joinpath("records.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["machine"] = {**MACHINE, "cpu": "Another CPU"}
    folder.joinpath("records.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    with pytest.raises(DataProblem, match="2 machines"):
        merge_runs([folder], allow_missing=True)


def test_report_cli_writes_the_merge_and_refuses_bad_outs(run_cli, tmp_path):
    one, two, _ = _suite(tmp_path)
    out = tmp_path / "merged"
    code, stdout, stderr = run_cli("report", one, two, "--out", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out / "report.md")
    assert "Merged from 2 run folders" in (out / "report.md").read_text()
    assert json.loads((out / "run.json").read_text())["merged_from"] == [str(one.resolve()), str(two.resolve())]
    assert run_cli("report", one, two, "--out", out)[0] == 0, "a merge folder can be written again"
    for args, message in [((one, two), "--out DIR"), ((one, two, "--out", one), "one of the folders"),
                          ((one,), "--partial"), ((one, two, "--out", tmp_path / "one" / "records.jsonl"), "is a file")]:
        code, stdout, stderr = run_cli("report", *args)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, stderr = run_cli("report", one, two, "--out", foreign)
    assert code == 2 and "not empty" in stderr and (foreign / "notes.txt").read_text() == "mine"
    code, _, stderr = run_cli("report", one, "--partial")
    assert code == 0 and "missing studies activation, family, ladder" in stderr


@pytest.mark.parametrize("args, message", [
    (("--shard", "3/2"), "--shard 3/2"),
    (("--shard", "0/2"), "--shard 0/2"),
    (("--shard", f"{len(STUDIES) + 1}/{len(STUDIES) + 1}"), f"N <= {len(STUDIES)}"),
    (("--shard-costs", "run.json"), "with --shard"),
])
def test_bad_shard_options_are_one_line_and_write_nothing(run_cli, tmp_path, args, message):
    out = tmp_path / "out"
    code, _, stderr = run_cli("suite", "--preset", "smoke", "--dataset", "digits", "--engines", "torch", *args,
                              "--out", out)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()


def test_a_quick_suite_run_is_whole_without_the_studies_its_preset_leaves_out(tmp_path):
    """`rbench report DIR` on a finished quick suite: recipe and optimizer are not in quick's suite, so they are not
    missing; a study quick's suite does run still is."""
    from bench.studies.presets import suite_studies

    quick = get_preset("quick")
    names = suite_studies("quick", STUDIES)
    assert "recipe" in STUDIES and "recipe" not in names
    folder = _run_folder(tmp_path / "run", {n: [u.spec.unit_id for u in study_plan(n, quick).units] for n in names},
                         preset="quick")
    merged = merge_runs([folder])
    assert not merged.missing_studies and [s["name"] for s in merged.run["studies"]] == names
    partial = _run_folder(tmp_path / "partial", {n: [] for n in names if n != "depth"}, preset="quick")
    with pytest.raises(UsageProblem, match=r"the depth study\(ies\)"):
        merge_runs([partial])
