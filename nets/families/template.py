"""The small VGG-like CIFAR "template" CNN that coursework baselines start from.

Three groups of three 3x3 conv + BatchNorm + activation, each group closed by a 2x2 max-pool
(32 -> 16 -> 8 -> 4), then two dense layers of 128 with dropout and the classifier. It has no
shortcuts: it is the static baseline the residual nets are measured against.

The dense layers read a global average pool of the last group rather than its flattened map:
that keeps the weights independent of the input size, so the same net runs on 28x28
(Fashion-MNIST) and 32x32 (CIFAR) images, and keeps the head small (128 inputs, not 2048).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from nets._registry import register_model
from nets.layers import create_act


class TemplateCNN(nn.Module):
    """Args:
        num_classes: outputs.
        in_chans: input channels.
        act: activation everywhere.
        widths: channels of the three conv groups.
        convs_per_group: 3x3 convs per group.
        hidden: width of the two dense layers.
        dropout: dropout after each dense layer.
        batch_norm: BatchNorm after every conv.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 widths: Sequence[int] = (32, 64, 128), convs_per_group: int = 3, hidden: int = 128,
                 dropout: float = 0.5, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for width in widths:
            for _ in range(convs_per_group):
                layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(create_act(act))
                channels = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden), create_act(act), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), create_act(act), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("template", "static")
def template_cnn(**kwargs) -> TemplateCNN:
    """VGG-like CIFAR template: 3 groups of 3 convs + max-pool, two dense-128 layers with dropout."""
    return TemplateCNN(**kwargs)
