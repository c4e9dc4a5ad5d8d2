"""The Keras-style CIFAR bottleneck ResNet (and its plain twin).

The bottleneck ResNet of Keras CIFAR tutorials, after He et al. 2016 (arXiv:1512.03385) §3.3:
a 3x3 conv stem of 64 channels, then three stages of bottleneck blocks (1x1 reduce, 3x3,
1x1 expand) with filters [16, 16, 64] x 5, [32, 32, 128] x 4 and [64, 64, 256] x 2. The first
stage keeps 64 channels and 32x32, so its blocks add the identity; each later stage opens with
a stride-2 projection block (1x1 conv + BN on the shortcut). Global average pool and one dense
layer close it.

It is `nets.families.resnet.ResNet` with the Bottleneck block (expansion 4 gives exactly those
filter triples) and a 64-wide stem, so nothing is copied. The stride sits on the 3x3 conv
(torchvision's v1.5) rather than on the first 1x1 as in Keras' ResNet50: same parameters,
fewer positions skipped. 0.27M parameters at 10 classes (the plain twin 0.23M: no projections).
`extra_blocks=N` deepens every stage by N blocks (the recipe study's "deeper net" rungs).
"""

from __future__ import annotations

from nets._registry import register_model
from nets.errors import ModelConfigError
from nets.families.resnet import Bottleneck, ResNet

#: Bottleneck blocks per stage of the Keras-style net.
KERAS_BLOCKS = (5, 4, 2)


def _keras_resnet(shortcut: bool = True, extra_blocks: int = 0, **kwargs) -> ResNet:
    """`extra_blocks` adds that many blocks to every stage: the deeper rungs of the recipe study's ladder."""
    if isinstance(extra_blocks, bool) or not isinstance(extra_blocks, int) or extra_blocks < 0:
        raise ModelConfigError(f"extra_blocks must be a whole number >= 0, got {extra_blocks!r}")
    layers = tuple(n + extra_blocks for n in KERAS_BLOCKS)
    return ResNet(Bottleneck, layers, widths=(16, 32, 64), shortcut=shortcut, shortcut_type="B",
                  stem="cifar", stem_width=64, **kwargs)


@register_model("keras_resnet", "residual", twin="keras_plain")
def keras_resnet(**kwargs) -> ResNet:
    """Keras-style CIFAR bottleneck ResNet: 64 stem, [16,16,64]x5, [32,32,128]x4, [64,64,256]x2."""
    return _keras_resnet(**kwargs)


@register_model("keras_resnet", "plain", twin="keras_resnet")
def keras_plain(**kwargs) -> ResNet:
    """The Keras-style CIFAR bottleneck net without shortcuts (and so without projections)."""
    return _keras_resnet(shortcut=False, **kwargs)
