"""A stem that takes any number of input channels, in any order: one net for RGB, RG, GB, R, G or B.

Build it with ``nets.create_model(name, in_chans="any")`` (the VGGs, the ResNets and plain nets, and their
dynamic twins); everything after the first conv is the net as it was, and global pooling keeps the head
free of the input size.

Design (DeepSets over the input channels). An image with C channels is read as a *set* of C planes:

    x (B, C, H, W) -> planes (B*C, 1, H, W) -> phi: shared kernels + act -> (B*C, F, H', W')
                   -> mean and max over the C planes of each sample -> rho: 1x1 conv -> (B, F, H', W')

- phi, one set of kernels for every plane: Zaheer et al., "Deep Sets", NeurIPS 2017 (arXiv:1703.06114),
  prove that f(X) = rho(sum_x phi(x)) represents every permutation-invariant function of a set; the
  channel-adaptive vision models do the same with the input channels: ChannelViT (Bao et al., ICLR 2024,
  arXiv:2309.16108) embeds each channel with one shared patch projection, as does DiChaViT (Pham &
  Plummer, NeurIPS 2024, arXiv:2405.16419), and the "depthwise" channel-adaptive CNN of the CHAMMI
  benchmark (Chen et al., NeurIPS 2023, arXiv:2310.19224) convolves every channel with the same filters
  and pools over the channels. The nonlinearity
  inside phi matters: the mean of *linear* responses would be the conv of the mean plane, which is the
  naive "average the channels" baseline again.
- aggregation, mean and max: the mean does not grow with C (a sum would: 1 channel and 3 would live on
  different scales) and max keeps the strongest evidence of any plane; combining several aggregators is
  Corso et al.'s PNA (NeurIPS 2020, arXiv:2004.05718). Both read the channel axis only as a reduction, so
  the ONNX graph keeps it symbolic: the planes ride in the batch axis and are reduced back.
- no channel-identity embedding. ChannelViT adds a learned embedding per channel *name* (R, G, B); that
  breaks order invariance, needs the channel names as a second input of every engine, and on grey data
  (every plane the same) carries nothing. Each plane is instead described by its own content: the
  dynamic stem's attention (below) reads the plane's responses, a content-derived channel embedding.
- dynamic (``kernels=K > 1``, the DY nets' stem): phi mixes K kernels per plane by attention, as
  DynamicConv2d does (Chen et al., CVPR 2020, arXiv:1912.03458), with one change: DY-Conv's attention
  pools its *input*, which for one plane is a single number; here it pools the plane's K*F responses to
  the K kernels (one conv of a 1-channel plane with all K kernels, DynamicConv2d's "expand" form, costs
  K*F*k*k MACs a pixel, nothing next to the next layer). The temperature anneals with the net's
  (`nets.set_temperature`). ``kernels=1`` is the static twin's stem: plain shared kernels.

Properties (tests/nets/test_channel_agnostic.py): the output does not depend on the order of the channels
(up to float summation order), and repeating a plane changes nothing (mean and max of equal planes are that
plane): on grey data copied to RGB, every channel subset gives the same logits as the grey image itself.

Training with missing channels: `channel_mask(model, mask)` makes the stems aggregate only over the kept
channels of each sample (mask (B, C), True = kept), exactly as if the dropped channels were not in the
input at all; `random_channel_mask` draws such masks (each channel dropped with probability p, at least
one kept), which `rbench train --in-chans any --channel-dropout P` uses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn as nn

from nets.errors import ModelConfigError
from nets.layers import check_dynamic_settings, create_act

#: The `in_chans` value that asks for a channel-agnostic stem.
ANY_CHANNELS = "any"


class ChannelAgnosticStem(nn.Module):
    """The first conv of a channel-agnostic net: shared per-plane kernels, then mean and max over the planes.

    Takes nn.Conv2d's signature (so the families build it where they build their first conv); `in_channels`
    must be "any". BatchNorm and the activation follow, as after the conv it replaces.

    Args:
        in_channels: "any".
        out_channels, kernel_size, stride, padding, dilation, bias: as nn.Conv2d.
        kernels: K kernels mixed per plane by attention (dynamic); 1: static shared kernels.
        temperature: the attention's softmax temperature (dynamic only).
        reduction: the attention's hidden width is K * out_channels // reduction (at least 4).
        act: the activation inside phi (the net's) and inside the attention branch.
    """

    def __init__(self, in_channels: str = ANY_CHANNELS, out_channels: int = 64, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = True, *, kernels: int = 1,
                 temperature: float = 1.0, reduction: int = 4, act: str = "relu"):
        super().__init__()
        if in_channels != ANY_CHANNELS:
            raise ModelConfigError(f"ChannelAgnosticStem takes in_channels={ANY_CHANNELS!r}, got {in_channels!r}")
        check_dynamic_settings(kernels, temperature)
        self.out_channels = out_channels
        self.kernels = kernels
        self.temperature = float(temperature)
        # phi's kernels, the same for every plane; all K of them in one conv (a plane has one channel).
        self.encode = nn.Conv2d(1, kernels * out_channels, kernel_size, stride, padding, dilation, bias=bias)
        self.encode_act = create_act(act, inplace=False)
        if kernels > 1:
            hidden = max(kernels * out_channels // reduction, 4)
            self.attn_fc1 = nn.Linear(kernels * out_channels, hidden)
            self.attn_act = create_act(act)
            self.attn_fc2 = nn.Linear(hidden, kernels)
        # rho: mixes the mean and the max of the planes back to out_channels.
        self.combine = nn.Conv2d(2 * out_channels, out_channels, 1, bias=False)
        self.channel_mask: torch.Tensor | None = None  # set by `channel_mask` for one training step

    @property
    def dynamic(self) -> bool:
        return self.kernels > 1

    def attention(self, responses: torch.Tensor) -> torch.Tensor:
        """The weights of the K kernels per plane, (N, K), from the plane's responses (N, K*F, H', W')."""
        logits = self.attn_fc2(self.attn_act(self.attn_fc1(responses.mean(dim=(2, 3)))))
        return torch.softmax(logits / self.temperature, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[0], x.shape[1]
        if isinstance(channels, int) and channels < 1:
            raise ModelConfigError("a channel-agnostic net needs at least one input channel, got 0")
        planes = x.flatten(0, 1).unsqueeze(1)  # (B*C, 1, H, W): every channel a sample of the same kernels
        feats = self.encode(planes)  # (B*C, K*F, H', W')
        out_hw = feats.shape[-2:]
        if self.dynamic:
            attn = self.attention(feats)  # (B*C, K)
            feats = torch.bmm(attn.unsqueeze(1), feats.flatten(1).unflatten(1, (self.kernels, -1)))  # (B*C, 1, F*L)
            feats = feats.view(-1, self.out_channels, *out_hw)  # (B*C, F, H', W')
        feats = self.encode_act(feats).view(batch, -1, self.out_channels, *out_hw)  # (B, C, F, H', W')
        mask = self.channel_mask
        if mask is None:
            mean, peak = feats.mean(dim=1), feats.amax(dim=1)
        else:
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise ModelConfigError(f"channel mask of shape {tuple(mask.shape)} for an input of {tuple(x.shape)}")
            keep = mask.to(torch.bool).view(*mask.shape, 1, 1, 1)  # (B, C, 1, 1, 1)
            kept = keep.to(feats.dtype)
            mean = (feats * kept).sum(dim=1) / kept.sum(dim=1).clamp_min(1.0)
            peak = feats.masked_fill(~keep, torch.finfo(feats.dtype).min).amax(dim=1)
        return self.combine(torch.cat([mean, peak], dim=1))  # (B, F, H', W')

    def extra_repr(self) -> str:
        kind = f"kernels={self.kernels}, temperature={self.temperature:g}" if self.dynamic else "static"
        return f"any -> {self.out_channels}, {kind}, aggregation=mean+max"


def channel_agnostic_layer(kernels: int = 1, temperature: float = 1.0, act: str = "relu"):
    """A stem factory with nn.Conv2d's signature: static shared kernels (K=1) or the dynamic stem (K>1)."""
    return functools.partial(ChannelAgnosticStem, kernels=kernels, temperature=temperature, act=act)


def is_channel_agnostic(model: nn.Module) -> bool:
    """Whether `model` takes any number of input channels (it holds a ChannelAgnosticStem)."""
    return any(isinstance(m, ChannelAgnosticStem) for m in model.modules())


@contextlib.contextmanager
def channel_mask(model: nn.Module, mask: torch.Tensor) -> Iterator[nn.Module]:
    """Within the block, every stem of `model` aggregates only the channels `mask` (B, C; True = kept) keeps.

        >>> with channel_mask(model, random_channel_mask(x.shape[0], x.shape[1], 0.5)):
        ...     logits = model(x)  # as if each sample held only its kept channels
    """
    stems = [m for m in model.modules() if isinstance(m, ChannelAgnosticStem)]
    if not stems:
        raise ModelConfigError("channel masks need a channel-agnostic net (build it with in_chans='any')")
    if mask.ndim != 2 or not bool(mask.to(torch.bool).any(dim=1).all()):
        raise ModelConfigError("a channel mask is (batch, channels) and keeps at least one channel per sample")
    for stem in stems:
        stem.channel_mask = mask
    try:
        yield model
    finally:
        for stem in stems:
            stem.channel_mask = None


def random_channel_mask(batch: int, channels: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, channels) bool: each channel kept with probability 1 - p; a sample that lost all keeps one at random."""
    if not 0.0 <= p < 1.0:
        raise ModelConfigError(f"channel dropout must be in [0, 1), got {p!r}")
    keep = torch.rand(batch, channels, generator=generator) >= p
    rescue = torch.randint(0, channels, (batch,), generator=generator)
    none = ~keep.any(dim=1)
    keep[none, rescue[none]] = True
    return keep
