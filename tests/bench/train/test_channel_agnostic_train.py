"""Training a channel-agnostic net with channel dropout, and evaluating it on channel subsets natively."""

from __future__ import annotations

import json

import pytest
import torch

import nets
from bench.data import load_dataset
from bench.errors import UsageProblem
from bench.train.loop import TrainConfig, load_training_checkpoint, parse_in_chans, train_model


@pytest.fixture(scope="module")
def rgb_digits():
    return load_dataset("digits", subset=100, input_size=8, channels="RGB")


def test_channel_dropout_training_keeps_in_chans_any(rgb_digits, tmp_path):
    torch.manual_seed(0)
    model = nets.create_model("dy_resnet20", num_classes=rgb_digits.num_classes, in_chans="any")
    config = TrainConfig(epochs=1, batch_size=32, optimizer="adam", max_batches=2, channel_dropout=0.5)
    before = model.conv1.encode.weight.detach().clone()
    result = train_model(model, rgb_digits, config, tmp_path, progress=False)
    payload = load_training_checkpoint(result.best_checkpoint)
    assert payload["config"]["in_chans"] == "any" and payload["train_config"]["channel_dropout"] == 0.5
    assert not torch.equal(model.conv1.encode.weight, before)  # the stem trained
    rebuilt = nets.create_model(**payload["config"])
    rebuilt.load_state_dict(payload["state_dict"])
    for channels in (1, 2, 3):
        assert torch.isfinite(rebuilt.eval()(torch.randn(2, channels, 8, 8))).all()


def test_channel_dropout_needs_an_agnostic_net(rgb_digits, tmp_path):
    model = nets.create_model("resnet20", num_classes=rgb_digits.num_classes, in_chans=3)
    with pytest.raises(UsageProblem, match="in_chans='any'"):
        train_model(model, rgb_digits, TrainConfig(max_batches=1, channel_dropout=0.3), tmp_path, progress=False)


@pytest.mark.parametrize("p", [-0.5, 1.0, 2.0])
def test_channel_dropout_outside_zero_one_is_a_usage_problem(p):
    with pytest.raises(UsageProblem, match=r"\[0, 1\)"):
        TrainConfig(channel_dropout=p)


def test_parse_in_chans():
    assert parse_in_chans(None) is None and parse_in_chans("ANY") == "any" and parse_in_chans("2") == 2
    for bad in ("0", "-1", "all", ""):
        with pytest.raises(UsageProblem, match="positive number of channels or 'any'"):
            parse_in_chans(bad)


def test_cli_train_any_then_accuracy_on_subsets_natively(run_cli, tmp_path, results_dir):
    run = tmp_path / "run"
    code, out, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "100", "--input-size", "8",
                             "--channels", "RGB", "--in-chans", "any", "--channel-dropout", "0.5", "--optimizer",
                             "adam", "-q", "--out", run, "--results", results_dir)
    assert code == 0, err
    assert json.loads((run / "best.json").read_text())["config"]["in_chans"] == "any"
    for subset in ("RG", "B"):
        code, out, err = run_cli("accuracy", "resnet20", "--checkpoint", run / "best.pt", "--engine", "torch,ort",
                                 "--channels", subset, "--channel-mode", "select", "--subset", "100", "--json",
                                 "--out", results_dir)
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert [r["input_shape"][0] for r in records] == [len(subset)] * 2
        assert records[1]["agreement"] == 1.0  # onnxruntime on the subset agrees with PyTorch


@pytest.mark.parametrize("args,message", [
    (["keras_resnet", "--in-chans", "any"], "keras_resnet has no channel-agnostic stem"),
    (["resnet20", "--in-chans", "any", "--channel-dropout", "1"], "channel dropout must be in [0, 1)"),
    (["resnet20", "--in-chans", "any", "--channel-dropout", "-0.1"], "channel dropout must be in [0, 1)"),
    (["resnet20", "--channel-dropout", "0.5"], "--channel-dropout needs --in-chans any"),
    (["resnet20", "--in-chans", "none"], "positive number of channels or 'any'"),
])
def test_cli_train_refuses_bad_channel_settings_in_one_line(run_cli, results_dir, args, message):
    code, _, err = run_cli("train", *args, "--dataset", "digits", "--results", results_dir)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_zero_channels_at_inference_is_one_line(run_cli, tmp_path):
    import export

    path = tmp_path / "any.onnx"
    export.to_onnx(nets.create_model("resnet20", in_chans="any"), path, (3, 8, 8), exporter="torchscript", opset=17)
    code, _, err = run_cli("latency", path, "--in-chans", "0", "--engine", "ort")
    # refused by the option's own range check, before anything loads
    assert code == 2 and "--in-chans" in err and "0 is not in the range" in err and len(err.strip().splitlines()) == 1
