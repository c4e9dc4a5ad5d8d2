"""The channel-agnostic stem: one model instance for 1, 2 and 3 channels at any size, blind to
the order of the channels, and masked training equal to feeding only the kept channels."""

from __future__ import annotations

import pytest
import torch

import nets
from nets import DynamicConv2d, set_temperature
from nets.channel_agnostic import ChannelAgnosticStem, channel_mask, is_channel_agnostic, random_channel_mask
from nets.errors import ModelConfigError

#: A dynamic net, its static twin, and the VGG pair (CIFAR head), all small enough at 8-16 px.
PAIRS = [("dy_resnet20", {}), ("resnet20", {}), ("dy_vgg11", {"small_input": True}), ("vgg11_bn", {"small_input": True})]


@pytest.fixture(scope="module", params=PAIRS, ids=[name for name, _ in PAIRS])
def model(request):
    name, kwargs = request.param
    torch.manual_seed(0)
    return nets.create_model(name, num_classes=10, in_chans="any", **kwargs).eval()


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float summation order, relative to the logits' scale (VGG's init makes them ~1e-5)."""
    scale = float(expected.abs().max())
    assert float((actual - expected).abs().max()) <= 1e-4 * scale + 1e-9, (actual, expected)


@torch.no_grad()
@pytest.mark.parametrize("size", [8, 16])
def test_one_instance_takes_one_two_and_three_channels(model, size):
    for channels in (1, 2, 3):
        out = model(torch.randn(2, channels, size, size))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


@torch.no_grad()
def test_the_order_of_the_channels_does_not_matter(model):
    x = torch.randn(3, 3, 16, 16)
    reference = model(x)
    for order in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
        assert_same(model(x[:, order]), reference)
    other = model(torch.randn(3, 3, 16, 16))
    assert (other - reference).abs().max() > 1e-2 * reference.abs().max()  # the test can fail


@torch.no_grad()
def test_grey_copied_to_rgb_gives_the_grey_logits(model):
    """Mean and max of equal planes are that plane: on grey data every subset carries, and gives, the same."""
    grey = torch.randn(2, 1, 16, 16)
    for copies in (2, 3):
        assert_same(model(grey.expand(-1, copies, -1, -1)), model(grey))


@torch.no_grad()
def test_a_mask_equals_dropping_the_channels(model):
    x = torch.randn(3, 3, 16, 16)
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])
    with channel_mask(model, mask):
        masked = model(x)
    for i, keep in enumerate(mask):
        assert_same(masked[i], model(x[i:i + 1, keep])[0])
    assert all(m.channel_mask is None for m in model.modules() if isinstance(m, ChannelAgnosticStem))


def test_config_records_any_and_the_rest_of_the_net_is_unchanged():
    agnostic = nets.create_model("dy_resnet20", in_chans="any")
    rgb = nets.create_model("dy_resnet20", in_chans=3)
    assert agnostic.config["in_chans"] == "any" and is_channel_agnostic(agnostic) and not is_channel_agnostic(rgb)
    rest = {k: v.shape for k, v in rgb.state_dict().items() if not k.startswith("conv1.")}
    assert {k: v.shape for k, v in agnostic.state_dict().items() if not k.startswith("conv1.")} == rest
    assert isinstance(agnostic.conv1, ChannelAgnosticStem) and agnostic.conv1.dynamic  # the DY net's stem attends
    assert not nets.create_model("resnet20", in_chans="any").conv1.dynamic  # its static twin's does not
    assert isinstance(nets.create_model("vgg11_bn", in_chans="any", small_input=True).features[0], ChannelAgnosticStem)


def test_dynamic_stem_anneals_with_the_net():
    model = nets.create_model("dy_resnet20", in_chans="any")
    count = set_temperature(model, 30.0)
    assert count == sum(isinstance(m, DynamicConv2d) for m in model.modules()) + 1
    assert model.conv1.temperature == 30.0


def test_checkpoint_round_trip_rebuilds_from_the_config():
    model = nets.create_model("resnet20", in_chans="any", num_classes=4)
    again = nets.create_model(**model.config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_random_channel_mask_keeps_at_least_one_channel():
    generator = torch.Generator().manual_seed(0)
    mask = random_channel_mask(512, 3, 0.9, generator)
    assert mask.shape == (512, 3) and mask.any(dim=1).all()
    assert mask.float().mean() < 0.5  # most channels dropped at p=0.9, still one per sample
    assert random_channel_mask(4, 3, 0.0).all()


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_channel_dropout_outside_zero_one_is_refused(p):
    with pytest.raises(ModelConfigError, match=r"\[0, 1\)"):
        random_channel_mask(4, 3, p)


def test_zero_channels_are_refused():
    model = nets.create_model("resnet20", in_chans="any").eval()
    with pytest.raises(ModelConfigError, match="at least one input channel"):
        model(torch.randn(2, 0, 8, 8))


def test_a_mask_must_keep_a_channel_and_needs_an_agnostic_net():
    model = nets.create_model("resnet20", in_chans="any")
    with pytest.raises(ModelConfigError, match="at least one channel"):
        with channel_mask(model, torch.tensor([[True, False], [False, False]])):
            pass
    with pytest.raises(ModelConfigError, match="in_chans='any'"):
        with channel_mask(nets.create_model("resnet20"), torch.ones(2, 3, dtype=torch.bool)):
            pass


def test_any_on_a_net_without_the_stem_names_those_with_it():
    assert set(nets.channel_agnostic_models()) >= {"dy_resnet20", "resnet20", "dy_vgg11", "vgg11_bn", "dy_resnet18",
                                                   "resnet18", "dy_vgg19", "vgg19_bn"}
    for name in ("keras_resnet", "template_cnn", "rrdb_attention_net"):
        with pytest.raises(ModelConfigError, match=rf"{name} has no channel-agnostic stem.*dy_resnet20"):
            nets.create_model(name, in_chans="any")
    with pytest.raises(ModelConfigError, match="positive integer or 'any'"):
        nets.create_model("resnet20", in_chans="all")


def test_masked_training_step_reaches_the_stem():
    model = nets.create_model("dy_resnet20", in_chans="any", num_classes=3)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    with channel_mask(model, random_channel_mask(4, 3, 0.5, torch.Generator().manual_seed(1))):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    stem = model.conv1
    assert stem.encode.weight.grad is not None and stem.attn_fc1.weight.grad is not None
    assert torch.isfinite(stem.encode.weight.grad).all()
