"""Every registered net: builds, runs forward and backward, takes any in_chans and activation,
and has the parameter count of its reference (torchvision, He et al. 2016)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

import nets
from nets.layers import ACTIVATIONS, DynamicConv2d

ALL = nets.list_models()

# Deep or wide nets: covered by one forward at 32x32 (eval, no backward) to keep the file fast.
SLOW = {"resnet101", "plain101", "resnet152", "plain152", "resnet1202", "plain1202", "dy_resnet18",
        "dy_vgg11", "dy_vgg13", "dy_vgg16", "dy_vgg19"}

# The ImageNet VGG head holds ~120M parameters: tests run VGGs with the small-input head
# (the ImageNet head is checked on the meta device against torchvision below).
SMALL_HEAD = {n for n in ALL if "vgg" in n}


def build(name: str, **kwargs) -> nn.Module:
    if name in SMALL_HEAD:
        kwargs.setdefault("small_input", True)
    return nets.create_model(name, **kwargs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(fn, **kwargs) -> int:
    """Parameter count of fn(**kwargs) built on the meta device: no memory, no init time."""
    with torch.device("meta"):
        return n_params(fn(**kwargs))


def zoo_params(name: str, **kwargs) -> int:
    return meta_params(nets.create_model, name=name, **kwargs)


def test_zoo_holds_the_issue_nets():
    expected = {"vgg11", "vgg11_bn", "vgg19", "vgg19_bn", "template_cnn", "keras_resnet", "keras_plain",
                "dy_vgg19", "dy_resnet18", "dy_resnet20", "rrdb_attention_net", "resnet20", "plain20"}
    assert expected <= set(ALL)
    for name in ALL:
        assert nets.model_entry(name).kind in nets.KINDS


@pytest.mark.parametrize("name", ALL)
def test_forward_32(name):
    """(N, num_classes), finite, at 32x32 RGB; and gradients reach every parameter."""
    model = build(name, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    if name in SLOW:
        # Train mode: BatchNorm normalises by batch statistics. In eval mode a fresh resnet1202
        # (running stats 0/1, 600 residual additions) overflows to inf/nan, as He et al.'s
        # initialisation doubles the variance per block.
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 7) and torch.isfinite(y).all()
        return
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # SAGAN's gamma starts at 0, so its q/k/v get zero (but present) gradients; none may be None.
    assert not missing, missing


@pytest.mark.parametrize("name", [n for n in ALL if n not in SLOW])
def test_greyscale_28_with_silu(name):
    """in_chans=1 at 28x28 (Fashion-MNIST size) with act='silu': runs, and no ReLU is left anywhere."""
    model = build(name, num_classes=10, in_chans=1, act="silu")
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU not in kinds and nn.SiLU in kinds
    y = model(torch.randn(2, 1, 28, 28))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


GIANTS = {"resnet1202", "plain1202"}  # even building them takes a second: checked once, below


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("name", [n for n in ALL if n not in GIANTS])
def test_activation_replaces_every_activation(name, act):
    with torch.device("meta"):  # structure only: no memory, no time
        model = build(name, act=act, in_chans=1)
    acts = {type(m) for m in model.modules() if type(m) in ACTIVATIONS.values()}
    assert acts == {ACTIVATIONS[act]}


@pytest.mark.parametrize("name", sorted(SLOW - GIANTS))
def test_slow_nets_take_28x28_greyscale(name):
    with torch.device("meta"):  # shapes only: the forward above already checked the arithmetic
        model = build(name, in_chans=1, act="leaky_relu").eval()
        assert model(torch.empty(2, 1, 28, 28)).shape == (2, 10)


def test_giants_take_greyscale_and_silu():
    model = build("resnet1202", in_chans=1, act="silu")
    assert {type(m) for m in model.modules() if type(m) in ACTIVATIONS.values()} == {nn.SiLU}
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                  "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"])
def test_params_equal_torchvision(name):
    ours = zoo_params(name, num_classes=1000)
    assert ours == meta_params(getattr(torchvision.models, name), num_classes=1000)


def test_vgg_trunk_matches_torchvision_at_multiples_of_32():
    """ceil_mode pooling changes nothing where the size divides by 32 (224 included): same weights,
    same features as torchvision's trunk."""
    from torchvision.models.vgg import cfgs as tv_cfgs
    from torchvision.models.vgg import make_layers as tv_make_layers

    ours = nets.create_model("vgg11_bn", small_input=True).eval()
    ref = tv_make_layers(tv_cfgs["A"], batch_norm=True).eval()
    ref.load_state_dict(ours.features.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.features(x), ref(x))


@pytest.mark.parametrize("name,millions", [("resnet20", 0.27), ("resnet32", 0.46), ("resnet44", 0.66),
                                           ("resnet56", 0.85), ("resnet110", 1.7), ("resnet1202", 19.4)])
