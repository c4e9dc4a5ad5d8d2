"""Study plans, presets and the resumable unit runner (measurement stubbed: no training here)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import bench.data.fashion_mnist
import nets
from bench.errors import UsageProblem
from bench.records.io import read_records
from bench.studies import PRESETS, STUDIES, get_preset, measure, runner, study_plan
from bench.studies.depth import depth_plan
from bench.studies.family import FamilyBudget
from bench.studies.ladder import LadderBudget
from bench.studies.plans import ROLE_MODELS, UnitSpec, resolve_role
from tests.conftest import record_of


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("study", STUDIES)
def test_every_plan_uses_registered_models(study, preset):
    plan = study_plan(study, get_preset(preset))
    assert plan.units, "a study without units"
    registered = set(nets.list_models())
    for unit in plan.units:
        assert unit.spec.model in registered
    # An extra training seed (accuracy only) shares its net's label: the report's seed spread is keyed by it.
    labels = [u.label for u in plan.units if not (plan.timed and u.spec.accuracy_only)]
    assert len(labels) == len(set(labels)), "labels must be unique within a study (they key the tables)"
    extra = {u.label for u in plan.units if plan.timed and u.spec.accuracy_only}
    assert extra <= set(labels), "an extra seed of a net the study does not measure"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_role_resolves_to_a_registered_model(preset):
    preset = get_preset(preset)
    registered = set(nets.list_models())
    assert set(ROLE_MODELS.values()) <= registered, "a default that names no model"
    named = {*preset.models, *preset.model_kwargs, *preset.studies.get("family", FamilyBudget()).roles}
    assert named <= set(ROLE_MODELS), "a preset names a role no plan knows"
    for role in ROLE_MODELS:
        assert resolve_role(role, preset) in registered
    assert resolve_role("rrdb", preset) == "rrdb_attention_net" and resolve_role("template", preset) == "template_cnn"


def test_an_unresolvable_role_is_an_error_not_a_skip():
    quick = get_preset("quick")
    with pytest.raises(UsageProblem, match="unknown model role 'transformer'"):
        resolve_role("transformer", quick)
    renamed = dataclasses.replace(quick, models={**quick.models, "rrdb": "rrdb_net_v2"})
    with pytest.raises(UsageProblem, match="role 'rrdb' of preset 'quick' names no registered model"):
        resolve_role("rrdb", renamed)
    with pytest.raises(UsageProblem, match="role 'rrdb'"):
        study_plan("family", renamed)  # the family study used to leave such a net out without a word
    with pytest.raises(UsageProblem, match="unknown model role.*'dyvgg'"):
        study_plan("depth", dataclasses.replace(quick, models={"dyvgg": "dy_vgg11"}))  # a typo changes nothing: refused
    with pytest.raises(UsageProblem, match="unknown model role.*'keras'"):
        study_plan("family", dataclasses.replace(quick, studies={**quick.studies, "family": FamilyBudget(roles=("template", "keras"))}))


def test_quick_preset_covers_what_the_studies_promise():
    quick = get_preset("quick")
    depth = {u.spec.model for u in study_plan("depth", quick).units}
    assert depth == {"resnet20", "plain20", "resnet56", "plain56"}
    assert {u.spec.model for u in study_plan("depth", get_preset("full")).units} >= {"resnet110", "plain110"}
    dynamic = study_plan("dynamic", quick)
    ks = sorted(dict(u.spec.kwargs)["kernels"] for u in dynamic.units if u.spec.model == "dy_resnet20"
                and not u.spec.channels and not u.spec.any_chans)
    assert ks == [2, 4], "quick: the default K and half of it"
    standard_ks = sorted({dict(u.spec.kwargs)["kernels"] for u in study_plan("dynamic", get_preset("standard")).units
                          if u.spec.model == "dy_resnet20" and not u.spec.channels and not u.spec.any_chans})
    assert standard_ks == [3, 4, 5, 6]
    assert not any(u.spec.model.startswith("dy_vgg") for u in dynamic.units), "quick leaves the VGG pair out"
    assert any("leaves out the VGG-form pair" in note for note in dynamic.notes), "and says so"
    assert any(u.spec.channels for u in dynamic.units), "nets whose in_chans matches a subset"
    standard = study_plan("dynamic", get_preset("standard"))
    assert any(u.spec.model.startswith("dy_vgg") for u in standard.units)
    assert any("instead of vgg19_bn" in note for note in standard.notes), "the substitution must be said"
    assert [u.label for u in study_plan("activation", quick).units] == ["relu", "leaky_relu", "silu"]
    family = {u.group for u in study_plan("family", quick).units}
    assert {"VGG", "ResNet", "ResNet (target)", "plain template CNN", "4-layer RRDB + attention"} <= family


def test_quick_preset_runs_the_ladder_for_resnet20_and_standard_adds_resnet56():
    """The quick suite runs the precision ladder of resnet20, a net it trains anyway; standard and full add resnet56."""
    quick = get_preset("quick")
    assert "ladder" in STUDIES
    ladder = study_plan("ladder", quick)
    assert [u.label for u in ladder.units] == ["resnet20"]
    assert [u.label for u in study_plan("ladder", get_preset("standard")).units] == ["resnet20", "resnet56"]
    assert all(u.spec == UnitSpec(u.label) for u in ladder.units), "relu, native channels, the preset's training"
    depth_ids = {u.spec.unit_id for u in study_plan("depth", quick).units}
    assert {u.spec.unit_id for u in ladder.units} <= depth_ids, "the depth study's nets: no extra training"
    quick_ladder, smoke_ladder = quick.studies["ladder"], get_preset("smoke").studies["ladder"]
    assert quick_ladder.rungs is None, "every rung; those this machine lacks are listed with the reason"
    assert quick_ladder.test_limit == quick.test_size and quick_ladder.throughput_batch == quick.throughput_batch
    assert quick_ladder.iters >= 20 and quick_ladder.rounds >= 5
    assert any("1000 test images" in note for note in ladder.notes)
    assert [u.label for u in study_plan("ladder", get_preset("full")).units] == ["resnet20", "resnet56"]
    smoke = get_preset("smoke")  # what the tests run end to end: one net, a few rungs, a few runs
    assert [u.label for u in study_plan("ladder", smoke).units] == ["resnet20"]
    assert smoke_ladder.rungs and len(smoke_ladder.rungs) <= 3 and smoke_ladder.iters <= 5
    assert smoke_ladder.test_limit <= 200 and smoke_ladder.calibration <= 64


def test_a_preset_with_a_bad_ladder_model_or_rung_is_refused():
    quick = get_preset("quick")
    with pytest.raises(UsageProblem, match="ladder model of preset 'quick'"):
        study_plan("ladder", dataclasses.replace(quick, studies={**quick.studies, "ladder": LadderBudget(models=("resnet21",))}))
    with pytest.raises(UsageProblem, match="unknown rung 'ort:int4'"):
        study_plan("ladder", dataclasses.replace(quick, studies={**quick.studies, "ladder": LadderBudget(rungs=("ort:int4",))}))


def test_units_shared_between_studies_are_measured_once():
    quick = get_preset("quick")
    plans = [study_plan(s, quick) for s in STUDIES]
    units = runner.unique_units(plans)
    ids = [u.unit_id for u in units]
    assert len(ids) == len(set(ids))
    # resnet20 with ReLU on native data serves depth, activation and family.
    assert ids.count(UnitSpec("resnet20").unit_id) == 1
    assert UnitSpec("resnet20").unit_id != UnitSpec("resnet20", act="silu").unit_id
    assert UnitSpec("resnet20").unit_id != UnitSpec("resnet20", rgb=True).unit_id
    assert UnitSpec("dy_resnet20", kwargs=(("kernels", 3),)).unit_id != UnitSpec("dy_resnet20", kwargs=(("kernels", 4),)).unit_id


def test_unknown_names_are_usage_errors():
    with pytest.raises(UsageProblem, match="unknown study 'width'"):
        study_plan("width", get_preset("quick"))
    with pytest.raises(UsageProblem, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(UsageProblem, match="unknown dataset 'mnist'"):
        runner.resolve_dataset("mnist")


def test_auto_dataset_is_fashion_mnist_where_installed_else_digits(tmp_path, monkeypatch):
    monkeypatch.delenv("RBENCH_DATA", raising=False)
    # Hide the installed copy wherever the search reads its default folder from.
    monkeypatch.setattr(bench.data.fashion_mnist, "DEFAULT_FASHION_ROOT", tmp_path / "nowhere")
    name, why = runner.resolve_dataset("auto")
    assert name == "digits" and "not installed" in why
    (tmp_path / "fm").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "fm" / f"{stem}.gz").write_bytes(b"")  # found by name; nothing is read
    name, why = runner.resolve_dataset("auto", str(tmp_path / "fm"))
    assert name == "fashion-mnist" and str(tmp_path / "fm") in why


def _ctx(preset="smoke"):
    return runner.RunContext(dataset="digits", preset=get_preset(preset), engines=("torch",))


def _fake_measure(calls, fail_on=None):
    def measure(spec, ctx, work_dir, on_stage=lambda s: None):
        calls.append(spec.unit_id)
        (work_dir / "model.onnx").write_bytes(b"scratch")
        (work_dir / "weights.pt").write_bytes(b"weights")
        on_stage("train")
        if spec.unit_id == fail_on:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-unit
        return [record_of("flops", unit=spec.unit_id, model=spec.model, params=1, macs=1, flops=2)]
    return measure


def _fake_time(timed):
    """A stand-in for time_study: one latency record per timed unit of the study (a timing file must cover them all;
    an extra seed is never timed)."""
    def time_study(plan, ctx, out, on_stage=lambda s: None):
        timed.append(plan.name)
        specs = [spec for spec in runner.unique_units([plan]) if not spec.accuracy_only]
        return [record_of("latency", unit=spec.unit_id, model=spec.model, engine="torch") for spec in specs]
    return time_study


def test_run_resumes_after_an_interruption_and_keeps_no_half_unit(tmp_path, monkeypatch):
    plans = [study_plan("depth", get_preset("smoke")), study_plan("activation", get_preset("smoke"))]
    units = runner.unique_units(plans)
    calls: list[str] = []
    monkeypatch.setattr(runner, "measure_unit", _fake_measure(calls, fail_on=units[1].unit_id))
    timed = []
    monkeypatch.setattr(runner, "time_study", _fake_time(timed))
    runner.check_run_folder(tmp_path, _ctx(), resume=True)
    with pytest.raises(KeyboardInterrupt):
        runner.run_plans(plans, _ctx(), tmp_path)
    assert runner.unit_path(tmp_path, units[0]).exists()
    assert not runner.unit_path(tmp_path, units[1]).exists()
    leftovers = [p.name for p in (tmp_path / "units").iterdir() if p.suffix != ".jsonl"]
    assert leftovers == [], "the interrupted unit's scratch folder must be removed"

    calls.clear()
    monkeypatch.setattr(runner, "measure_unit", _fake_measure(calls))
    events = []
    records = runner.run_plans(plans, _ctx(), tmp_path, on_event=lambda kind, p: events.append((kind, p.get("unit"))))
    assert units[0].unit_id not in calls, "a finished unit is not measured again"
    assert timed == ["depth", "activation"], "each study is timed once, after every unit is prepared"
    assert not (tmp_path / "artifacts").exists(), "the units' weights and ONNX files are removed at the end"
    assert calls == [u.unit_id for u in units[1:]]
    assert ("unit-skip", units[0].unit_id) in events
    # resnet20 serves both studies: its record appears once per study, tagged.
    tagged = [(r["study"], r["label"]) for r in records if r["unit"] == units[0].unit_id and r["kind"] == "flops"]
    assert tagged == [("depth", "resnet20"), ("activation", "relu")]
    for spec in units:
        assert read_records(runner.unit_path(tmp_path, spec))


def test_a_run_folder_refuses_other_settings_and_no_resume_starts_over(tmp_path):
    runner.check_run_folder(tmp_path, _ctx("smoke"), resume=True)
    (tmp_path / "units").mkdir()
    unit = UnitSpec("resnet20").unit_id  # a unit file rbench names (it deletes no other)
    (tmp_path / "units" / f"{unit}.jsonl").write_text(json.dumps(record_of("flops", unit=unit)) + "\n")
    with pytest.raises(UsageProblem, match="other settings"):
        runner.check_run_folder(tmp_path, _ctx("quick"), resume=True)
    runner.check_run_folder(tmp_path, _ctx("quick"), resume=False)
    assert not (tmp_path / "units").exists()
    assert json.loads((tmp_path / "settings.json").read_text())["preset"]["name"] == "quick"


# --------------------------------------------------------------------------- the dynamic study's third way


@pytest.mark.parametrize("preset", list(PRESETS))
def test_dynamic_study_evaluates_one_channel_agnostic_pair_on_every_subset(preset):
    plan = study_plan("dynamic", get_preset(preset))
    agnostic = [u for u in plan.units if u.spec.any_chans and not u.spec.accuracy_only]  # not an extra seed
    assert sorted(u.spec.model for u in agnostic) == ["dy_resnet20", "resnet20"], "a DY net and its static twin"
    for unit in agnostic:
        assert unit.spec.eval_subsets == get_preset(preset).studies["dynamic"].channel_subsets and unit.spec.rgb
        assert 0 < unit.spec.channel_dropout < 1 and "in_chans=any" in unit.label
        assert not unit.spec.channels, "trained once, on every channel"
    ids = [u.spec.unit_id for u in plan.units]
    assert len(set(ids)) == len(ids), "the any-channel nets are units of their own"
    assert any("three ways" in note and "channel-agnostic" in note for note in plan.notes)


def test_an_any_channel_unit_builds_a_channel_agnostic_net():
    spec = next(u.spec for u in study_plan("dynamic", get_preset("smoke")).units if u.spec.any_chans)
    bundle = _ctx().bundle(channels="RGB")
    model = runner.build_unit_model(spec, bundle)
    assert model.config["in_chans"] == "any" and nets.is_channel_agnostic(model)


def test_dynamic_report_says_which_way_each_subset_row_used(tmp_path):
    from bench.studies.dynamic import dynamic_section

    data = {"name": "cifar10"}  # a colour set: on a greyscale one the subset table is a note instead

    def acc(label, unit, top1, **fields):
        return {**record_of("accuracy", study="dynamic", label=label, unit=unit, engine="torch", top1=top1,
                            dataset=data, samples=64, model=fields.pop("model", "resnet20")), **fields}

    records = [
        acc("resnet20", "r", 0.9, group="ResNet static"),
        acc("resnet20", "r", 0.5, group="ResNet static", eval_channels="R", eval_channel_mode="average"),
        acc("resnet20 in_chans=any", "ra", 0.8, group="ResNet static, any channels"),
        acc("resnet20 in_chans=any", "ra", 0.7, group="ResNet static, any channels", eval_channels="R",
            eval_channel_mode="select"),
        acc("resnet20 in_chans=1 (R)", "r1", 0.6, group="subset net", channels="R"),
    ]
    text, _ = dynamic_section(records, tmp_path, ["torch"], {"channel_subsets": ["RGB", "R"]})
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| resnet20")}
    assert "naive" in lines["resnet20"] and "50.0" in lines["resnet20"]
    assert "channel-agnostic" in lines["resnet20 in_chans=any"] and "70.0" in lines["resnet20 in_chans=any"]
    assert "retrained per subset" in lines["resnet20 in_chans=len(subset)"]
    assert "60.0" in lines["resnet20 in_chans=len(subset)"]
    assert "every subset carries the same information" not in text
    assert "**Cost and accuracy** (RGB input)" in text and "grey images" not in text  # colour data: none copied

    # On a greyscale set every subset scores as RGB does: a note says so instead of the table.
    grey = [{**r, "dataset": {"name": "digits"}} for r in records]
    text, _ = dynamic_section(grey, tmp_path, ["torch"], {"channel_subsets": ["RGB", "R"]})
    assert "every subset carries the same information" in text and "| resnet20 in_chans=len(subset)" not in text
    assert "(RGB input: the grey images copied to 3 channels)" in text


@pytest.mark.parametrize("engine", ["torch", "ort"])
def test_any_channel_unit_is_fed_each_subset_natively(engine, tmp_path):
    pytest.importorskip("onnxruntime")
    from bench.engines.sources import resolve_source

    spec = UnitSpec("resnet20", rgb=True, eval_subsets=("RGB", "RG", "B"), any_chans=True, channel_dropout=0.5)
    ctx = runner.RunContext(dataset="digits", preset=dataclasses.replace(get_preset("smoke"), input_size=8),
                            engines=(engine,))
    bundle = ctx.bundle(channels="RGB")
    model = runner.build_unit_model(spec, bundle).eval()
    source = resolve_source(model, input_shape=tuple(bundle.input_shape), name=spec.model)
    if engine == "ort":  # as measure_unit leaves it: one export, its channel axis symbolic, serves every subset
        import export

        path = tmp_path / "model.onnx"
        export.to_onnx(model, path, source.input_shape, exporter="torchscript", opset=17)
        source.exported[("fp32", None)] = path
    records = measure._accuracy_on_native_subsets(source, spec, ctx, bundle, engine, {"unit": spec.unit_id},
                                                 lambda stage: None)
    assert [r["eval_channels"] for r in records] == ["RGB", "RG", "B"]
    assert [r["input_shape"][0] for r in records] == [3, 2, 1], "each subset reaches the net as its kept planes"
    assert {r["eval_channel_mode"] for r in records} == {"select"}
    # digits is grey: every plane is the same, so the channel-agnostic net scores the same on every subset.
    assert len({r["top1"] for r in records}) == 1


# --------------------------------------------------------------------------- extra training seeds of the timed studies


def _extra_seeds(plan):
    return sorted((u.label, u.spec.seed) for u in plan.units if plan.timed and u.spec.accuracy_only)


@pytest.mark.parametrize("preset", ["smoke", "quick"])
def test_small_presets_train_a_second_seed_of_the_twenty_layer_pair_only(preset):
    plans = {name: study_plan(name, get_preset(preset)) for name in STUDIES}
    assert _extra_seeds(plans["depth"]) == [("plain20", 1), ("resnet20", 1)]
    for name in ("dynamic", "activation", "family", "ladder"):
        assert _extra_seeds(plans[name]) == [], f"{name}: one training run at {preset}"
    for unit in plans["depth"].units:
        if unit.spec.accuracy_only:
            twin = next(u for u in runner.timed_units(plans["depth"]) if u.label == unit.label)
            assert unit.spec == dataclasses.replace(twin.spec, seed=1, accuracy_only=True), "the same net, another seed"
            assert unit.group == twin.group
    assert [u.label for u in runner.timed_units(plans["depth"])] == [u.label for u in depth_plan(get_preset(preset)).units]


@pytest.mark.parametrize("preset, seeds", [("standard", [1]), ("full", [1, 2])])
def test_larger_presets_train_extra_seeds_of_every_timed_net(preset, seeds):
    for name in ("depth", "dynamic", "activation", "family"):
        plan = study_plan(name, get_preset(preset))
        timed = runner.timed_units(plan)
        assert _extra_seeds(plan) == sorted((u.label, s) for u in timed for s in seeds)
        assert all(not u.spec.eval_subsets for u in plan.units if u.spec.accuracy_only), "top-1 only"
    for name in ("ladder", "recipe", "optimizer"):  # the ladder times the depth nets; the recipe studies have seeds
        plan = study_plan(name, get_preset(preset))
        assert not any(u.spec.accuracy_only and u.spec.seed and plan.timed for u in plan.units)


@pytest.mark.parametrize("preset, cap", [("standard", 10), ("full", None)])
def test_the_activation_study_runs_resnet50_where_the_seed_report_did(preset, cap):
    """The seed report compared the activations on ResNet-50 (CIFAR stem): standard and full train it, every
    activation and every seed on the same batches per epoch, and the plan says the cap."""
    plan = study_plan("activation", get_preset(preset))
    assert {(u.spec.model, dict(u.spec.kwargs).get("small_input"), u.spec.max_batches) for u in plan.units} == \
        {("resnet50", True, cap)}
    assert sorted({u.spec.act for u in plan.units}) == ["leaky_relu", "relu", "silu"]
    assert any(f"at most {cap} batches" in note for note in plan.notes) == (cap is not None)
    assert not any("seed report compared" in note for note in plan.notes)
    quick = study_plan("activation", get_preset("quick"))
    assert {u.spec.model for u in quick.units} == {"resnet20"} and any("ResNet-50" in n for n in quick.notes)


def test_an_accuracy_seed_entry_that_names_no_unit_is_refused():
    for entries in (("depth:resnet21",), ("width:resnet20",), ("resnet20",)):
        preset = dataclasses.replace(get_preset("smoke"), accuracy_seed_units=entries)
        with pytest.raises(UsageProblem, match="accuracy_seed_units"):
            study_plan("depth", preset)


@pytest.mark.parametrize("study", ["ladder", "serve"])
def test_a_budget_naming_a_model_the_zoo_lacks_is_refused_before_training(study):
    from bench.studies.ladder import LadderBudget
    from bench.studies.serve import ServeBudget

    smoke = get_preset("smoke")
    budget = {"ladder": LadderBudget, "serve": ServeBudget}[study](models=("resnet_nope",))
    preset = dataclasses.replace(smoke, studies={**smoke.studies, study: budget})
    with pytest.raises(UsageProblem, match=f"{study} model of preset 'smoke' is no registered model"):
        study_plan(study, preset)
