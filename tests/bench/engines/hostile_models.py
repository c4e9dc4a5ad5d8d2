"""User code that misbehaves, imported by the boundary tests as package.module:callable."""

from __future__ import annotations

import sys

import torch.nn as nn


class Exits(nn.Module):
    """A net whose forward calls sys.exit (a script's habit, pasted into a model)."""

    def __init__(self, code: int):
        super().__init__()
        self.code = code
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        sys.exit(self.code)


class Raises(nn.Module):
    """A net whose forward raises on any input."""

    config = {"name": "Raises", "input_size": 8}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise ValueError("the user's forward is broken")


def builder_exits_0():
    sys.exit(0)


def builder_exits_3():
    sys.exit(3)


def forward_exits_0():
    return Exits(0)


def forward_raises():
    return Raises()
