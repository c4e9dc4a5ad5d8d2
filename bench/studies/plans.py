"""What each study trains and measures, as data: a study is a list of units, a unit is one model.

A unit is one model trained, exported and measured once; units that several studies share
(ResNet-20 with ReLU appears in three) are measured once and reused, because a unit's id is
a function of everything that makes it (model, activation, builder kwargs, input channels, and for the
training-recipe studies its training overrides and seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bench.errors import UsageProblem
from bench.studies.presets import Preset

#: The TrainConfig fields a unit may override (`UnitSpec.train`), and the prefix each has in a unit id.
TRAIN_OVERRIDES: dict[str, str] = {
    "optimizer": "", "lr": "lr", "augment": "aug", "schedule": "", "gamma": "factor", "plateau_patience": "pat",
    "early_stop": "es", "restore_best": "best", "epochs": "ep", "weight_decay": "wd",
}


@dataclass(frozen=True)
class UnitSpec:
    """One model to train, export and measure."""

    model: str
    act: str = "relu"
    kwargs: tuple[tuple[str, object], ...] = ()  # extra builder kwargs, sorted (hashable)
    channels: str | None = None  # train/test on this channel subset of RGB data ('RG', 'R', ...)
    rgb: bool = False  # feed 3-channel (RGB) data; greyscale data is replicated to 3 channels
    eval_subsets: tuple[str, ...] = ()  # also test the net on these channel subsets (naive way; native with any_chans)
    max_batches: int | None = None  # cap on training batches per epoch (the expensive nets of a preset)
    any_chans: bool = False  # build with in_chans="any" (channel-agnostic stem): subsets are fed natively
    channel_dropout: float = 0.0  # training drops each input channel with this probability (any_chans nets)
    train: tuple[tuple[str, object], ...] = ()  # TrainConfig overrides of the preset's training, sorted (`_kw`)
    seed: int | None = None  # the unit's own seed (weights, shuffling, augmentation); None: the run's
    accuracy_only: bool = False  # train and test through torch only: no FLOPs, export, other engines or timing
    test_size: int | None = None  # test images an accuracy_only unit is scored on (None: the preset's test_size)

    def __post_init__(self) -> None:
        unknown = sorted({k for k, _ in self.train} - set(TRAIN_OVERRIDES))
        if unknown:  # a plan's typo would silently change nothing
            raise UsageProblem(f"unit {self.model}: unknown training override(s) {', '.join(unknown)}; "
                               f"overridable: {', '.join(TRAIN_OVERRIDES)}")

    @property
    def unit_id(self) -> str:
        """A file-name-safe id that changes whenever anything that makes the unit changes.

        A unit without training overrides, seed or `accuracy_only` keeps the id it always had."""
        parts = [self.model, self.act]
        parts += [f"{k}{v}" for k, v in self.kwargs]
        if self.max_batches:
            parts.append(f"mb{self.max_batches}")
        if self.any_chans:
            parts.append("anych" + (f"cd{self.channel_dropout:g}" if self.channel_dropout else ""))
        if self.channels:
            parts.append(f"ch{self.channels}")
        elif self.rgb:
            parts.append("rgb")
        for key, value in self.train:
            if isinstance(value, (tuple, list)):
                value = "+".join(map(str, value)) or "none"
            parts.append(f"{TRAIN_OVERRIDES[key]}{value:g}" if isinstance(value, float)
                         else f"{TRAIN_OVERRIDES[key]}{value}")
        if self.accuracy_only:
            parts.append("acc")
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        return "-".join(str(p).replace("_", "").replace(".", "p").replace(":", "") for p in parts)

    def train_overrides(self) -> dict[str, object]:
        return dict(self.train)

    def builder_kwargs(self) -> dict[str, object]:
        return dict(self.kwargs)


@dataclass(frozen=True)
class StudyUnit:
    """A unit as one study sees it: the unit and the label the study's tables give it."""

    label: str
    spec: UnitSpec
    group: str = ""  # a study-specific grouping (e.g. 'residual'/'plain', 'K ablation')


