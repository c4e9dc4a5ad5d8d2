"""Models "a user wrote", imported by the source tests as package.module:callable (tests.bench.user_models:...)."""

from __future__ import annotations

import torch.nn as nn


class TinyNet(nn.Module):
    """A two-layer CNN that is not in rbench's zoo."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))


def tiny_net() -> nn.Module:
    return TinyNet()


def not_a_module():
    return "a string"


def broken():
    raise RuntimeError("the user's builder crashed")
