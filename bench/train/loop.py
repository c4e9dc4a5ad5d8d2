"""A plain, fast PyTorch training loop that keeps the best validation checkpoint and can resume.

    >>> bundle = load_dataset("digits", subset=600, input_size=16)
    >>> model = nets.create_model("resnet20", num_classes=bundle.num_classes, in_chans=bundle.in_chans)
    >>> result = train_model(model, bundle, TrainConfig(epochs=2, optimizer="adam"), "runs/r20")
    >>> result.best_val_acc, result.best_checkpoint

Files in `out_dir`: `best.pt` (the best validation epoch; weights, model config, normalization,
data set), `best.json` (the same facts as JSON), `last.pt` (the last finished epoch plus optimizer,
scheduler and scaler state, for `resume=True`), `history.json` and `curves.png` (learning curves).
Every `.pt` loads with `torch.load(path, weights_only=True)`: it holds only tensors and plain
containers. Each is written atomically, so an interrupted run leaves the previous epoch's files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.atomic import write_text
from bench.data import DatasetBundle, make_loaders
from bench.errors import DataProblem, RbenchError, UsageProblem
from bench.train.checkpoint import (  # noqa: F401  (public here too: the loop's face before the split)
    CHECKPOINT_FORMAT,
    checkpoint_payload,
    current_temperature,
    load_training_checkpoint,
    plot_history,
    save_checkpoint,
)
from bench.train.config import (  # noqa: F401  (public here too)
    DEFAULT_LR,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    TrainResult,
    check_drop_rate,
    check_splits,
    parse_device,
    parse_in_chans,
    plateau_settings,
    training_device,
)
from bench.train.evaluate import evaluate
from bench.train.parallel import all_finite, data_parallel


class TrainingDiverged(RbenchError):
    """The loss became nan or infinite; training stopped."""

    exit_code = 1
    every_rank = True  # distributed, every rank stops at the same batch: rank 0 alone says so (bench.cli)


# --------------------------------------------------------------------------- pieces


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named in `config`; no weight decay on BatchNorm and bias parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = config.learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam,
           "adagrad": torch.optim.Adagrad}[config.optimizer]
    return cls(groups, lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """(scheduler, steps per batch?) for `config.schedule`; onecycle steps per batch, the rest per epoch."""
    s = config.schedule
    if s == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs), False
    if s == "step":
        step = max(1, min(config.step_size, math.ceil(config.epochs / 3)))
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.gamma), False
    if s == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate,
                                                   total_steps=config.epochs * steps_per_epoch), True
    if s == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.gamma,
                                                          patience=config.plateau_patience), False
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), False


def anneal_temperature(model: nn.Module, epoch: int, epochs: int) -> float | None:
    """Set a dynamic-conv net's attention temperature for `epoch` (0-based); None for other nets.

    DY-CNN's schedule (Chen et al., CVPR 2020, §4.1; `nets.temperature_schedule`): 30
    falling linearly to 1 over the first 10 epochs, compressed into `epochs - 1` epochs for a
    shorter run so that the last epoch, and so the checkpoint, trains at the temperature 1 the
    net is evaluated and exported with.
    """
    from nets import set_temperature, temperature_schedule

    if current_temperature(model) is None:
        return None
    t = temperature_schedule(epoch, anneal_epochs=min(10, epochs - 1))
    set_temperature(model, t)
    return t


def _amp_context(config: TrainConfig, device: torch.device):
    if not config.amp:
        return torch.autocast(device.type, enabled=False)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


class _Progress:
    """A rich progress bar with img/s and the running loss; silent when `enabled` is False."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[img_s]:>7.0f} img/s  loss {task.fields[loss]:.3f}"),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, description: str, total: int):
        if self.bar is not None:
            return self.bar.add_task(description, total=total, img_s=0.0, loss=float("nan"))
        return None

    def update(self, task, img_s: float, loss: float):
        if self.bar is not None:
            self.bar.update(task, advance=1, img_s=img_s, loss=loss)

    def done(self, task, line: str):
        if self.bar is not None:
            self.bar.remove_task(task)
            self.bar.console.print(line, soft_wrap=True)


# --------------------------------------------------------------------------- the loop