@dataclass(frozen=True)
class StudyPlan:
    """One study: its question, its units, and notes the report must carry."""

    name: str
    title: str
    question: str
    units: tuple[StudyUnit, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    timed: bool = True  # False: an accuracy study (its units `accuracy_only`), no latency/throughput phase


STUDIES = ("depth", "dynamic", "activation", "family", "ladder", "recipe", "optimizer")

#: How the dynamic study reaches a channel subset: the way each of its subset figures used.
SUBSET_WAYS = {
    "naive": "naive: the RGB net, the kept channels averaged and copied to 3",
    "channel-agnostic": "channel-agnostic: one in_chans='any' net, trained once, fed the kept channels natively",
    "retrained": "retrained per subset: a net built for and trained on the kept channels",
}
#: Channel dropout of the dynamic study's channel-agnostic nets: half the channels dropped per sample (at least
#: one kept), so every subset size occurs in training.
AGNOSTIC_CHANNEL_DROPOUT = 0.5

#: The model that plays each role of a study, unless the preset names another (`Preset.models`).
#: Every name is a registered model (tests check it); the defaults are what `--preset full` runs.
ROLE_MODELS: dict[str, str] = {
    "vgg": "vgg19_bn",  # the VGG form of the dynamic and family studies
    "dy_vgg": "dy_vgg19",  # its dynamic-convolution twin
    "resnet_deep": "resnet34",  # the family study's target net
    "template": "template_cnn",  # the coursework's plain template CNN
    "rrdb": "rrdb_attention_net",  # the 4-layer RRDB + self-attention net
    "keras_resnet": "keras_resnet",  # the Keras-style CIFAR bottleneck ResNet
    "sweep_vgg": "vgg19_bn",  # the optimizer study's VGG-BN (the 004 seed's VGG19-BN)
    "sweep_vgg_nobn": "vgg19",  # ... and the same VGG without BatchNorm (the vanishing-gradient test)
    "sweep_resnet": "resnet50",  # the optimizer study's ResNet (the 004 seed's ResNet-50)
}


def resolve_role(role: str, preset: Preset) -> str:
    """The registered model name that plays `role` in `preset` (its `models` entry, else `ROLE_MODELS`).

    Raises:
        UsageProblem: `role` is not a role, or the name given for it is not a registered model.
    """
    import nets

    if role not in ROLE_MODELS:
        raise UsageProblem(f"unknown model role {role!r} in preset {preset.name!r}; roles: {', '.join(ROLE_MODELS)}")
    name = preset.models.get(role, ROLE_MODELS[role])
    try:
        nets.model_entry(name)
    except nets.UnknownModelError as exc:
        raise UsageProblem(f"role {role!r} of preset {preset.name!r} names no registered model: {exc}") from None
    return name


def _kw(**kwargs: object) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(kwargs.items()))


def _role_kw(preset: Preset, role: str, **extra: object) -> tuple[tuple[str, object], ...]:
    return _kw(**{**preset.model_kwargs.get(role, {}), **extra})


def depth_plan(preset: Preset) -> StudyPlan:
    units = []
    for depth in preset.depths:
        units.append(StudyUnit(f"resnet{depth}", UnitSpec(f"resnet{depth}"), group="residual"))
        units.append(StudyUnit(f"plain{depth}", UnitSpec(f"plain{depth}"), group="plain"))
    return StudyPlan(
        "depth", "Depth: residual vs plain",
        "Does a deeper plain net train worse than a shallower one (the degradation problem), and do "
        "shortcuts fix it? What do depth and shortcuts cost in latency and FLOPs?",
        tuple(units),
        notes=(f"Depths {', '.join(map(str, preset.depths))} (CIFAR-style 6n+2 nets, He et al. 2016 §4.2).",),
    )


