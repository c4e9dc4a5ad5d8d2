"""The four-layer coursework net: an RRDB and SAGAN self-attention side by side.

conv(in -> 64) + BN + act + max-pool; then, in parallel on the same 64-channel map, a
residual-in-residual dense block (Wang et al., ESRGAN, arXiv:1809.00219: dense 3x3 convs with
growth 32, residual scaling 0.2) and a self-attention block (Zhang et al., SAGAN,
arXiv:1805.08318: query and key at C/8, value at C, gamma initialised to 0), their outputs
summed; conv(64 -> 128) + BN + act + max-pool; global average pool; linear head.

Summing lets the net learn local (dense convs) and global (attention) evidence at the same
depth. Self-attention memory grows as (H*W)^2, hence the pool before it: at 32x32 input it
attends over 16x16 = 256 positions.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nets._registry import register_model
from nets.layers import RRDB, SelfAttention2d, create_act


class RRDBAttentionNet(nn.Module):
    """Args:
        num_classes: outputs.
        in_chans: input channels.
        act: activation everywhere, the RRDB's dense convs included.
        width: channels of the first conv and of the parallel blocks (64).
        out_width: channels of the second conv (128).
        growth: the RRDB's growth rate (32).
        res_scale: the RRDB's residual scaling (0.2).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu", width: int = 64,
                 out_width: int = 128, growth: int = 32, res_scale: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  create_act(act), nn.MaxPool2d(2, ceil_mode=True))
        self.rrdb = RRDB(width, growth, res_scale, act)
        self.attention = SelfAttention2d(width)
        self.conv2 = nn.Sequential(nn.Conv2d(width, out_width, 3, padding=1, bias=False), nn.BatchNorm2d(out_width),
                                   create_act(act), nn.MaxPool2d(2, ceil_mode=True))
        self.num_features = out_width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.rrdb(x) + self.attention(x)
        return self.conv2(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("rrdb_attention", "residual")
def rrdb_attention_net(**kwargs) -> RRDBAttentionNet:
    """Four-layer net: conv, RRDB + SAGAN self-attention in parallel, conv, linear head."""
    return RRDBAttentionNet(**kwargs)
