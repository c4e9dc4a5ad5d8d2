"""ResNets and their plain twins.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385):
- ImageNet ResNet-18/34/50/101/152 (§3.3, Table 1) with projection shortcuts where the shape
  changes (option B) and the stride on the 3x3 conv of a bottleneck (torchvision's "v1.5"), so
  parameter counts equal torchvision's;
- CIFAR ResNet-20/32/44/56/110/1202 (§4.2): 6n+2 layers, three stages of 16/32/64 channels,
  a 3x3 stem and the parameter-free option-A shortcut (stride-2 subsampling + zero channel
  padding), with option B (1x1 projection) as a setting.

A plain net is the same code with `shortcut=False`: the blocks are identical, only the
addition of the shortcut is switched off (and an option-B projection, which only serves the
shortcut, is not built).

ImageNet-style stems at small inputs: the 7x7/2 conv + 3x3/2 max-pool stem divides the
resolution by 4, so a 32x32 input reaches the last stage at 1x1 and still works (adaptive
average pooling). `small_input=True` swaps it for the CIFAR stem (a 3x3/1 conv without
max-pool, He et al. §4.2), which keeps 4x4 at the last stage for a 32x32 input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nets._registry import register_model
from nets.channel_agnostic import ANY_CHANNELS, channel_agnostic_layer
from nets.errors import ModelConfigError
from nets.layers import create_act

#: Builds a conv with nn.Conv2d's signature; injected so dynamic nets reuse these blocks.
ConvLayer = Callable[..., nn.Module]

#: The stems a ResNet can open with: the ImageNet 7x7/2 conv + 3x3/2 max-pool, or the CIFAR 3x3/1 conv.
STEMS = ("imagenet", "cifar")
#: Other names accepted for a stem. 'small' (the name `small_input=True` used to pass) always built
#: the CIFAR stem's layers; it stays accepted so that code and configs naming it still build.
STEM_ALIASES = {"small": "cifar"}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, conv_layer: ConvLayer = nn.Conv2d) -> nn.Module:
    """3x3 convolution with padding, no bias (a BatchNorm follows)."""
    return conv_layer(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, conv_layer: ConvLayer = nn.Conv2d) -> nn.Module:
    """1x1 convolution, no bias."""
    return conv_layer(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample by `stride` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes
        if self.extra < 0:
            raise ValueError("option-A shortcut cannot reduce channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad the channel dimension (dim 1) with zeros at both ends, half each side.
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 convs; the shortcut adds the input (or its projection) before the last activation."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 act: str = "relu", shortcut: bool = True, conv_layer: ConvLayer = nn.Conv2d):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, conv_layer)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = create_act(act)
        self.conv2 = conv3x3(planes, planes, conv_layer=conv_layer)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = create_act(act)
        self.downsample = downsample
        self.shortcut = shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by `expansion`; then the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 act: str = "relu", shortcut: bool = True, conv_layer: ConvLayer = nn.Conv2d):
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width, conv_layer=conv_layer)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = create_act(act)
        self.conv2 = conv3x3(width, width, stride, conv_layer)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = create_act(act)
        self.conv3 = conv1x1(width, planes * self.expansion, conv_layer=conv_layer)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = create_act(act)
        self.downsample = downsample
        self.shortcut = shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act3(out)


class ResNet(nn.Module):
    """A ResNet (or, with `shortcut=False`, its plain twin).

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage.
        widths: base channels per stage (the block multiplies by its expansion).
        num_classes: outputs of the linear head.
        in_chans: input channels (1 greyscale, 3 RGB, any other number), or "any": the stem conv becomes
            `stem_layer`, which takes any number of channels (`nets.channel_agnostic`).
        act: activation used everywhere ('relu', 'leaky_relu', 'silu').
        shortcut: False builds the plain twin (same layers, no shortcut).
        shortcut_type: 'B' projection (1x1 conv + BN) or 'A' parameter-free pad, where shapes change.
        stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv, no max-pool, He et al.
            §4.2); 'small' is an alias of 'cifar'. The canonical name is kept in `self.stem`.
        zero_init_residual: start each residual branch at zero (Goyal et al., arXiv:1706.02677).
        conv_layer: builds every conv inside the stages (not the stem), nn.Conv2d's signature;
            a DynamicConv2d factory makes the dynamic twin (Chen et al. keep the first layer static).
        stem_width: channels of the stem conv (default widths[0]); the Keras CIFAR ResNet uses 64.
        stem_layer: builds the stem conv when in_chans="any" (default: the static channel-agnostic stem;
            the dynamic nets pass the dynamic one).
        drop_rate: dropout probability on the pooled features before the classifier (timm's name; 0: none;
            the Keras-style training recipe of the recipe study uses 0.5). Must be in [0, 1).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000, in_chans: int | str = 3,
                 act: str = "relu", shortcut: bool = True, shortcut_type: str = "B", stem: str = "imagenet",
                 zero_init_residual: bool = False, conv_layer: ConvLayer = nn.Conv2d, stem_width: int | None = None,
                 stem_layer: ConvLayer | None = None, drop_rate: float = 0.0):
        super().__init__()
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
            raise ModelConfigError(f"drop_rate must be in [0, 1) (the dropout probability before the classifier), "
                                   f"got {drop_rate!r}")
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
        stem = STEM_ALIASES.get(stem, stem)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(map(repr, STEMS + tuple(STEM_ALIASES)))}, got {stem!r}")
        if len(layers) != len(widths):
            raise ValueError("layers and widths must have the same length")
        self.act = act
        self.stem = stem
        self.shortcut = shortcut
        self.shortcut_type = shortcut_type
        self.conv_layer = conv_layer
        self.inplanes = stem_width or widths[0]
        first_conv: ConvLayer = nn.Conv2d
        if in_chans == ANY_CHANNELS:
            first_conv = stem_layer or channel_agnostic_layer(act=act)
        if stem == "imagenet":
            self.conv1 = first_conv(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, self.inplanes, conv_layer=first_conv)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.act1 = create_act(act)
        stages = []
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stages.append(self._make_layer(block, planes, blocks, stride=1 if i == 0 else 2))
        # Named layer1..layerN as in torchvision, so state dicts line up.
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1] * block.expansion
        self.drop_rate = float(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual and shortcut:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        # Only the first block of a stage changes the shape; only a shortcut needs the projection.
        if self.shortcut and (stride != 1 or self.inplanes != out_planes):
            if self.shortcut_type == "A":
                downsample = PadShortcut(self.inplanes, out_planes, stride)
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride, self.conv_layer),
                                           nn.BatchNorm2d(out_planes))
        kw = dict(act=self.act, shortcut=self.shortcut, conv_layer=self.conv_layer)
        layers = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if self.drop_rate:  # timm's head: dropout on the pooled features, only while training
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _imagenet_resnet(block, layers, shortcut: bool = True, small_input: bool = False, **kwargs) -> ResNet:
    return ResNet(block, layers, shortcut=shortcut, stem="cifar" if small_input else "imagenet", **kwargs)