def dynamic_plan(preset: Preset) -> StudyPlan:
    vgg = resolve_role("vgg", preset)
    dy_vgg = resolve_role("dy_vgg", preset)
    default_k = 4 if 4 in preset.kernels else preset.kernels[0]
    subsets = preset.channel_subsets
    cap = preset.dynamic_max_batches  # the same training budget for every net of this study
    units = []
    if preset.dynamic_vgg:
        units += [
            StudyUnit(vgg, UnitSpec(vgg, kwargs=_role_kw(preset, "vgg"), rgb=True, eval_subsets=subsets,
                                    max_batches=cap), group="VGG static"),
            StudyUnit(f"{dy_vgg} K={default_k}",
                      UnitSpec(dy_vgg, kwargs=_role_kw(preset, "dy_vgg", kernels=default_k), rgb=True,
                               eval_subsets=subsets, max_batches=cap), group="VGG dynamic"),
        ]
    units += [
        StudyUnit("resnet20", UnitSpec("resnet20", rgb=True, eval_subsets=subsets, max_batches=cap),
                  group="ResNet static"),
    ]
    for k in preset.kernels:
        units.append(StudyUnit(f"dy_resnet20 K={k}",
                               UnitSpec("dy_resnet20", kwargs=_kw(kernels=k), rgb=True, max_batches=cap,
                                        eval_subsets=subsets if k == default_k else ()),
                               group="ResNet dynamic" if k == default_k else "K ablation"))
    # The third way: one net per role that takes any channel subset, trained once with channel dropout.
    units += [
        StudyUnit("resnet20 in_chans=any",
                  UnitSpec("resnet20", rgb=True, eval_subsets=subsets, max_batches=cap, any_chans=True,
                           channel_dropout=AGNOSTIC_CHANNEL_DROPOUT), group="ResNet static, any channels"),
        StudyUnit(f"dy_resnet20 K={default_k} in_chans=any",
                  UnitSpec("dy_resnet20", kwargs=_kw(kernels=default_k), rgb=True, eval_subsets=subsets,
                           max_batches=cap, any_chans=True, channel_dropout=AGNOSTIC_CHANNEL_DROPOUT),
                  group="ResNet dynamic, any channels"),
    ]
    for subset in preset.subset_nets:
        units.append(StudyUnit(f"resnet20 in_chans={len(subset)} ({subset})",
                               UnitSpec("resnet20", channels=subset, max_batches=cap), group="subset net"))
        units.append(StudyUnit(f"dy_resnet20 K={default_k} in_chans={len(subset)} ({subset})",
                               UnitSpec("dy_resnet20", kwargs=_kw(kernels=default_k), channels=subset,
                                        max_batches=cap), group="subset net"))
    notes = [f"Channel subsets three ways: {'; '.join(SUBSET_WAYS.values())}. The channel-agnostic nets "
             "(nets.channel_agnostic: shared per-channel kernels, mean and max over the channels) train on RGB with "
             f"each channel dropped with probability {AGNOSTIC_CHANNEL_DROPOUT:g} per sample (at least one kept)."]
    if not preset.dynamic_vgg:
        notes.append("This preset leaves out the VGG-form pair (too slow for it); quick and full include it.")
    if cap:
        notes.append(f"Every net of this study trains on at most {cap} batches of {preset.batch_size} per epoch "
                     f"({preset.epochs} epochs): dynamic convolution is slow to train on a CPU, and static and "
                     "dynamic nets get the same budget so that the comparison stays fair.")
    if preset.dynamic_vgg and vgg != "vgg19_bn":
        notes.append(f"This preset compares {vgg} with {dy_vgg} instead of vgg19_bn with dy_vgg19, so that "
                     "the whole suite fits its CPU time budget; `--preset full` uses VGG-19.")
    return StudyPlan(
        "dynamic", "Dynamic convolution vs static convolution",
        "What does dynamic convolution (K expert kernels mixed per input by attention) cost in FLOPs, params "
        "and latency, what accuracy does it buy, how robust is it to missing colour channels, and how does "
        "K matter?",
        tuple(units), notes=tuple(notes),
    )


