"""A checkpoint from `rbench train` carries its architecture (in_chans=1, ...): every command builds the model from it."""

from __future__ import annotations

import pytest
import torch

import nets
from bench.engines.sources import resolve_source
from bench.errors import UsageProblem
from bench.records.io import read_records

FAST = ("--warmup", "0", "--iters", "2", "--threads", "1")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def one_channel_checkpoint(tmp_path):
    """best.pt as `rbench train` writes it for resnet20 on 16x16 greyscale images with 4 classes."""
    torch.manual_seed(0)
    model = nets.create_model("resnet20", in_chans=1, num_classes=4, act="silu")
    path = tmp_path / "best.pt"
    torch.save({"format": 1, "state_dict": model.state_dict(), "config": dict(model.config),
                "dataset": {"name": "digits", "input_size": 16, "in_chans": 1}, "epoch": 1}, path)
    return path, model


def test_resolve_source_takes_the_architecture_from_the_checkpoint(one_channel_checkpoint):
    path, trained = one_channel_checkpoint
    source = resolve_source("resnet20", checkpoint=path)
    assert source.input_shape == (1, 16, 16)
    assert source.config == {"name": "resnet20", "num_classes": 4, "in_chans": 1, "act": "silu"}
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(source.module()(x), trained.eval()(x))
    assert resolve_source("resnet20", checkpoint=path, input_size=24).input_shape == (1, 24, 24)  # options win


def test_a_checkpoint_of_another_net_is_one_line(one_channel_checkpoint):
    with pytest.raises(UsageProblem, match="holds a resnet20, not a resnet32"):
        resolve_source("resnet32", checkpoint=one_channel_checkpoint[0])


@pytest.mark.parametrize("command", ["flops", "latency"])
def test_latency_and_flops_measure_the_trained_architecture(run_cli, results_dir, one_channel_checkpoint, command):
    path, _ = one_channel_checkpoint
    code, _, err = run_cli(command, "resnet20", "--checkpoint", path, "--out", results_dir,
                           *(FAST if command == "latency" else ()))
    assert code == 0, err
    (record,) = read_records(results_dir / f"{command}.jsonl")
    assert record["input_shape"] == [1, 16, 16] and record["source"]["checkpoint"] == str(path)
