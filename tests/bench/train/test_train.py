"""bench.train.loop: brief runs beat chance, checkpoints load weights-only, runs resume, nan stops."""

from __future__ import annotations

import json

import pytest
import torch

import nets
from bench.data import load_dataset, make_loaders
from bench.errors import UsageProblem
from bench.train.loop import TrainConfig, TrainingDiverged, anneal_temperature, evaluate, train_model


def _test_accuracy(model, bundle) -> float:
    return evaluate(model, make_loaders(bundle, 256).test, torch.device("cpu"))[1]


def test_digits_training_beats_chance(trained_digits_run):
    # trained_digits_run (conftest): resnet20, digits subset 900 at 16x16, 2 epochs of Adam.
    history = json.loads((trained_digits_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "img_s"}
    payload = torch.load(trained_digits_run / "best.pt", weights_only=True)
    model = nets.create_model("resnet20", num_classes=10, in_chans=1)
    model.load_state_dict(payload["state_dict"])
    bundle = load_dataset("digits", subset=900, input_size=16)
    assert _test_accuracy(model, bundle) > 1 / 10 + 0.15
    assert (trained_digits_run / "curves.png").stat().st_size > 1000


def test_imagefolder_training_beats_chance(tmp_path, synthetic_imagefolder):
    bundle = load_dataset(f"imagefolder:{synthetic_imagefolder}")
    model = nets.create_model("resnet20", num_classes=3, in_chans=3)
    result = train_model(model, bundle, TrainConfig(epochs=1, optimizer="adam", batch_size=16, augment=("flip",)),
                         tmp_path, progress=False)
    assert result.best_val_acc > 1 / 3 + 0.2


def test_checkpoint_loads_weights_only(tmp_path):
    bundle = load_dataset("digits", subset=120, input_size=8)
    model = nets.create_model("resnet20", num_classes=10, in_chans=1, act="silu")
    result = train_model(model, bundle, TrainConfig(epochs=1, batch_size=32), tmp_path, progress=False)
    payload = torch.load(result.best_checkpoint, weights_only=True)
    assert payload["config"] == {"name": "resnet20", "num_classes": 10, "in_chans": 1, "act": "silu"}
    assert payload["normalization"] == {"mean": list(bundle.mean), "std": list(bundle.std)}
    assert payload["dataset"]["name"] == "digits" and payload["epoch"] == 1
    rebuilt = nets.create_model(**{"name": "resnet20", **{k: v for k, v in payload["config"].items() if k != "name"}})
    rebuilt.load_state_dict(payload["state_dict"])
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["config"] == payload["config"] and "state_dict" not in sidecar
    assert "optimizer" in torch.load(result.last_checkpoint, weights_only=True)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "plateau"])
def test_interrupted_run_resumes(tmp_path, schedule):
    bundle = load_dataset("digits", subset=120, input_size=8)
    config = TrainConfig(epochs=3, batch_size=32, schedule=schedule, optimizer="sgd", lr=0.05)

    def interrupt_after_first(entry):
        if entry["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_model(nets.create_model("plain20", in_chans=1), bundle, config, tmp_path, progress=False,
                    on_epoch=interrupt_after_first)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    result = train_model(nets.create_model("plain20", in_chans=1), bundle, config, tmp_path, progress=False, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert torch.load(result.best_checkpoint, weights_only=True)["epoch"] == result.best_epoch
    with pytest.raises(UsageProblem, match="holds plain20"):
        train_model(nets.create_model("resnet20", in_chans=1), bundle, config, tmp_path, progress=False, resume=True)


def test_nan_loss_stops(tmp_path):
    bundle = load_dataset("digits", subset=120, input_size=8)
    with pytest.raises(TrainingDiverged, match="diverged"):
        train_model(nets.create_model("resnet20", in_chans=1), bundle, TrainConfig(epochs=1, lr=1e30, batch_size=16),
                    tmp_path, progress=False)
    assert not (tmp_path / "best.pt").exists()


def test_early_stop(tmp_path):
    bundle = load_dataset("digits", subset=60, input_size=8)
    # lr so small that validation accuracy never improves after the first epoch
    result = train_model(nets.create_model("plain20", in_chans=1), bundle,
                         TrainConfig(epochs=6, lr=1e-12, early_stop=1, batch_size=64), tmp_path, progress=False)
    assert result.stopped_early and len(result.history) < 6


def test_model_must_fit_the_data(tmp_path):
    bundle = load_dataset("digits", subset=60, input_size=8)
    with pytest.raises(UsageProblem, match="in_chans=3 but digits gives 1"):
        train_model(nets.create_model("resnet20", in_chans=3), bundle, TrainConfig(), tmp_path, progress=False)


def test_bad_settings_are_usage_problems():
    with pytest.raises(UsageProblem, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(UsageProblem, match="augmentation"):
        TrainConfig(augment=("spin",))  # no such augmentation


def test_dynamic_nets_anneal_their_temperature():
    model = nets.create_model("dy_resnet20", num_classes=10, in_chans=1)
    temperatures = [anneal_temperature(model, epoch, 20) for epoch in (0, 5, 10, 15)]
    assert temperatures == [30.0, 15.5, 1.0, 1.0]
    assert anneal_temperature(model, 0, 1) == 1.0  # a one-epoch run trains at the final temperature
    assert anneal_temperature(nets.create_model("resnet20"), 0, 20) is None