def activation_plan(preset: Preset) -> StudyPlan:
    units = tuple(StudyUnit(act, UnitSpec("resnet20", act=act)) for act in ("relu", "leaky_relu", "silu"))
    return StudyPlan("activation", "Activation: ReLU vs LeakyReLU vs SiLU",
                     "Does the activation change accuracy or latency of one residual net (ResNet-20)?", units)


def family_plan(preset: Preset) -> StudyPlan:
    vgg = resolve_role("vgg", preset)
    deep = resolve_role("resnet_deep", preset)
    units = [StudyUnit(vgg, UnitSpec(vgg, kwargs=_role_kw(preset, "vgg")), group="VGG")]
    if deep != "resnet20":
        units.append(StudyUnit("resnet20", UnitSpec("resnet20"), group="ResNet"))
    units.append(StudyUnit(deep, UnitSpec(deep, kwargs=_role_kw(preset, "resnet_deep")), group="ResNet (target)"))
    groups = {"template": "plain template CNN", "keras_resnet": "Keras bottleneck ResNet",
              "rrdb": "4-layer RRDB + attention"}
    for role in preset.family_roles:
        name = resolve_role(role, preset)
        units.append(StudyUnit(name, UnitSpec(name, kwargs=_role_kw(preset, role)), group=groups.get(role, role)))
    return StudyPlan(
        "family", "Families: VGG vs ResNet vs plain template CNN vs 4-layer RRDB+attention",
        "How do the families trade accuracy against FLOPs, params and latency? Does the 4-layer RRDB + "
        f"self-attention net reach at least 90% of {deep}'s accuracy (the coursework's target)?",
        tuple(units),
    )


def ladder_plan(preset: Preset) -> StudyPlan:
    """Every (engine, precision) rung of `preset.ladder_models`, trained as the depth study trains them (one unit each)."""
    import nets

    for name in preset.ladder_models:
        try:
            nets.model_entry(name)
        except nets.UnknownModelError as exc:
            raise UsageProblem(f"ladder model of preset {preset.name!r} is no registered model: {exc}") from None
    if preset.ladder_rungs is not None:
        from bench.scenarios.ladder import parse_rungs

        parse_rungs(preset.ladder_rungs)  # a misspelt rung: refused before anything runs
    units = tuple(StudyUnit(name, UnitSpec(name)) for name in preset.ladder_models)
    rungs = "every rung rbench knows" if preset.ladder_rungs is None else \
        "torch fp32 (the reference) and " + ", ".join(r.replace(":", " ") for r in preset.ladder_rungs)
    test = "the whole test split" if preset.ladder_test_limit is None else \
        f"{preset.ladder_test_limit} test images (a stratified sample of the test split)"
    throughput = "" if preset.ladder_throughput_batch is None else \
        f", then again at batch {preset.ladder_throughput_batch} for images/s"
    notes = (
        f"Rungs: {rungs}; a rung this machine cannot run is listed with the reason. `--engines` does not narrow "
        "the ladder: the preset names its rungs.",
        "Each net is trained once with the preset's training, as the depth study's nets are (a net both studies "
        f"use is trained once); each rung is evaluated on {test}, int8 is calibrated on "
        f"{preset.ladder_calibration} training images, and every rung is timed at batch 1 interleaved with the "
        f"others ({preset.ladder_iters} timed runs in {preset.ladder_rounds} rounds, {preset.ladder_warmup} warm-up "
        f"run{'' if preset.ladder_warmup == 1 else 's'} first){throughput}.",
    )
    return StudyPlan(
        "ladder", "Precision ladder: speed vs accuracy per engine and precision",
        "For one trained net, how much faster is each engine and precision (fp32, bf16, int8, fp16) than torch "
        "fp32, and how much task accuracy does each give up?",
        units, notes=notes,
    )