def _cifar_resnet(depth: int, shortcut: bool = True, shortcut_type: str = "A", **kwargs) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), widths=(16, 32, 64), shortcut=shortcut, shortcut_type=shortcut_type,
                  stem="cifar", **kwargs)


# ImageNet-style ResNets (input 224; small_input=True for CIFAR-size images).
@register_model("resnet", "residual", input_size=224, twin="plain18", channel_agnostic=True)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18, He et al. 2016 Table 1 (11.7M params at 1000 classes)."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model("resnet", "residual", input_size=224, twin="plain34", channel_agnostic=True)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34, He et al. 2016 Table 1 (21.8M params at 1000 classes)."""
    return _imagenet_resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model("resnet", "residual", input_size=224, twin="plain50", channel_agnostic=True)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50, bottleneck blocks, He et al. 2016 Table 1 (25.6M params at 1000 classes)."""
    return _imagenet_resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model("resnet", "residual", input_size=224, twin="plain101", channel_agnostic=True)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101, bottleneck blocks, He et al. 2016 Table 1 (44.5M params at 1000 classes)."""
    return _imagenet_resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model("resnet", "residual", input_size=224, twin="plain152", channel_agnostic=True)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152, bottleneck blocks, He et al. 2016 Table 1 (60.2M params at 1000 classes)."""
    return _imagenet_resnet(Bottleneck, (3, 8, 36, 3), **kwargs)


@register_model("resnet", "plain", input_size=224, twin="resnet18", channel_agnostic=True)
def plain18(**kwargs) -> ResNet:
    """Plain-18: ResNet-18's layers without shortcuts."""
    return _imagenet_resnet(BasicBlock, (2, 2, 2, 2), shortcut=False, **kwargs)


