"""Dynamic-convolution nets: VGGs and ResNets whose convs attend over K kernels.

Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020
(arXiv:1912.03458). Every conv but the first becomes a `nets.layers.DynamicConv2d` (K kernels
mixed per sample by squeeze-and-excitation attention; BatchNorm and activation follow as
before); the paper keeps the first layer static. The nets are the static families' own code
with the conv injected through `conv_layer`, so DY-VGG-19 is VGG-19-BN layer for layer.

Settings every builder takes:
    kernels: K (default 4, the paper's).
    temperature: the attention's softmax temperature (default 1, the value after annealing);
        train with `nets.set_temperature(model, temperature_schedule(epoch))`, which
        anneals 30 -> 1 over the first 10 epochs as the paper does.

How they run is not a setting of the builders but of the layers, and changes no number. By default
(`mode="auto"`) eager mode, torch.compile and fixed-batch exports run the grouped form (one grouped conv
per layer, the batch folded into the groups), or at batches above 1 in layers with a tiny output (VGG's
4x4 and 2x2 at 32x32 input) the expand form (one static conv with all K kernels); an export that keeps
the batch symbolic gets the unfold form (im2col + batched matmul). `nets.dynamic_conv_mode(model,
"unfold")` picks one by hand (see DynamicConv2d).

With ``in_chans="any"`` the first layer becomes the channel-agnostic stem (`nets.channel_agnostic`) in its
dynamic form (K kernels mixed per input plane by attention, same K and temperature as the net's convs);
the static twins built with in_chans="any" get the same stem with static shared kernels.
"""

from __future__ import annotations

from nets._registry import register_model
from nets.channel_agnostic import channel_agnostic_layer
from nets.families.resnet import BasicBlock, ResNet, _cifar_resnet, _imagenet_resnet
from nets.families.vgg import VGG, _vgg
from nets.layers import dynamic_conv_layer


def _dynamic_layers(kernels: int, temperature: float, act: str) -> dict:
    """The conv factories of a DY net: dynamic convs, and with in_chans="any" the dynamic channel-agnostic stem."""
    return dict(conv_layer=dynamic_conv_layer(kernels, temperature, act),
                stem_layer=channel_agnostic_layer(kernels, temperature, act))


def _dy_vgg(depth: int, kernels: int = 4, temperature: float = 1.0, act: str = "relu", **kwargs) -> VGG:
    # BatchNorm after every dynamic conv, as in the paper's DY-CNNs.
    return _vgg(depth, True, act=act, **_dynamic_layers(kernels, temperature, act), **kwargs)


@register_model("vgg", "dynamic", input_size=224, twin="vgg11_bn", channel_agnostic=True)
def dy_vgg11(**kwargs) -> VGG:
    """DY-VGG-11: VGG-11-BN with dynamic convolution (K=4) in every conv but the first."""
    return _dy_vgg(11, **kwargs)


@register_model("vgg", "dynamic", input_size=224, twin="vgg13_bn", channel_agnostic=True)
def dy_vgg13(**kwargs) -> VGG:
    """DY-VGG-13: VGG-13-BN with dynamic convolution (K=4) in every conv but the first."""
    return _dy_vgg(13, **kwargs)


@register_model("vgg", "dynamic", input_size=224, twin="vgg16_bn", channel_agnostic=True)
def dy_vgg16(**kwargs) -> VGG:
    """DY-VGG-16: VGG-16-BN with dynamic convolution (K=4) in every conv but the first."""
    return _dy_vgg(16, **kwargs)


@register_model("vgg", "dynamic", input_size=224, twin="vgg19_bn", channel_agnostic=True)
def dy_vgg19(**kwargs) -> VGG:
    """DY-VGG-19: VGG-19-BN with dynamic convolution (K=4) in every conv but the first."""
    return _dy_vgg(19, **kwargs)


@register_model("resnet", "dynamic", input_size=224, twin="resnet18", channel_agnostic=True)
def dy_resnet18(kernels: int = 4, temperature: float = 1.0, act: str = "relu", **kwargs) -> ResNet:
    """DY-ResNet-18 (Chen et al. Table 2): ResNet-18 with dynamic convolution in every block conv."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), act=act, **_dynamic_layers(kernels, temperature, act), **kwargs)


@register_model("cifar_resnet", "dynamic", twin="resnet20", channel_agnostic=True)
def dy_resnet20(kernels: int = 4, temperature: float = 1.0, act: str = "relu", **kwargs) -> ResNet:
    """DY-ResNet-20: CIFAR ResNet-20 (option A) with dynamic convolution in every block conv."""
    return _cifar_resnet(20, act=act, **_dynamic_layers(kernels, temperature, act), **kwargs)