# --------------------------------------------------------------------------- the training-recipe studies

#: The 001 seed's augmentation (Keras ImageDataGenerator style): rotation, shift, horizontal flip, zoom.
RECIPE_AUGMENT = ("rotate:15", "translate:0.1", "flip", "scale:0.1")
#: Stands for the preset's patience (`Preset.recipe_patience`) in a rung's training overrides.
PRESET_PATIENCE = "preset"
#: The 001 ladder: (label, what the rung adds, builder kwargs, training overrides); each rung keeps the previous
#: rung's settings and adds its own. '{es}' and '{plateau}' in the text are the preset's patiences.
RECIPE_RUNGS: tuple[tuple[str, str, dict[str, object], dict[str, object]], ...] = (
    ("baseline", "Keras-style bottleneck ResNet, Adam at a constant rate, no augmentation, the last epoch's weights",
     {}, {"optimizer": "adam", "lr": 1e-3, "schedule": "constant", "augment": (), "restore_best": False}),
    ("+ augmentation", "rotation +-15 deg, shift 10%, horizontal flip, zoom +-10%", {}, {"augment": RECIPE_AUGMENT}),
    ("+ deeper, early stopping", "one more block per stage; early stopping (patience {es}) restoring the best weights",
     {"extra_blocks": 1}, {"early_stop": PRESET_PATIENCE, "restore_best": True}),
    ("+ plateau schedule", "reduce the rate on plateau (factor 0.2, patience {plateau})", {},
     {"schedule": "plateau", "gamma": 0.2, "plateau_patience": PRESET_PATIENCE}),
    ("+ deeper, dropout 0.5", "two more blocks per stage than the baseline; dropout 0.5 before the classifier",
     {"extra_blocks": 2, "drop_rate": 0.5}, {}),
)
#: The seed reports' accuracies (%): CIFAR-10, not comparable with another data set's.
RECIPE_SEED_TOP1 = (72.3, 82.9, 83.4, 87.3, 89.2)
SEED_REPORT_LABEL = "CIFAR-10, from the seed report, not comparable across data sets"

#: The 004 sweeps, each varying one setting of SWEEP_BASE (SGD, lr 0.001, augmentation on).
SWEEPS = ("lr", "optimizer", "augment", "no_bn")
SWEEP_AUGMENT = ("flip", "rotate90")  # the 004 seed's random flips and rotations by 90/180/270
SWEEP_BASE: dict[str, object] = {"optimizer": "sgd", "lr": 1e-3, "augment": SWEEP_AUGMENT, "schedule": "constant"}
SWEEP_LRS = (2e-3, 1e-3, 8e-4)
SWEEP_OPTIMIZERS = ("sgd", "adagrad", "adam")
#: The 004 seed's figures (%), per (net kind, sweep, value); None: failed to train (about 1%).
SWEEP_SEED_TOP1: dict[tuple[str, str, object], float | None] = {
    ("vgg", "lr", 2e-3): 88.6, ("vgg", "lr", 1e-3): 94.6, ("vgg", "lr", 8e-4): 92.6,
    ("resnet", "lr", 2e-3): 85.0, ("resnet", "lr", 1e-3): 91.8, ("resnet", "lr", 8e-4): 89.4,
    ("vgg", "optimizer", "sgd"): 94.6, ("vgg", "optimizer", "adagrad"): 90.8, ("vgg", "optimizer", "adam"): None,
    ("resnet", "optimizer", "sgd"): 91.8, ("resnet", "optimizer", "adagrad"): 88.2, ("resnet", "optimizer", "adam"): 86.0,
    ("vgg", "augment", True): 94.6, ("vgg", "augment", False): 92.2,
    ("resnet", "augment", True): 91.8, ("resnet", "augment", False): 89.2,
}


