"""The training-recipe studies: the recipe ladder (`recipe`) and the optimizer sweeps (`optimizer`).

Plans as data (seeds, unique and stable unit ids, what each preset reduces), a diverging unit recorded as
failed while the study goes on, and the report's seed-noise verdicts against hand-made records.
"""

from __future__ import annotations

import pytest

from bench.errors import UsageProblem
from bench.studies import PRESETS, get_preset, study_plan
from bench.studies.base import StudyKind
from bench.studies.optimizer import SWEEPS
from bench.studies.plans import StudyPlan, StudyUnit, UnitSpec, _kw
from bench.studies.recipe import RECIPE_RUNGS


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("study", ["recipe", "optimizer"])
def test_every_configuration_runs_with_at_least_two_seeds(study, preset):
    plan = study_plan(study, get_preset(preset))
    assert not plan.timed and all(u.spec.accuracy_only for u in plan.units)
    ids = [u.spec.unit_id for u in plan.units]
    assert len(set(ids)) == len(ids), "unit ids name files: they must be unique"
    assert len({u.label for u in plan.units}) == len(plan.units)
    seeds: dict[str, set[int]] = {}
    for unit in plan.units:
        seeds.setdefault(unit.group, set()).add(unit.spec.seed)
    assert all(len(s) >= (3 if preset == "full" else 2) for s in seeds.values()), seeds


def test_recipe_rungs_each_add_one_thing_to_the_previous():
    plan = study_plan("recipe", get_preset("standard"))
    rungs = [u for u in plan.units if u.spec.seed == 0]
    assert [u.group for u in rungs] == [f"{i + 1}. {r[0]}" for i, r in enumerate(RECIPE_RUNGS)]
    train = [dict(u.spec.train) for u in rungs]
    kwargs = [dict(u.spec.kwargs) for u in rungs]
    assert train[0]["augment"] == () and train[0]["restore_best"] is False and train[0]["schedule"] == "constant"
    assert train[1]["augment"] == ("rotate:15", "translate:0.1", "flip", "scale:0.1")
    assert kwargs[2] == {"extra_blocks": 1} and train[2]["early_stop"] == 4 and train[2]["restore_best"] is True
    assert (train[3]["schedule"], train[3]["gamma"], train[3]["plateau_patience"]) == ("plateau", 0.2, 2)
    assert kwargs[4] == {"extra_blocks": 2, "drop_rate": 0.5}
    for before, after in zip(train, train[1:]):  # nothing of a rung is dropped by the next one
        assert set(before) <= set(after)


def test_unit_ids_are_stable():
    """Unit ids name the files of run folders: a change here breaks resuming, so it must be deliberate."""
    assert UnitSpec("resnet20").unit_id == "resnet20-relu"
    spec = UnitSpec("vgg11_bn", kwargs=_kw(small_input=True), train=_kw(optimizer="sgd", lr=8e-4, augment=("flip",),
                                                                         schedule="constant", epochs=8),
                    seed=1, accuracy_only=True, max_batches=28)
    assert spec.unit_id == "vgg11bn-relu-smallinputTrue-mb28-augflip-ep8-lr0p0008-sgd-constant-acc-seed1"
    with pytest.raises(UsageProblem, match="unknown training override"):
        UnitSpec("resnet20", train=_kw(learning_rate=0.1))


def test_the_quick_preset_is_tiny_and_says_what_it_reduced():
    quick = get_preset("quick")
    for study in ("recipe", "optimizer"):
        plan = study_plan(study, quick)
        assert len(plan.units) <= 6
        assert all(u.spec.max_batches and u.spec.max_batches <= 3 for u in plan.units)
        assert any(n.startswith("Reduced at this preset") for n in plan.notes)
    standard = get_preset("standard")
    assert set(standard.studies["optimizer"].sweeps) == set(SWEEPS)
    assert standard.studies["recipe"].rungs == len(RECIPE_RUNGS)
    for study in ("recipe", "optimizer"):
        assert not any(n.startswith("Reduced") for n in study_plan(study, standard).notes)


def test_the_optimizer_study_tests_vgg_without_bn_under_adam():
    """The seed report's VGG-19 without BN, at standard as at full."""
    plan = study_plan("optimizer", get_preset("standard"))
    nobn = [u for u in plan.units if u.group.startswith("sweep_vgg_nobn|")]
    assert nobn and {u.spec.model for u in nobn} == {"vgg19"} and {dict(u.spec.train)["optimizer"] for u in nobn} == {"adam"}
    full = study_plan("optimizer", get_preset("full"))
    assert {u.spec.model for u in full.units} == {"vgg19_bn", "vgg19", "resnet50"}


