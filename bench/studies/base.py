"""What a study is: its kind, its budget, its plan (units as data) and its report section.

A study is one module (`bench.studies.depth`, ...) that defines a `Study`: a name, a kind (`StudyKind`: timed,
accuracy-only or ladder; the runner asks it, never the name), a budget (a frozen dataclass of its knobs, nested in
the preset under the study's name), a `plan(preset)` that lists its units, and a report section. It is registered
once (`bench.studies.registry.register`); adding a study touches its module and the registration. Its `summary`
hook gives its rows of the report's opening table (`bench.report.summary.SummaryRow`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem

Record = dict[str, Any]
#: section(records, out_dir, engines, preset settings) -> (Markdown, findings): a study's part of the report.
Section = Callable[[Sequence[Record], Path, Sequence[str], dict[str, Any]], tuple[str, list[str]]]


class StudyKind(StrEnum):
    """What the runner does with a study's units after preparing them (train, export, evaluate)."""

    TIMED = "timed"  # latency and throughput of every unit, timed together per engine
    ACCURACY = "accuracy"  # nothing timed: units trained and scored by torch top-1 only
    LADDER = "ladder"  # every (engine, precision) rung of each unit's checkpoint (bench.scenarios.ladder)
    OWN = "own"  # the study times its units itself (`Study.timing`: e.g. a LoadGen peak search)


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
    kind: StudyKind = StudyKind.TIMED  # the study's kind (`Study.kind`): what the runner does with its units

    @property
    def timed(self) -> bool:
        """Whether the study has a timing phase (every kind but an accuracy study)."""
        return self.kind is not StudyKind.ACCURACY

    def as_record(self) -> dict[str, Any]:
        """The plan as run.json keeps it: its fields, with `timed` for its kind."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}
        record["units"] = [asdict(unit) for unit in self.units]
        return {**record, "timed": self.timed}


def setting(default: Any, name: str) -> Any:
    """A budget field whose preset setting (in settings.json and run.json) is called `name`."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a budget field's default must be immutable")
    return field(default=default, metadata={"setting": name})


def budget_settings(budget: Any) -> dict[str, Any]:
    """A budget's fields under their preset-setting names (`setting`), values as `dataclasses.asdict` gives them."""
    values = asdict(budget)
    return {f.metadata.get("setting", f.name): values[f.name] for f in fields(budget)}


@dataclass(frozen=True)
class NoBudget:
    """The budget of a study that has no knobs of its own."""


@dataclass(frozen=True)
class Preset:
    """How much data, training and timing one run spends; each study's own knobs sit in `studies`.

    Sizes are image counts; None means the whole split."""

    name: str
    train_size: int | None  # training images (a stratified subset of the train split)
    test_size: int | None  # test images used for every accuracy figure
    epochs: int
    batch_size: int
    lr: float | None  # None: the optimizer's default (bench.train.loop.DEFAULT_LR)
    optimizer: str  # adam for the short presets: it gets far in few steps; sgd (the papers') for full
    input_size: int  # images are resized to input_size x input_size
    warmup: int  # untimed latency iterations
    iters: int  # timed latency iterations (batch 1)
    throughput_batch: int
    throughput_iters: int
    subset_test_size: int | None = None  # test images for each channel-subset figure (`UnitSpec.eval_subsets`)
    exporter: str = "auto"  # ONNX exporter: auto (dynamo, TorchScript fallback) or torchscript (faster)
    models: dict[str, str] = field(default_factory=dict)  # role -> model name (default: plans.ROLE_MODELS)
    model_kwargs: dict[str, dict] = field(default_factory=dict)  # role -> extra builder kwargs
    # Test images each accuracy-only unit of an accuracy study (recipe, optimizer) is scored on (None: test_size).
    recipe_test_size: int | None = None
    # A second (third) training seed for the accuracy figures of the seeded studies (`Study.seeded`): every extra
    # seed trains the unit again and scores it by torch top-1 only (`accuracy_only`: not exported, not timed), and
    # the report gives the mean and min-max over the seeds. The run's seed comes first.
    accuracy_seeds: int = 1  # seeds per unit (1: one training run, and the report says so)
    accuracy_seed_units: tuple[str, ...] | None = None  # 'study:label' units that get them (None: every unit)
    # (study, why and which preset runs it) for each study `rbench suite` leaves out at this preset: one whose
    # question this budget cannot answer (the report names them once, at the top).
    suite_leaves_out: tuple[tuple[str, str], ...] = ()
    # Seconds of worker-process timing each comparison may add beyond its fewest workers (`Settings.max_time_s`):
    # 0 times exactly those workers, which keeps the short presets' many small comparisons within their budget.
    timing_extra_s: float = 20.0
    # Where the timing phase times (`Settings.timing`): "auto" (worker processes, unless RBENCH_TIMING says
    # otherwise) or "in-process" (smoke: its figures test the plumbing, and worker start-up would dominate them).
    timing: str = "auto"
    #: study name -> its budget (the study's `budget` dataclass); a study not named here runs at its defaults
    studies: dict[str, Any] = field(default_factory=dict)

    def generic_settings(self) -> dict[str, Any]:
        """The preset's own fields (not the studies' budgets), as `dataclasses.asdict` gives them."""
        return {k: v for k, v in asdict(replace(self, studies={})).items() if k != "studies"}


@dataclass(frozen=True)
class Study:
    """One study: everything about it but its units' measuring, which the runner does by its `kind`."""

    name: str
    kind: StudyKind
    plan: Callable[[Preset], StudyPlan]  # its title, question, units and notes at a preset
    budget: type = NoBudget  # frozen dataclass of its knobs; defaults serve a preset that does not name it
    section: Section | None = None  # its report section (None: one table of its units' measurements)
    # Its rows of the report's opening table: summary(records, preset settings) -> [bench.report.summary.SummaryRow],
    # one per question it answers, each with its figure, 95% interval and status. None: the study has no row.
    summary: Callable[[Sequence[Record], dict[str, Any]], list[Any]] | None = None
    seeded: bool = False  # its units get the preset's extra accuracy seeds (`Preset.accuracy_seeds`)
    # More timing records after a timed study's latency and throughput: extra_timing(plan, sources, contexts, ctx)
    extra_timing: Callable[..., list[Record]] | None = None
    # Forward FLOPs its timing phase spends beyond timing (a ladder evaluates every rung): `bench.studies.shard`'s
    # estimate of the phase's cost.
    timing_flops: Callable[[StudyPlan, Preset], float] | None = None
    # An OWN study's whole timing phase: timing(plan, ctx, out_dir, on_stage) -> records (one per unit at least),
    # and its cost in seconds at a preset (`bench.studies.shard`'s estimate): timing_seconds(plan, preset).
    timing: Callable[..., list[Record]] | None = None
    timing_seconds: Callable[[StudyPlan, Preset], float] | None = None

    def budget_of(self, preset: Preset) -> Any:
        """This study's budget in `preset` (its defaults when the preset names none).

        Raises:
            UsageProblem: the preset gives this study a budget of another type.
        """
        budget = preset.studies.get(self.name)
        if budget is None:
            return self.budget()
        if not isinstance(budget, self.budget):
            raise UsageProblem(f"preset {preset.name!r}: the {self.name} study's budget is a "
                               f"{type(budget).__name__}, not a {self.budget.__name__}")
        return budget


def plain_json(value: Any) -> Any:
    """A JSON-safe copy (dataclasses, tuples, paths, numpy scalars)."""
    return json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value,
                                 default=lambda o: o.item() if hasattr(o, "item") else str(o)))