def _test_images(preset: Preset) -> str:
    size = preset.recipe_test_size or preset.test_size
    return "the whole test split" if size is None else f"{size} test images (the run's test split, cut to that size)"


def _seeds(count: int) -> range:
    return range(count)


#: The timed studies whose accuracy figures may get extra training seeds (`Preset.accuracy_seeds`).
SEEDED_STUDIES = ("depth", "dynamic", "activation", "family")


def with_accuracy_seeds(plan: StudyPlan, preset: Preset) -> StudyPlan:
    """`plan` plus, for each unit `preset.accuracy_seed_units` names (every unit when None), the unit trained again
    with seeds 1 .. accuracy_seeds-1, accuracy only (torch top-1; not exported, not timed), under the same label and
    group: the report gives each label's mean and min-max top-1 over its seeds.

    Raises:
        UsageProblem: the preset names a unit ('study:label') this study does not have.
    """
    if plan.name not in SEEDED_STUDIES or preset.accuracy_seeds < 2:
        return plan
    wanted = None if preset.accuracy_seed_units is None else \
        {entry.split(":", 1)[1] for entry in preset.accuracy_seed_units if entry.split(":", 1)[0] == plan.name}
    labels = {unit.label for unit in plan.units}
    unknown = sorted((wanted or set()) - labels)
    if unknown:
        raise UsageProblem(f"preset {preset.name!r}: accuracy_seed_units names no unit {', '.join(unknown)} of the "
                           f"{plan.name} study; its units: {', '.join(sorted(labels))}")
    extra = [StudyUnit(unit.label, replace(unit.spec, seed=seed, accuracy_only=True, eval_subsets=()), unit.group)
             for unit in plan.units if wanted is None or unit.label in wanted
             for seed in range(1, preset.accuracy_seeds)]
    return replace(plan, units=plan.units + tuple(extra))


def timed_units(plan: StudyPlan) -> tuple[StudyUnit, ...]:
    """The units of `plan` its timing phase measures: none for an accuracy study, never an accuracy-only extra seed."""
    return tuple(unit for unit in plan.units if plan.timed and not unit.spec.accuracy_only)


def recipe_plan(preset: Preset) -> StudyPlan:
    """The 001 ladder on the Keras-style ResNet: each rung adds one thing to the previous, every rung per seed."""
    from bench.data import parse_augment

    name = resolve_role("keras_resnet", preset)
    es, plateau = preset.recipe_patience
    patience = {"es": es, "plateau": plateau}
    preset_patience = {"early_stop": es, "plateau_patience": plateau}
    rungs = RECIPE_RUNGS[:max(1, min(preset.recipe_rungs, len(RECIPE_RUNGS)))]
    units, kwargs, train = [], dict(preset.model_kwargs.get("keras_resnet", {})), {"epochs": preset.recipe_epochs}
    for index, (label, _, rung_kwargs, rung_train) in enumerate(rungs):
        kwargs.update(rung_kwargs)
        train.update({k: preset_patience[k] if v == PRESET_PATIENCE else v for k, v in rung_train.items()})
        train["augment"] = parse_augment(train.get("augment", ()))
        for seed in _seeds(preset.recipe_seeds):
            spec = UnitSpec(name, kwargs=_kw(**kwargs), train=_kw(**train), seed=seed, accuracy_only=True,
                            max_batches=preset.recipe_max_batches, test_size=preset.recipe_test_size)
            units.append(StudyUnit(f"{index + 1}. {label} (seed {seed})", spec, group=f"{index + 1}. {label}"))
    images = f"at most {preset.recipe_max_batches} batches of {preset.batch_size}" if preset.recipe_max_batches \
        else "the whole training split"
    notes = [
        f"Rungs: {'; '.join(f'{i + 1}. {label}: {what.format(**patience)}' for i, (label, what, _, _) in enumerate(rungs))}.",
        f"Each rung trains {name} for {preset.recipe_epochs} epoch(s) of {images} per epoch, with "
        f"{preset.recipe_seeds} seeds (initial weights, shuffling, augmentation; the data split is the run's), and is "
        f"scored by torch top-1 on {_test_images(preset)}; nothing is exported or timed. Reference column: "
        f"{SEED_REPORT_LABEL}.",
    ]
    if len(rungs) < len(RECIPE_RUNGS):
        notes.append(f"Reduced at this preset: only the first {len(rungs)} of the {len(RECIPE_RUNGS)} rungs, "
                     f"{preset.recipe_epochs} epoch(s) of {images}; the numbers show the study runs, not what the "
                     "recipe is worth (`--preset standard` runs every rung long enough to separate them).")
    for what, value in (("early stopping", es), ("plateau", plateau)):
        if len(rungs) >= (3 if what == "early stopping" else 4) and value >= preset.recipe_epochs:
            notes.append(f"The {what} patience ({value}) is not below the {preset.recipe_epochs} epoch(s) of this "
                         f"preset: that rung's {what} never acts here.")
    return StudyPlan("recipe", "Training recipe: the 001 ladder on a Keras-style ResNet",
                     "How much does each trick of the 001 seed report (augmentation, a deeper net with early stopping, "
                     "a plateau schedule, more depth with dropout) add to test accuracy, and is each gain larger than "
                     "the spread between seeds?", tuple(units), notes=tuple(notes), timed=False)