def test_cifar_params_match_he_et_al(name, millions):
    """He et al. 2016 Table 6, within 2%."""
    count = zoo_params(name)
    assert abs(count / 1e6 - millions) / millions < 0.02


def test_twins_link_both_ways_and_option_a_twins_share_params():
    for name in ALL:
        entry = nets.model_entry(name)
        if entry.kind in ("residual", "plain") and entry.twin:
            twin = nets.model_entry(entry.twin)
            assert twin.twin == name and twin.family == entry.family
            assert {entry.kind, twin.kind} == {"residual", "plain"}
    for depth in (20, 32, 44, 56, 110):  # option A: the shortcut has no parameters
        res = zoo_params(f"resnet{depth}")
        assert res == zoo_params(f"plain{depth}")
    # Projection shortcuts only exist for the shortcut, so a plain twin has fewer parameters.
    assert zoo_params("plain18") < zoo_params("resnet18")


@pytest.mark.parametrize("residual,plain", [("resnet20", "plain20"), ("resnet18", "plain18"),
                                            ("resnet50", "plain50"), ("keras_resnet", "keras_plain")])
def test_plain_twin_really_has_no_shortcut(residual, plain):
    """Zero the residual branch (the last BN's weight and bias) of an identity block: the residual
    block then passes a non-negative input through (act(0 + x) = x), the plain block gives 0."""
    for name, passes_through in ((residual, True), (plain, False)):
        model = nets.create_model(name).eval()
        block = model.layer1[-1]  # the last block of a stage adds the identity
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        nn.init.zeros_(last_bn.weight)
        nn.init.zeros_(last_bn.bias)
        channels = block.conv1.in_channels
        x = torch.rand(2, channels, 8, 8)
        with torch.no_grad():
            out = block(x)
        if passes_through:
            torch.testing.assert_close(out, x)
        else:
            assert torch.count_nonzero(out) == 0


def test_dynamic_nets_use_dynamic_conv_except_the_first_layer():
    for name in ("dy_vgg19", "dy_resnet18", "dy_resnet20"):
        with torch.device("meta"):
            model = nets.create_model(name, kernels=3, temperature=5.0)
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, DynamicConv2d))]
        assert isinstance(convs[0], nn.Conv2d)
        assert all(isinstance(m, DynamicConv2d) for m in convs[1:])
        assert all(m.kernels == 3 and m.temperature == 5.0 for m in convs[1:])
        assert nets.model_entry(name).kind == "dynamic"


def test_dynamic_vgg_is_vgg_bn_layer_for_layer():
    """DY-VGG-19 with K=1 holds VGG-19-BN's convs (plus the attention): same layer sequence."""
    with torch.device("meta"):
        dy = nets.create_model("dy_vgg19", kernels=1, small_input=True)
        vgg = nets.create_model("vgg19_bn", small_input=True)
    names = lambda m: [type(x).__name__.replace("DynamicConv2d", "Conv2d") for x in m.features]  # noqa: E731
    assert names(dy) == names(vgg)


def test_vgg_small_input_head_is_global_pool_and_linear():
    model = nets.create_model("vgg16", small_input=True)
    assert isinstance(model.classifier[-1], nn.Linear) and len(model.classifier) == 1
    assert n_params(model) < 15e6  # no 4096-wide FC layers


def _stem(model: nn.Module) -> list:
    conv = model.conv1
    return [model.stem, conv.kernel_size, conv.stride, conv.padding, type(model.maxpool).__name__]


def test_resnet_stems_are_two_and_small_is_an_alias_of_cifar():
    """'small' and 'cifar' always built the same 3x3/1 stem: one stem, two accepted names."""
    from nets.families.resnet import BasicBlock, ResNet

    build = lambda stem: ResNet(BasicBlock, (1, 1), widths=(16, 32), num_classes=10, stem=stem)  # noqa: E731
    small, cifar, imagenet = build("small"), build("cifar"), build("imagenet")
    assert _stem(small) == _stem(cifar) == ["cifar", (3, 3), (1, 1), (1, 1), "Identity"]
    assert _stem(imagenet) == ["imagenet", (7, 7), (2, 2), (3, 3), "MaxPool2d"]
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in cifar.state_dict().items()}
    # The registry's nets: CIFAR ResNets and small_input ImageNet ResNets open with the same stem.
    assert _stem(nets.create_model("resnet18", small_input=True)) == _stem(nets.create_model("resnet20"))
    assert nets.create_model("resnet18").stem == "imagenet"
    with pytest.raises(ValueError, match="'imagenet', 'cifar', 'small'"):
        build("tiny")


def test_rrdb_attention_net_starts_with_identity_attention():
    model = nets.create_model("rrdb_attention_net").eval()
    assert model.attention.gamma.item() == 0
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.attention(x), x)