@dataclass
class _Optimization:
    """What changes the weights: the optimizer, its schedule (stepped per batch or per epoch), AMP scaler, loss."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    per_batch: bool  # onecycle steps every batch, the other schedules every epoch
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    plateau: bool  # ReduceLROnPlateau steps on the validation accuracy

    def step_schedule(self, val_acc: float) -> None:
        """One scheduler step of the schedule's own cadence."""
        if self.plateau:
            self.scheduler.step(val_acc)
        else:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


@dataclass
class _RunState:
    """Where a run stands: the epochs done (their history) and the best validation epoch so far."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_acc: float = -1.0
    start_epoch: int = 0


def _check_model_fits(model: nn.Module, bundle: DatasetBundle, config: TrainConfig | None = None) -> None:
    from nets.channel_agnostic import is_channel_agnostic

    model_config = dict(getattr(model, "config", {}))
    if config is not None and config.channel_dropout and not is_channel_agnostic(model):
        raise UsageProblem(f"channel dropout needs a net that takes any number of channels; build "
                           f"{model_config.get('name', 'the model')} with in_chans='any' (--in-chans any)")
    for key, have in (("in_chans", bundle.in_chans), ("num_classes", bundle.num_classes)):
        if key == "in_chans" and model_config.get(key) == "any":
            continue  # a channel-agnostic net takes the data's channels, however many
        if key in model_config and model_config[key] != have:
            raise UsageProblem(f"{model_config.get('name', 'the model')} has {key}={model_config[key]} "
                               f"but {bundle.name} gives {have}; build it with {key}={have}")


def _training_device(config: TrainConfig) -> torch.device:
    return training_device(config.device)


def _setup_optimization(model: nn.Module, config: TrainConfig, device: torch.device, steps: int) -> _Optimization:
    optimizer = make_optimizer(model, config)
    scheduler, per_batch = make_scheduler(optimizer, config, steps)
    return _Optimization(
        optimizer, scheduler, per_batch,
        scaler=torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"),
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        plateau=config.schedule == "plateau")


def _resume(model: nn.Module, opt: _Optimization, config: TrainConfig, last_path: Path, steps: int,
            payload: dict[str, Any] | None = None) -> _RunState:
    """Load `last_path` (or its `payload`, read already) into the model, optimizer, schedule and scaler; the
    state of the run it left."""
    if payload is None and not last_path.is_file():
        raise UsageProblem(f"nothing to resume: {last_path} does not exist")
    state = load_training_checkpoint(last_path) if payload is None else payload
    if state["config"] != dict(getattr(model, "config", {})):
        raise UsageProblem(f"{last_path} holds {state['config'].get('name')} {state['config']}, "
                           f"not this {getattr(model, 'config', {}).get('name')} run's model")
    model.load_state_dict(state["state_dict"])
    opt.optimizer.load_state_dict(state["optimizer"])
    if state["train_config"].get("epochs") == config.epochs:
        opt.scheduler.load_state_dict(state["scheduler"])
    else:  # a longer (or shorter) run: replay the new schedule up to where the old one stopped
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(int(state["epoch"]) * (steps if opt.per_batch else 1)):
                opt.step_schedule(state["history"][-1]["val_acc"])
    if state.get("scaler"):
        opt.scaler.load_state_dict(state["scaler"])
    return _RunState([dict(h) for h in state["history"]], int(state["best_epoch"]), float(state["best_val_acc"]),
                     int(state["epoch"]))


def _should_stop_early(config: TrainConfig, state: _RunState, epoch: int) -> bool:
    """True when `config.early_stop` epochs have passed since the best validation epoch."""
    return bool(config.early_stop and state.best_epoch and epoch - state.best_epoch >= config.early_stop)


def _train_one_epoch(model: nn.Module, batches, opt: _Optimization, config: TrainConfig, device: torch.device,
                     epoch: int, steps: int, bar: _Progress, task) -> tuple[float, float, int, float]:
    """At most `steps` optimizer steps over `batches`: (mean loss, accuracy, images seen, seconds)."""
    model.train()
    loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
    # Channel dropout draws from its own generator, seeded by (seed, epoch): a resumed run drops the same channels.
    drops = torch.Generator().manual_seed(config.seed * 100003 + epoch + 1) if config.channel_dropout else None
    for i, (x, y) in enumerate(batches):
        if i >= steps:
            break
        with _amp_context(config, device), _dropped_channels(model, x, config.channel_dropout, drops):
            logits = model(x)
            loss = opt.criterion(logits.float(), y)
        if not all_finite(loss):  # distributed: every rank stops at the same batch, none waits
            what = f"loss is {loss.item()}" if not torch.isfinite(loss) else "another process's loss is not finite"
            raise TrainingDiverged(f"training diverged: {what} at epoch {epoch + 1}, batch {i + 1} (lr {opt.lr:g}); "
                                   "lower --lr or change the optimizer")
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        if config.grad_clip:
            opt.scaler.unscale_(opt.optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        if opt.per_batch:
            opt.scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.update(task, seen / (time.perf_counter() - t0), loss_sum / seen)
    return loss_sum / seen, correct / seen, seen, time.perf_counter() - t0


def _dropped_channels(model: nn.Module, x: torch.Tensor, p: float, generator: torch.Generator | None):
    """The context a training step runs in: with channel dropout, a channel-agnostic net sees only each
    sample's kept channels (`nets.channel_agnostic.channel_mask`, at least one kept); else nothing changes."""
    import contextlib

    from nets.channel_agnostic import channel_mask, random_channel_mask

    if not p:
        return contextlib.nullcontext()
    mask = random_channel_mask(x.shape[0], x.shape[1], p, generator).to(x.device)
    return channel_mask(model, mask)