def _sweep_configs(preset: Preset) -> list[tuple[str, str, dict[str, object]]]:
    """(role, config label, training overrides) of every configuration the preset's sweeps need, each once."""
    configs: dict[tuple[str, str], dict[str, object]] = {}

    def add(role: str, **changes: object) -> None:
        train = {**SWEEP_BASE, **changes}
        aug = "aug" if train["augment"] else "no aug"
        configs.setdefault((role, f"{train['optimizer']} lr {train['lr']:g} {aug}"), train)

    for role in preset.sweep_roles:
        if "lr" in preset.sweeps:
            for lr in SWEEP_LRS:
                add(role, lr=lr)
        if "optimizer" in preset.sweeps:
            for optimizer in SWEEP_OPTIMIZERS:
                add(role, optimizer=optimizer)
        if "augment" in preset.sweeps:
            add(role)
            add(role, augment=())
    if "no_bn" in preset.sweeps:
        if "sweep_vgg" in preset.sweep_roles:
            add("sweep_vgg", optimizer="adam")  # the BN twin under the same optimizer
        add("sweep_vgg_nobn", optimizer="adam")
    return [(role, label, train) for (role, label), train in configs.items()]


def optimizer_plan(preset: Preset) -> StudyPlan:
    """The 004 sweeps (learning rate; SGD/Adagrad/Adam; augmentation on/off) for a VGG-BN and a ResNet, plus the
    VGG without BN under Adam, every configuration per seed."""
    from bench.data import parse_augment

    unknown = sorted(set(preset.sweeps) - set(SWEEPS))
    if unknown:
        raise UsageProblem(f"preset {preset.name!r} names unknown sweep(s) {', '.join(unknown)}; sweeps: {', '.join(SWEEPS)}")
    units = []
    for role, label, train in _sweep_configs(preset):
        name = resolve_role(role, preset)
        overrides = {**train, "augment": parse_augment(train["augment"]), "epochs": preset.sweep_epochs}
        for seed in _seeds(preset.sweep_seeds):
            spec = UnitSpec(name, kwargs=_role_kw(preset, role), train=_kw(**overrides), seed=seed, accuracy_only=True,
                            max_batches=preset.sweep_max_batches, test_size=preset.recipe_test_size)
            units.append(StudyUnit(f"{name} {label} (seed {seed})", spec, group=f"{role}|{name} {label}"))
    images = f"at most {preset.sweep_max_batches} batches of {preset.batch_size}" if preset.sweep_max_batches \
        else "the whole training split"
    nets = ", ".join(resolve_role(r, preset) for r in (*preset.sweep_roles, *(("sweep_vgg_nobn",)
                                                                            if "no_bn" in preset.sweeps else ())))
    notes = [f"Every configuration varies one setting of the base (SGD with Nesterov momentum 0.9, lr 0.001, a "
             f"constant rate, random horizontal flips and 90/180/270-degree rotations) and trains {nets} for "
             f"{preset.sweep_epochs} epoch(s) of {images} per epoch, with {preset.sweep_seeds} seeds; torch top-1 on "
             f"{_test_images(preset)}; nothing is exported or timed. Reference column: {SEED_REPORT_LABEL} "
             "(VGG19-BN and ResNet-50, 50 epochs).",
             "A configuration whose loss becomes nan is recorded as failed (diverged) and the study goes on; one whose "
             "test accuracy is not above chance (1/classes plus 3 binomial standard errors) 'did not train'."]
    if set(preset.sweeps) != set(SWEEPS) or set(preset.sweep_roles) != {"sweep_vgg", "sweep_resnet"}:
        notes.append(f"Reduced at this preset: sweeps {', '.join(preset.sweeps)} only, on "
                     f"{', '.join(resolve_role(r, preset) for r in preset.sweep_roles)}, {preset.sweep_epochs} "
                     f"epoch(s) of {images}; the numbers show the study runs, not an answer (`--preset standard` runs "
                     "every sweep on both nets).")
    return StudyPlan("optimizer", "Learning rate x optimizer x augmentation: the 004 sweeps for VGG vs ResNet",
                     "How do learning rate, optimizer (SGD, Adagrad, Adam) and augmentation change a VGG-BN's and a "
                     "ResNet's test accuracy, which differences exceed the seed spread, and does VGG without BatchNorm "
                     "fail under Adam as the seed report's VGG19 did (its explanation: vanishing gradients)?",
                     tuple(units), notes=tuple(notes), timed=False)


