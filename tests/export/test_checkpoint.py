"""export.checkpoint: the shapes of checkpoint we accept, and brief mismatch messages."""

from __future__ import annotations

import pytest
import torch

import nets
from export.checkpoint import apply_checkpoint, load_checkpoint, state_dict_mismatch
from export.errors import DataProblem, UsageProblem


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "config": {"name": "resnet20"}},
    lambda sd: {"model": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel
    lambda sd: {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}},  # torch.compile
])
def test_accepted_shapes(tmp_path, wrap):
    model = nets.create_model("resnet20")
    torch.save(wrap(model.state_dict()), tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert set(ckpt.state_dict) == set(model.state_dict())
    apply_checkpoint(nets.create_model("resnet20"), ckpt, "resnet20")


def test_config_and_extras_come_along(tmp_path):
    model = nets.create_model("resnet20", num_classes=4)
    torch.save({"state_dict": model.state_dict(), "config": dict(model.config), "normalization": {"mean": [0.1]},
                "optimizer": {"state": {}}}, tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.config["num_classes"] == 4
    assert ckpt.extra == {"normalization": {"mean": [0.1]}}  # optimizer state is not carried
    assert len(ckpt.sha256) == 64


def test_mismatch_names_keys_and_shapes():
    small = nets.create_model("resnet20")
    other = nets.create_model("resnet32", num_classes=3).state_dict()
    message = state_dict_mismatch(small, other)
    assert "fc.weight [3, 64] vs [10, 64]" in message and "unexpected key(s): layer1.3" in message
    with pytest.raises(UsageProblem, match="does not fit resnet20"):
        apply_checkpoint(small, load_checkpoint_from(other), "resnet20")
    assert state_dict_mismatch(small, small.state_dict()) is None


def load_checkpoint_from(state):
    from export.checkpoint import Checkpoint

    return Checkpoint(path="x.pt", sha256="0" * 64, state_dict=state)


def test_non_weights_payload_is_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "c.pt")
    with pytest.raises(DataProblem, match="holds no state dict"):
        load_checkpoint(tmp_path / "c.pt")
    torch.save([torch.zeros(1)], tmp_path / "l.pt")
    with pytest.raises(DataProblem, match="holds no state dict"):
        load_checkpoint(tmp_path / "l.pt")
