"""What each study trains and measures, as data: a study is a list of units, a unit is one model.

A unit is one model trained, exported and measured once; units that several studies share
(ResNet-20 with ReLU appears in three) are measured once and reused, because a unit's id is
a function of everything that makes it (model, activation, builder kwargs, input channels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import UsageProblem
from bench.studies.presets import Preset


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

    @property
    def unit_id(self) -> str:
        """A file-name-safe id that changes whenever anything that makes the unit changes."""
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
        return "-".join(str(p).replace("_", "").replace(".", "p") for p in parts)

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


STUDIES = ("depth", "dynamic", "activation", "family", "ladder")

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
        from bench.ladder import parse_rungs

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


_PLANS = {"depth": depth_plan, "dynamic": dynamic_plan, "activation": activation_plan, "family": family_plan,
          "ladder": ladder_plan}


def study_plan(name: str, preset: Preset) -> StudyPlan:
    """The plan of study `name` at `preset`; an unknown name is a one-line usage error."""
    try:
        build = _PLANS[name]
    except KeyError:
        raise UsageProblem(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}") from None
    _check_roles(preset)
    return build(preset)


def _check_roles(preset: Preset) -> None:
    """A role the preset names but no plan asks for (a typo) would silently change nothing: refuse it."""
    named = {*preset.models, *preset.model_kwargs, *preset.family_roles}
    unknown = sorted(named - set(ROLE_MODELS))
    if unknown:
        raise UsageProblem(f"preset {preset.name!r} names unknown model role(s) {', '.join(map(repr, unknown))}; "
                           f"roles: {', '.join(ROLE_MODELS)}")
