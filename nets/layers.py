"""Layers shared by the families; `get_act_layer` is the only place that picks an activation.

Also the layers more than one family uses: dynamic convolution (with its temperature helpers),
ESRGAN's residual-in-residual dense block and SAGAN's self-attention.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from nets.errors import ModelConfigError

#: The activations every net accepts, by the name the CLI uses.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


def get_act_layer(act: str) -> type[nn.Module]:
    """The activation class for `act` ('relu', 'leaky_relu', 'silu')."""
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ModelConfigError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def create_act(act: str, inplace: bool = True) -> nn.Module:
    """A new activation module; in-place where the activation supports it."""
    cls = get_act_layer(act)
    return cls(inplace=inplace)


# --------------------------------------------------------------------------------------------
# Dynamic convolution
# --------------------------------------------------------------------------------------------


class DynamicConv2d(nn.Module):
    """Dynamic convolution: K kernels aggregated per sample by attention.

    Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020
    (arXiv:1912.03458). A squeeze-and-excitation branch (global average pool -> FC -> act -> FC
    to K -> softmax(logits / temperature)) weighs K parallel kernels; the weighted sum is the
    kernel (and bias) this sample is convolved with. BatchNorm and the activation follow, as for
    a static conv, outside this layer.

    How it is computed, and why: the usual trick reshapes the batch into the channels and runs
    one grouped conv with ``groups = batch``; that bakes the batch size into the exported ONNX
    graph, so neither ONNX exporter can give it a dynamic batch. Here every sample's aggregated
    kernel (B, C_out, C_in*k*k) multiplies its own unfolded input (B, C_in*k*k, L) in one batched
    matmul, which is batch-agnostic. The cost is what the paper claims: one convolution per
    sample (B*C_out*C_in*k*k*L MACs, exactly a static conv's) plus the small kernel aggregation
    (B*K*C_out*C_in*k*k MACs) and the attention branch, not K convolutions as mixing K expert
    outputs would cost. The price is that the work goes through im2col + bmm rather than a conv
    kernel, and thop does not see it (it counts functional matmuls as zero): count it with
    `torch.utils.flop_counter.FlopCounterMode` (bench.flops does both and flags the gap).

    With ``kernels=1`` the softmax is 1 and the layer computes exactly what ``nn.Conv2d`` with
    the same weight computes.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as nn.Conv2d.
        kernels: K, the number of kernels attended over (the paper uses 4).
        temperature: softmax temperature; large flattens the attention (the paper starts at 30
            and anneals to 1, see `temperature_schedule`).
        reduction: the attention's hidden width is in_channels // reduction (at least 4).
        act: activation inside the attention branch (the net's activation).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = True, *, kernels: int = 4,
                 temperature: float = 30.0, reduction: int = 4, act: str = "relu"):
        super().__init__()
        if kernels < 1:
            raise ModelConfigError(f"kernels must be a positive integer, got {kernels!r}")
        if temperature <= 0:
            raise ModelConfigError(f"temperature must be positive, got {temperature!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.kernels = kernels
        self.temperature = float(temperature)
        hidden = max(in_channels // reduction, 4)
        self.attn_fc1 = nn.Linear(in_channels, hidden)
        self.attn_act = create_act(act)
        self.attn_fc2 = nn.Linear(hidden, kernels)
        self.weight = nn.Parameter(torch.empty(kernels, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(kernels, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each kernel is initialised as a static conv would be (kaiming fan_out, as the nets do).
        for k in range(self.kernels):
            nn.init.kaiming_normal_(self.weight[k], mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample weights of the K kernels, (B, K), rows summing to 1."""
        logits = self.attn_fc2(self.attn_act(self.attn_fc1(x.mean(dim=(2, 3)))))
        return torch.softmax(logits / self.temperature, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        attn = self.attention(x)  # (B, K)
        weight = (attn @ self.weight.flatten(1)).view(batch, self.out_channels, -1)  # (B, C_out, C_in*k*k)
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                        stride=self.stride)  # (B, C_in*k*k, L)
        out = torch.bmm(weight, cols)  # (B, C_out, L)
        if self.bias is not None:
            out = out + (attn @ self.bias).unsqueeze(-1)  # (B, C_out, 1)
        span = self.dilation * (self.kernel_size - 1) + 1
        out_h = (height + 2 * self.padding - span) // self.stride + 1
        out_w = (width + 2 * self.padding - span) // self.stride + 1
        return out.view(batch, self.out_channels, out_h, out_w)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, kernels={self.kernels}, temperature={self.temperature:g}")


def dynamic_conv_layer(kernels: int = 4, temperature: float = 30.0, act: str = "relu"):
    """A `conv_layer` factory (nn.Conv2d's signature) that builds DynamicConv2d layers."""
    return functools.partial(DynamicConv2d, kernels=kernels, temperature=temperature, act=act)


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the attention temperature of every DynamicConv2d in `model`; returns how many."""
    if temperature <= 0:
        raise ModelConfigError(f"temperature must be positive, got {temperature!r}")
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for m in layers:
        m.temperature = float(temperature)
    return len(layers)


def temperature_schedule(epoch: int, anneal_epochs: int = 10, start: float = 30.0, end: float = 1.0) -> float:
    """The temperature for `epoch` (0-based): linear from `start` to `end` over `anneal_epochs`.

    Chen et al. (§4.1) anneal 30 -> 1 linearly over the first 10 epochs: near-uniform attention
    early lets every kernel train before the attention grows sharp.
    """
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return end
    return start + (end - start) * max(epoch, 0) / anneal_epochs


# --------------------------------------------------------------------------------------------
# Residual-in-residual dense block (ESRGAN) and self-attention (SAGAN)
# --------------------------------------------------------------------------------------------


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the last maps back to `channels`, scaled and added.

    Wang et al., "ESRGAN", ECCV Workshops 2018 (arXiv:1809.00219), Fig. 4. No BatchNorm: the
    paper removes it from the SR trunk. `act` replaces ESRGAN's LeakyReLU(0.2) like every other
    activation in rbench.
    """

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, act: str = "relu"):
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )
        self.acts = nn.ModuleList(create_act(act, inplace=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv, act in zip(self.convs[:4], self.acts):
            features.append(act(conv(torch.cat(features, dim=1))))
        out = self.convs[4](torch.cat(features, dim=1))
        return x + self.res_scale * out  # residual scaling keeps the deep trunk stable (ESRGAN §3.2)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, the whole scaled and added again."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, act: str = "relu"):
        super().__init__()
        self.res_scale = res_scale
        self.blocks = nn.Sequential(*(ResidualDenseBlock(channels, growth, res_scale, act) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class SelfAttention2d(nn.Module):
    """SAGAN self-attention: every position attends to every other; output gamma * o + x.

    Zhang et al., "Self-Attention Generative Adversarial Networks", ICML 2019 (arXiv:1805.08318).
    Query and key are 1x1 convs to C/8 (attention only needs a cheap similarity), value keeps C.
    gamma starts at 0, so the block starts as the identity and learns how much non-local
    evidence to add (SAGAN §3). Memory grows as (H*W)^2: meant for small feature maps.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = self.key(x).flatten(2)  # (B, C/8, N)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N, N): row i = where position i looks
        v = self.value(x).flatten(2)  # (B, C, N)
        out = torch.bmm(v, attn.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.gamma * out
