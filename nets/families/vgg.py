"""VGG-11/13/16/19, with and without BatchNorm.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015 (arXiv:1409.1556), Table 1 configurations A, B, D and E; the BatchNorm variants are
torchvision's (Ioffe & Szegedy, arXiv:1502.03167). With the default ImageNet head the
parameter counts equal torchvision's (vgg16: 138.4M at 1000 classes).

Two heads:
- ``small_input=False`` (default, the paper's): 7x7 adaptive average pool, then
  FC-4096, FC-4096 (each with activation and dropout) and the classifier. At 1000 classes most
  of the parameters (~120M) sit here.
- ``small_input=True`` (CIFAR-size images, the usual adaptation): global average pool and one
  linear layer, 512 -> classes; the conv trunk is unchanged.

Both heads run on 28x28 and 32x32 inputs: the max-pools use ``ceil_mode=True``, so five
halvings take 28 to 1x1 (28, 14, 7, 4, 2, 1) instead of to 0x0. At any multiple of 32, 224
included, ceil and floor agree, so the net is torchvision's exactly.

``in_chans="any"`` swaps the first conv for a channel-agnostic stem (`nets.channel_agnostic`): one
net for any number of input channels; the trunk and heads are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from nets._registry import register_model
from nets.channel_agnostic import ANY_CHANNELS, channel_agnostic_layer
from nets.layers import create_act

#: Table 1 of the paper: numbers are 3x3 conv widths, "M" a 2x2 max-pool.
cfgs: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-11
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # VGG-16
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

#: depth -> configuration letter.
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}


def make_layers(cfg: Sequence[int | str], batch_norm: bool = False, in_chans: int | str = 3, act: str = "relu",
                conv_layer: Callable[..., nn.Module] = nn.Conv2d,
                stem_layer: Callable[..., nn.Module] | None = None) -> nn.Sequential:
    """The conv trunk of a configuration: conv3x3 [+ BN] + act per number, max-pool per "M".

    `conv_layer` builds every conv but the first, which stays nn.Conv2d: dynamic nets keep the
    first layer static (Chen et al. 2020 §4), and for a static net it makes no difference.
    With ``in_chans="any"`` the first conv is `stem_layer` (default: the static channel-agnostic
    stem, `nets.channel_agnostic`), which takes any number of channels.
    """
    layers: list[nn.Module] = []
    channels = in_chans
    first_conv = nn.Conv2d
    if in_chans == ANY_CHANNELS:
        first_conv = stem_layer or channel_agnostic_layer(act=act)
    for i, v in enumerate(cfg):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        make_conv = first_conv if i == 0 else conv_layer
        layers.append(make_conv(channels, int(v), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(create_act(act))
        channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG: conv trunk (`features`), then the ImageNet or the small-input head.

    Args:
        features: the trunk, from `make_layers`.
        num_classes: outputs of the classifier.
        act: activation of the ImageNet head's FC layers.
        small_input: True: global pool + one linear (CIFAR-size); False: the paper's 3 FC layers.
        dropout: dropout probability in the ImageNet head.
        num_features: channels the trunk ends with.
    """

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, act: str = "relu",
                 small_input: bool = False, dropout: float = 0.5, num_features: int = 512):
        super().__init__()
        self.features = features
        self.small_input = small_input
        self.num_features = num_features
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(num_features, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(num_features * 7 * 7, 4096), create_act(act), nn.Dropout(p=dropout),
                nn.Linear(4096, 4096), create_act(act), nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),
            )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _vgg(depth: int, batch_norm: bool, in_chans: int | str = 3, act: str = "relu", num_classes: int = 1000,
         conv_layer: Callable[..., nn.Module] = nn.Conv2d, stem_layer: Callable[..., nn.Module] | None = None,
         **kwargs) -> VGG:
    features = make_layers(cfgs[DEPTHS[depth]], batch_norm, in_chans=in_chans, act=act, conv_layer=conv_layer,
                           stem_layer=stem_layer)
    return VGG(features, num_classes=num_classes, act=act, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A), 132.9M params at 1000 classes."""
    return _vgg(11, False, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm."""
    return _vgg(11, True, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B), 133.0M params at 1000 classes."""
    return _vgg(13, False, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm."""
    return _vgg(13, True, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D), 138.4M params at 1000 classes."""
    return _vgg(16, False, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm."""
    return _vgg(16, True, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E), 143.7M params at 1000 classes."""
    return _vgg(19, False, **kwargs)


@register_model("vgg", "static", input_size=224, channel_agnostic=True)
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm."""
    return _vgg(19, True, **kwargs)