@register_model("resnet", "plain", input_size=224, twin="resnet34", channel_agnostic=True)
def plain34(**kwargs) -> ResNet:
    """Plain-34: ResNet-34's layers without shortcuts (He et al. 2016 Fig. 3, middle)."""
    return _imagenet_resnet(BasicBlock, (3, 4, 6, 3), shortcut=False, **kwargs)


@register_model("resnet", "plain", input_size=224, twin="resnet50", channel_agnostic=True)
def plain50(**kwargs) -> ResNet:
    """Plain-50: ResNet-50's bottleneck layers without shortcuts."""
    return _imagenet_resnet(Bottleneck, (3, 4, 6, 3), shortcut=False, **kwargs)


@register_model("resnet", "plain", input_size=224, twin="resnet101", channel_agnostic=True)
def plain101(**kwargs) -> ResNet:
    """Plain-101: ResNet-101's bottleneck layers without shortcuts."""
    return _imagenet_resnet(Bottleneck, (3, 4, 23, 3), shortcut=False, **kwargs)


@register_model("resnet", "plain", input_size=224, twin="resnet152", channel_agnostic=True)
def plain152(**kwargs) -> ResNet:
    """Plain-152: ResNet-152's bottleneck layers without shortcuts."""
    return _imagenet_resnet(Bottleneck, (3, 8, 36, 3), shortcut=False, **kwargs)


# He et al.'s CIFAR ResNets (§4.2) and their plain twins.
@register_model("cifar_resnet", "residual", twin="plain20", channel_agnostic=True)
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20, 6n+2 with n=3 (0.27M params)."""
    return _cifar_resnet(20, **kwargs)


@register_model("cifar_resnet", "residual", twin="plain32", channel_agnostic=True)
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32, n=5 (0.46M params)."""
    return _cifar_resnet(32, **kwargs)


@register_model("cifar_resnet", "residual", twin="plain44", channel_agnostic=True)
def resnet44(**kwargs) -> ResNet:
    """CIFAR ResNet-44, n=7 (0.66M params)."""
    return _cifar_resnet(44, **kwargs)


@register_model("cifar_resnet", "residual", twin="plain56", channel_agnostic=True)
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56, n=9 (0.85M params)."""
    return _cifar_resnet(56, **kwargs)


@register_model("cifar_resnet", "residual", twin="plain110", channel_agnostic=True)
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110, n=18 (1.7M params)."""
    return _cifar_resnet(110, **kwargs)


@register_model("cifar_resnet", "residual", twin="plain1202", channel_agnostic=True)
def resnet1202(**kwargs) -> ResNet:
    """CIFAR ResNet-1202, n=200 (19.4M params)."""
    return _cifar_resnet(1202, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet20", channel_agnostic=True)
def plain20(**kwargs) -> ResNet:
    """CIFAR Plain-20: ResNet-20 without shortcuts."""
    return _cifar_resnet(20, shortcut=False, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet32", channel_agnostic=True)
def plain32(**kwargs) -> ResNet:
    """CIFAR Plain-32: ResNet-32 without shortcuts."""
    return _cifar_resnet(32, shortcut=False, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet44", channel_agnostic=True)
def plain44(**kwargs) -> ResNet:
    """CIFAR Plain-44: ResNet-44 without shortcuts."""
    return _cifar_resnet(44, shortcut=False, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet56", channel_agnostic=True)
def plain56(**kwargs) -> ResNet:
    """CIFAR Plain-56: ResNet-56 without shortcuts."""
    return _cifar_resnet(56, shortcut=False, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet110", channel_agnostic=True)
def plain110(**kwargs) -> ResNet:
    """CIFAR Plain-110: ResNet-110 without shortcuts."""
    return _cifar_resnet(110, shortcut=False, **kwargs)


@register_model("cifar_resnet", "plain", twin="resnet1202", channel_agnostic=True)
def plain1202(**kwargs) -> ResNet:
    """CIFAR Plain-1202: ResNet-1202 without shortcuts."""
    return _cifar_resnet(1202, shortcut=False, **kwargs)
