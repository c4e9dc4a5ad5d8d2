"""How to train (`TrainConfig`), what a run produced (`TrainResult`), and the checks of a training request:
the device, the data set's splits, `--in-chans`, `--drop-rate`, the plateau schedule's settings.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.data import DatasetBundle, parse_augment
from bench.errors import DataProblem, EnvironmentProblem, UsageProblem

OPTIMIZERS = ("sgd", "adam", "adamw", "nadam", "adagrad")


SCHEDULES = ("cosine", "step", "onecycle", "plateau", "constant")


#: Learning rates that work for the CIFAR-style nets when `lr` is not given.
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "nadam": 2e-3, "adagrad": 1e-2}


@dataclass
class TrainConfig:
    """How to train. Defaults suit a brief CPU run of a CIFAR-style net."""

    epochs: int = 1
    batch_size: int = 128
    optimizer: str = "sgd"          # sgd | adam | adamw | nadam | adagrad
    lr: float | None = None         # None: DEFAULT_LR[optimizer]
    momentum: float = 0.9           # sgd only (Nesterov)
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | step | onecycle | plateau | constant
    step_size: int = 30             # step: epochs between decays (capped to a third of the run)
    gamma: float = 0.1              # step / plateau decay factor
    plateau_patience: int = 2       # plateau: epochs without a better val accuracy before the rate drops
    augment: tuple[str, ...] = ()   # crop, flip, vflip, rotate[:DEG], rotate90, translate[:F], scale[:F], erase
    early_stop: int | None = None   # stop after this many epochs without a better val accuracy
    restore_best: bool = True       # end with the best val epoch's weights in the model (Keras' restore_best_weights)
    label_smoothing: float = 0.0
    amp: bool = False               # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    device: str = "cpu"
    seed: int = 0
    workers: int = 0
    max_batches: int | None = None  # cap batches per epoch (smoke tests)
    grad_clip: float | None = None
    channel_dropout: float = 0.0    # drop each input channel with this probability, per sample (in_chans="any" nets)
    sync_bn: bool = False           # distributed runs on GPUs: SyncBatchNorm, batch statistics over every process

    def __post_init__(self) -> None:
        self.augment = parse_augment(self.augment)
        if self.optimizer not in OPTIMIZERS:
            raise UsageProblem(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UsageProblem(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1:
            raise UsageProblem(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageProblem(f"batch size must be positive, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise UsageProblem(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.channel_dropout < 1.0:
            raise UsageProblem(f"channel dropout must be in [0, 1) (the share of channels dropped per sample; "
                               f"at least one is always kept), got {self.channel_dropout}")
        if self.early_stop is not None and self.early_stop < 1:
            raise UsageProblem(f"early-stop patience must be at least 1 epoch, got {self.early_stop}")
        if not 0.0 < self.gamma < 1.0:
            raise UsageProblem(f"the decay factor must be in (0, 1) (the rate is multiplied by it), got {self.gamma}")
        if self.plateau_patience < 0:
            raise UsageProblem(f"plateau patience must be 0 or more epochs, got {self.plateau_patience}")
        self.device = parse_device(self.device)

    def advice(self) -> list[str]:
        """Settings that are legal but do nothing in this run (one line each), for the caller to show."""
        out = []
        if self.schedule == "plateau" and self.plateau_patience >= self.epochs:
            out.append(f"plateau patience {self.plateau_patience} >= {self.epochs} epoch(s): the learning rate can "
                       "never drop in this run; lower --plateau-patience or train longer")
        if self.early_stop is not None and self.early_stop >= self.epochs:
            out.append(f"early-stop patience {self.early_stop} >= {self.epochs} epoch(s): the run can never stop "
                       "early; lower --early-stop or train longer")
        return out

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = list(self.augment)
        d["lr"] = self.learning_rate
        return d


def plateau_settings(schedule: str, factor: float | None, patience: int | None) -> dict[str, Any]:
    """TrainConfig fields for `--plateau-factor/--plateau-patience`; refused (one line) with another schedule."""
    given = {k: v for k, v in (("gamma", factor), ("plateau_patience", patience)) if v is not None}
    if given and schedule != "plateau":
        raise UsageProblem(f"--plateau-factor and --plateau-patience set the plateau schedule; add --schedule plateau "
                           f"(the schedule is {schedule})")
    return given


def check_drop_rate(drop_rate: float) -> float:
    """`drop_rate` when it is a dropout probability in [0, 1); else a one-line UsageProblem."""
    if not 0.0 <= drop_rate < 1.0:
        raise UsageProblem(f"--drop-rate must be in [0, 1) (the dropout probability before the classifier), "
                           f"got {drop_rate}")
    return float(drop_rate)


@dataclass
class TrainResult:
    """What a run produced. `history` holds one dict per epoch:
    {epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds, img_s}."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float
    best_checkpoint: Path
    last_checkpoint: Path
    curves_png: Path | None
    stopped_early: bool
    seconds: float
    train_img_s: float
    config: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] | None = None  # world_size, backend, per-rank img/s, ... (`bench.train.distributed`)

    @property
    def checkpoint(self) -> Path:
        return self.best_checkpoint