_PLANS = {"depth": depth_plan, "dynamic": dynamic_plan, "activation": activation_plan, "family": family_plan,
          "ladder": ladder_plan, "recipe": recipe_plan, "optimizer": optimizer_plan}


def study_plan(name: str, preset: Preset) -> StudyPlan:
    """The plan of study `name` at `preset`; an unknown name is a one-line usage error."""
    try:
        build = _PLANS[name]
    except KeyError:
        raise UsageProblem(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}") from None
    _check_roles(preset)
    _check_seed_units(preset)
    return with_accuracy_seeds(build(preset), preset)


def _check_seed_units(preset: Preset) -> None:
    """Every `accuracy_seed_units` entry is 'study:label' of a study that takes extra seeds (a typo changes nothing)."""
    if preset.accuracy_seeds < 1:
        raise UsageProblem(f"preset {preset.name!r}: accuracy_seeds must be at least 1, not {preset.accuracy_seeds}")
    for entry in preset.accuracy_seed_units or ():
        study, _, label = entry.partition(":")
        if study not in SEEDED_STUDIES or not label:
            raise UsageProblem(f"preset {preset.name!r}: accuracy_seed_units entry {entry!r} is not 'study:label' "
                               f"with a study of {', '.join(SEEDED_STUDIES)}")


def _check_roles(preset: Preset) -> None:
    """A role the preset names but no plan asks for (a typo) would silently change nothing: refuse it."""
    named = {*preset.models, *preset.model_kwargs, *preset.family_roles}
    unknown = sorted(named - set(ROLE_MODELS))
    if unknown:
        raise UsageProblem(f"preset {preset.name!r} names unknown model role(s) {', '.join(map(repr, unknown))}; "
                           f"roles: {', '.join(ROLE_MODELS)}")