def _validate(model: nn.Module, batches, device: torch.device, config: TrainConfig, epoch: int,
              parallel=None) -> tuple[float, float]:
    """(val loss, val accuracy); a non-finite loss stops the run before anything of this epoch is saved.
    Distributed (`parallel`), each rank scores its share and every rank gets the whole split's figures."""
    val_loss, val_acc = (parallel.evaluate(model, batches, config.amp) if parallel
                         else evaluate(model, batches, device, config.amp))
    if not math.isfinite(val_loss):
        raise TrainingDiverged(f"training diverged: validation loss is {val_loss} after epoch {epoch + 1}; "
                               "lower --lr")
    return val_loss, val_acc


def _save_epoch(model: nn.Module, bundle: DatasetBundle, config: TrainConfig, opt: _Optimization, state: _RunState,
                entry: dict[str, float], out_dir: Path, write: bool = True) -> None:
    """best.pt and best.json when the epoch is the best yet; always last.pt and history.json. Without `write`
    (a distributed run's ranks other than 0) only the best epoch is noted."""
    epoch, val_acc = int(entry["epoch"]), entry["val_acc"]
    if val_acc > state.best_acc:
        state.best_acc, state.best_epoch = val_acc, epoch
    if not write:
        return
    if state.best_epoch == epoch:
        payload = checkpoint_payload(model, bundle, epoch, val_acc, config, state.history)
        save_checkpoint(payload, out_dir / "best.pt")
        write_text(out_dir / "best.json", json.dumps({k: v for k, v in payload.items() if k != "state_dict"},
                                                     indent=2, default=str) + "\n")
    last = checkpoint_payload(model, bundle, epoch, val_acc, config, state.history)
    last.update(optimizer=opt.optimizer.state_dict(), scheduler=opt.scheduler.state_dict(),
                scaler=opt.scaler.state_dict() if opt.scaler.is_enabled() else {},
                best_epoch=state.best_epoch, best_val_acc=state.best_acc)
    save_checkpoint(last, out_dir / "last.pt")
    write_text(out_dir / "history.json", json.dumps(state.history, indent=2) + "\n")


def _epoch_line(entry: dict[str, float], epochs: int) -> str:
    return (f"epoch {entry['epoch']}/{epochs}  train loss {entry['train_loss']:.4f} "
            f"acc {entry['train_acc']:.4f}  val loss {entry['val_loss']:.4f} acc {entry['val_acc']:.4f}  "
            f"lr {entry['lr']:.3g}  {entry['img_s']:.0f} img/s")