def test_a_diverging_unit_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    from bench.studies import recipe
    from bench.studies.runner import DIVERGED, RunContext, run_plans

    good = UnitSpec("resnet20", train=_kw(optimizer="adam", epochs=1), max_batches=2, accuracy_only=True, seed=0)
    bad = UnitSpec("resnet20", train=_kw(optimizer="sgd", lr=1e12, epochs=1), max_batches=2, accuracy_only=True, seed=0)
    plan = StudyPlan("recipe", "t", "q", (StudyUnit("1. good (seed 0)", good, "1. good"),
                                          StudyUnit("2. diverges (seed 0)", bad, "2. diverges")), kind=StudyKind.ACCURACY)
    ctx = RunContext(dataset="digits", preset=get_preset("smoke"), engines=("torch",))
    records = run_plans([plan], ctx, tmp_path)
    by_unit = {}
    for r in records:
        by_unit.setdefault(r["unit"], []).append(r["kind"])
    assert by_unit == {good.unit_id: ["train", "accuracy"], bad.unit_id: ["train"]}
    failed = next(r for r in records if r["unit"] == bad.unit_id)
    assert "diverged" in failed["train_config"][DIVERGED] and failed["checkpoint"] is None
    assert not (tmp_path / "timing").exists(), "an accuracy study times nothing"
    text, findings = recipe.recipe_section(records, tmp_path, ["torch"])
    assert "diverged (1 of 1 seeds)" in text and "| failed |" in text


# --------------------------------------------------------------------------- the report, from hand-made records


def _records(study: str, group: str, model: str, top1s: list[float | None], config: dict, samples: int = 1000):
    out = []
    for seed, top1 in enumerate(top1s):
        unit = f"{group}-{seed}"
        train_config = {**config, "seed": seed}
        if top1 is None:
            train_config["diverged"] = "training diverged: loss is nan"
        out.append({"kind": "train", "study": study, "group": group, "label": f"{group} (seed {seed})", "unit": unit,
                    "model": model, "train_config": train_config, "dataset": {"num_classes": 10}, "epochs": 2,
                    "history": [{"epoch": 1, "train_acc": 0.5, "val_acc": 0.5}], "stopped_early": False})
        if top1 is not None:
            out.append({"kind": "accuracy", "study": study, "group": group, "label": f"{group} (seed {seed})",
                        "unit": unit, "model": model, "top1": top1, "samples": samples})
    return out


def test_a_difference_inside_the_seed_spread_is_within_seed_noise(tmp_path):
    from bench.report import seeds
    from bench.studies import recipe
    base = {"optimizer": "adam", "lr": 1e-3, "augment": []}
    records = (_records("recipe", "1. baseline", "keras_resnet", [0.80, 0.84], base)
               + _records("recipe", "2. + augmentation", "keras_resnet", [0.82, 0.83], base)
               + _records("recipe", "3. + deeper", "keras_resnet", [0.90, 0.91], base))
    groups = seeds.seed_groups(records, "recipe")
    assert [g["n"] for g in groups] == [2, 2, 2] and groups[0]["spread"] == pytest.approx(0.04)
    assert seeds.seed_difference(groups[0], groups[1])[1].endswith("not decided at this budget")
    assert seeds.seed_difference(groups[1], groups[2])[1].endswith(", better")
    text, findings = recipe.recipe_section(records, tmp_path, ["torch"])
    assert "72.3%" in text and "CIFAR-10, from the seed report, not comparable across data sets" in text
    # The table gives every rung; a finding, only what its interval decides.
    assert "not decided at this budget" in text and len(findings) == 1
    assert findings[0].startswith("3. + deeper") and ", better" in findings[0]


@pytest.mark.parametrize("nobn, bn, verdict", [
    ([0.10, 0.11], [0.85, 0.86], "reproduces here for the net without BatchNorm only"),
    ([0.80, 0.82], [0.85, 0.86], "does not reproduce here"),
    ([None, 0.10], [0.10, 0.11], "cannot be told here"),
])
def test_the_report_says_whether_the_vgg_failure_reproduces(tmp_path, nobn, bn, verdict):
    from bench.report import seeds
    from bench.studies import optimizer
    sgd = {"optimizer": "sgd", "lr": 1e-3, "augment": ["flip", "rotate90"]}
    adam = {**sgd, "optimizer": "adam"}
    records = (_records("optimizer", "sweep_vgg|vgg11_bn sgd", "vgg11_bn", [0.85, 0.86], sgd)
               + _records("optimizer", "sweep_vgg|vgg11_bn adam", "vgg11_bn", bn, adam)
               + _records("optimizer", "sweep_vgg_nobn|vgg11 adam", "vgg11", nobn, adam))
    text, findings = optimizer.optimizer_section(records, tmp_path, ["torch"])
    # The VGG-without-BatchNorm verdict is a finding, said once (the report lists it under the study's question).
    assert sum(verdict in f for f in findings) == 1 and verdict not in text and "failed to train (about 1%)" in text
    assert seeds.chance_level(seeds.seed_groups(records, "optimizer")[0]) == pytest.approx(0.1 + 3 * 0.3 / 1000 ** 0.5)