def check_splits(bundle: DatasetBundle) -> None:
    """Refuse, in one line, a data set too small to train a classifier on: training needs at least one image
    per class (`num_classes` images), validation and test at least one each. With `subset`, the minimum is
    2 images per class (one to train on, one to validate on), and the message says so; without it, the data
    set itself is too small (DataProblem)."""
    k = bundle.num_classes
    sizes = f"{len(bundle.train)} train / {len(bundle.val)} val / {len(bundle.test)} test images"
    too_small = len(bundle.train) < k or len(bundle.val) < 1 or len(bundle.test) < 1
    minimum = 2 * k
    if bundle.subset is not None and (bundle.subset < minimum or too_small):
        advice = f"use --subset {minimum} or more" if bundle.subset < minimum else "use a larger --subset"
        raise UsageProblem(f"--subset {bundle.subset} is too small for {bundle.name}: it leaves {sizes}, and "
                           f"training {k} classes needs at least 2 images per class (one to train on, one to "
                           f"validate on); {advice}")
    if too_small:
        raise DataProblem(f"{bundle.name} is too small to train on: {sizes}; training {k} classes needs at least "
                          f"{k} training images and one each to validate and test on")


def parse_in_chans(value: str | int | None) -> int | str | None:
    """An `--in-chans` value: None (the data's own count), "any" (a channel-agnostic net) or a positive integer;
    anything else is a one-line UsageProblem."""
    if value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    text = str(value).strip().lower()
    if text == "any":
        return "any"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageProblem(f"--in-chans must be a positive number of channels or 'any', got {value!r}")


def _supported_devices() -> str:
    """What this machine can train on, for error messages: "cpu" or "cpu, cuda, cuda:0..cuda:N"."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        return "cpu (cuda[:N] needs a CUDA GPU, and torch sees none here)"
    return "cpu, cuda, " + ("cuda:0" if count == 1 else f"cuda:0..cuda:{count - 1}")


def parse_device(device: str | torch.device) -> str:
    """The canonical name of a training device: 'cpu', 'cuda' or 'cuda:N'; anything else (tpu, mps, meta,
    a typo) is a one-line UsageProblem that says what is supported. Availability is `training_device`'s job."""
    text = str(device).strip().lower()
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        raise UsageProblem(f"--device {device} is not supported: rbench trains on {_supported_devices()}")
    return "cpu" if match.group(1) == "cpu" else text


def training_device(device: str | torch.device) -> torch.device:
    """The torch.device to train on, checked against this machine: a CUDA device needs a GPU torch sees
    (EnvironmentProblem, exit 1), and cuda:N needs N below the GPU count (UsageProblem, exit 2)."""

    name = parse_device(device)
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {name} asked for, but torch sees no CUDA GPU; use --device cpu")
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise UsageProblem(f"--device {name} is not supported: rbench trains on {_supported_devices()}")
    return torch.device(name)