def train_model(model: nn.Module, bundle: DatasetBundle, config: TrainConfig, out_dir: str | Path,
                progress: bool = True, resume: bool = False,
                on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train `model` on `bundle` and keep the best validation epoch in `out_dir/best.pt`.

    Args:
        model: a net from `nets.create_model` (its `.config` is stored with the weights).
        bundle: from `bench.data.load_dataset`; its in_chans and num_classes must fit the model.
        config: optimizer, schedule, epochs, ... (`TrainConfig`).
        out_dir: where best.pt, best.json, last.pt, history.json and curves.png go.
        progress: show a progress bar with img/s on stderr (False for studies and tests).
        resume: continue from `out_dir/last.pt` (weights, optimizer, scheduler, history).
        on_epoch: called with each epoch's history entry.

    Raises:
        TrainingDiverged: the loss became nan/inf (nothing of that epoch is saved).
        UsageProblem: resume from a checkpoint of another model, or nothing to resume; a --subset too
            small to leave every split an image (see `check_splits`); channel dropout on a net that is not
            channel-agnostic (built with in_chans="any").
    """
    check_splits(bundle)  # an empty validation split would otherwise look like a diverged run
    _check_model_fits(model, bundle, config)
    out_dir = Path(out_dir)
    parallel = data_parallel(config.batch_size, config.sync_bn)  # None: one process, as always
    writes = parallel is None or parallel.is_main  # only rank 0 writes files and shows progress
    if writes:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = parallel.device if parallel else _training_device(config)
    torch.manual_seed(config.seed)
    model.to(device)
    loaders = make_loaders(bundle, config.batch_size, augment=config.augment, workers=config.workers,
                           seed=config.seed, device=device)
    if parallel:
        loaders = parallel.shard(loaders)
    steps = len(loaders.train) if config.max_batches is None else min(len(loaders.train), config.max_batches)
    if steps == 0:
        raise DataProblem(f"the training split of {bundle.name} is empty")
    trained = parallel.wrap(model) if parallel else model  # DDP syncs gradients; `model` is what is saved
    opt = _setup_optimization(model, config, device, steps)
    last_path = out_dir / "last.pt"
    payload = parallel.read_checkpoint(last_path) if parallel and resume else None
    state = _resume(model, opt, config, last_path, steps, payload) if resume else _RunState()

    t_run = time.perf_counter()
    stopped_early = False
    with _Progress(progress and writes) as bar:
        for epoch in range(state.start_epoch, config.epochs):
            if _should_stop_early(config, state, epoch):
                stopped_early = True
                break
            anneal_temperature(model, epoch, config.epochs)
            loaders.train.set_epoch(epoch)
            task = bar.start(f"epoch {epoch + 1}/{config.epochs}", steps)
            t0 = time.perf_counter()
            train_loss, train_acc, seen, train_seconds = _train_one_epoch(
                trained, loaders.train, opt, config, device, epoch, steps, bar, task)
            if parallel:
                train_loss, train_acc, seen, train_seconds = parallel.epoch_totals(train_loss, train_acc, seen,
                                                                                   train_seconds)
            val_loss, val_acc = _validate(model, loaders.val, device, config, epoch, parallel)
            lr = opt.lr  # the rate this epoch trained at, before the per-epoch step changes it
            if not opt.per_batch:
                opt.step_schedule(val_acc)
            entry = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                     "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                     "seconds": round(time.perf_counter() - t0, 3), "img_s": round(seen / train_seconds, 1)}
            state.history.append(entry)
            _save_epoch(model, bundle, config, opt, state, entry, out_dir, write=writes)
            bar.done(task, _epoch_line(entry, config.epochs))
            if on_epoch and writes:
                on_epoch(entry)
    if not state.history:
        raise UsageProblem(f"nothing to train: {last_path} already finished {state.start_epoch} of {config.epochs} epochs")
    if parallel:
        parallel.unwrap(model)
    curves = None
    try:
        curves = plot_history(state.history, out_dir / "curves.png",
                              title=str(getattr(model, "config", {}).get("name", ""))) if writes else None
    except Exception:  # a plot is a convenience; never lose a finished run over it
        curves = None
    if config.restore_best and writes and state.best_epoch != state.history[-1]["epoch"]:
        # The model ends holding what best.pt holds (train_config.restore_best says so in the record); only the
        # process that wrote best.pt reads it back.
        model.load_state_dict(load_training_checkpoint(out_dir / "best.pt")["state_dict"])
    img_s = [h["img_s"] for h in state.history]
    return TrainResult(state.history, state.best_epoch, state.best_acc, out_dir / "best.pt", last_path, curves,
                       stopped_early, time.perf_counter() - t_run, sum(img_s) / len(img_s), config.to_dict(),
                       parallel.describe() if parallel else None)
