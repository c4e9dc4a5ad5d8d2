"""`drop_rate`: classifier-head dropout for every ResNet (timm's name), recorded in the model config."""

from __future__ import annotations

import pytest
import torch

import nets
from nets.errors import ModelConfigError
from nets.families.resnet import ResNet

#: Every registered net built on nets.families.resnet.ResNet, but the giants (too slow to build per test).
RESNETS = [n for n in nets.list_models() if nets.model_entry(n).family in ("resnet", "cifar_resnet", "keras_resnet")
           and n not in ("resnet1202", "plain1202", "resnet152", "plain152", "resnet101", "plain101")]


@pytest.mark.parametrize("name", RESNETS)
def test_every_resnet_takes_drop_rate_without_new_parameters(name):
    torch.manual_seed(0)
    plain = nets.create_model(name, in_chans=1)
    torch.manual_seed(0)
    dropped = nets.create_model(name, in_chans=1, drop_rate=0.5)
    assert isinstance(dropped, ResNet) and dropped.config["drop_rate"] == 0.5 and "drop_rate" not in plain.config
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in dropped.parameters())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x)), "dropout is off in evaluation"
        torch.manual_seed(1)
        trained = dropped.train()(x)
        torch.manual_seed(1)
        assert not torch.equal(trained, plain.train()(x)), "dropout acts while training"


@pytest.mark.parametrize("bad", [1.0, -0.1, 2, "0.5", True])
def test_drop_rate_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ModelConfigError, match=r"drop_rate must be in \[0, 1\)"):
        nets.create_model("resnet20", drop_rate=bad)


def test_the_dynamic_resnet_takes_it_too():
    model = nets.create_model("dy_resnet20", drop_rate=0.2)
    assert model.config["drop_rate"] == 0.2


def test_keras_resnet_extra_blocks_deepens_every_stage():
    base = nets.create_model("keras_resnet")
    deeper = nets.create_model("keras_resnet", extra_blocks=2)
    assert [len(getattr(base, f"layer{i}")) for i in (1, 2, 3)] == [5, 4, 2]
    assert [len(getattr(deeper, f"layer{i}")) for i in (1, 2, 3)] == [7, 6, 4]
    assert deeper.config["extra_blocks"] == 2 and "extra_blocks" not in base.config
    with pytest.raises(ModelConfigError, match="extra_blocks"):
        nets.create_model("keras_resnet", extra_blocks=-1)
