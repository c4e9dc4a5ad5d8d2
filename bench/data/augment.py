"""Training augmentations on whole uint8 batches: names, parsing, and one seeded pass per batch.

    >>> parse_augment("rotate,translate:0.125,flip")
    ('rotate:15', 'translate:0.125', 'flip')

Every augmentation draws from the batch's generator (seeded by seed and epoch), so an epoch is
the same whether a run was resumed or not. The geometric ones go through torchvision's
transforms v2 functional API with parameters drawn here: `rotate`, `translate` and `scale`
together make one affine warp per image (one interpolation, as Keras' ImageDataGenerator does),
`rotate90` turns each image by 0, 90, 180 or 270 degrees (the right-angle rotations of the optimizer
seed report), `vflip` flips upside down. `crop` and `flip` stay hand-vectorized index arithmetic
(they are exact and the cheapest), and `erase` (RandomErasing) works on the normalized batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.errors import UsageProblem

#: name -> (default amount or None for a switch, what the amount means).
AUGMENT_SPECS: dict[str, tuple[float | None, str]] = {
    "crop": (None, "random crop after zero padding of size/8 (at least 1 px)"),
    "flip": (None, "horizontal flip, half the images"),
    "vflip": (None, "vertical flip, half the images"),
    "rotate": (15.0, "random rotation by up to +-AMOUNT degrees"),
    "rotate90": (None, "rotation by a random multiple of 90 degrees (0, 90, 180 or 270)"),
    "translate": (0.1, "random shift by up to AMOUNT of the width and height"),
    "scale": (0.1, "random zoom by a factor in [1 - AMOUNT, 1 + AMOUNT]"),
    "erase": (None, "random erasing of a rectangle in half the images (Zhong et al. 2020)"),
}
AUGMENTATIONS = tuple(AUGMENT_SPECS)
_AFFINE = ("rotate", "translate", "scale")


def _amount(name: str, text: str | None) -> float | None:
    default, meaning = AUGMENT_SPECS[name]
    if text is None:
        return default
    if default is None:
        raise UsageProblem(f"augmentation {name} takes no amount, got {name}:{text}")
    try:
        value = float(text)
    except ValueError:
        raise UsageProblem(f"augmentation {name}:{text}: the amount must be a number ({meaning})") from None
    valid = 0.0 < value <= 180.0 if name == "rotate" else 0.0 < value < 1.0
    if not valid:
        raise UsageProblem(f"augmentation {name}:{text}: the amount must be in "
                           f"{'(0, 180]' if name == 'rotate' else '(0, 1)'} ({meaning})")
    return value


def parse_augment(augment: str | Sequence[str] | None) -> tuple[str, ...]:
    """'crop,flip' or ['crop', 'rotate:30'] -> canonical names (an amount always written out: 'rotate:15').

    'none' and empty entries are dropped, repeats kept once; an unknown name or bad amount is a one-line
    UsageProblem naming the choices.
    """
    if not augment:
        return ()
    items = augment.split(",") if isinstance(augment, str) else list(augment)
    out: dict[str, None] = {}
    seen: dict[str, str] = {}
    for item in items:
        text = str(item).strip().lower()
        if not text or text == "none":
            continue
        name, _, amount = text.partition(":")
        if name not in AUGMENT_SPECS:
            raise UsageProblem(f"unknown augmentation {text!r}; choose from {', '.join(AUGMENTATIONS)} "
                               "(rotate, translate and scale take an amount: rotate:30)")
        value = _amount(name, amount or None)
        canonical = name if value is None else f"{name}:{value:g}"
        if name in seen and seen[name] != canonical:
            raise UsageProblem(f"augmentation {name} given twice with different amounts ({seen[name]}, {canonical})")
        seen[name] = canonical
        out[canonical] = None
    return tuple(out)


def augment_amounts(augment: Sequence[str]) -> dict[str, float | None]:
    """Canonical names (from `parse_augment`) -> {name: amount or None}."""
    out = {}
    for item in augment:
        name, _, amount = item.partition(":")
        out[name] = float(amount) if amount else None
    return out


def describe_augment(augment: Sequence[str]) -> str:
    """A readable list for reports: 'rotate +-15 deg, translate 10%, horizontal flip'; 'none' when empty."""
    if not augment:
        return "none"
    words = {"crop": "crop", "flip": "horizontal flip", "vflip": "vertical flip", "rotate90": "90-degree rotations",
             "erase": "random erasing"}
    parts = []
    for name, amount in augment_amounts(augment).items():
        if name == "rotate":
            parts.append(f"rotate +-{amount:g} deg")
        elif name == "translate":
            parts.append(f"shift {100 * amount:g}%")
        elif name == "scale":
            parts.append(f"zoom +-{100 * amount:g}%")
        else:
            parts.append(words[name])
    return ", ".join(parts)


def _affine(images: torch.Tensor, amounts: dict[str, float | None], generator: torch.Generator) -> torch.Tensor:
    """One random affine warp per image (rotation, shift, zoom), bilinear, black fill, through torchvision v2."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    n, _, h, w = images.shape
    angle = torch.zeros(n)
    shift = torch.zeros(n, 2)
    zoom = torch.ones(n)
    if amounts.get("rotate"):
        angle = (torch.rand(n, generator=generator) * 2 - 1) * amounts["rotate"]
    if amounts.get("translate"):
        limit = torch.tensor([w, h], dtype=torch.float32) * amounts["translate"]
        shift = ((torch.rand(n, 2, generator=generator) * 2 - 1) * limit).round()
    if amounts.get("scale"):
        zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * amounts["scale"]
    out = torch.empty_like(images)
    for i in range(n):  # each image its own parameters: v2 draws one set per call
        out[i] = F.affine(images[i], angle=float(angle[i]), translate=[int(shift[i, 0]), int(shift[i, 1])],
                          scale=float(zoom[i]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=0)
    return out


def _rotate90(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    n, _, h, w = images.shape
    if h != w:
        raise UsageProblem(f"augmentation rotate90 needs square images, got {h}x{w}")
    turns = torch.randint(0, 4, (n,), generator=generator)
    images = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            images[chosen] = F.rotate(images[chosen], 90.0 * k)  # exact on a square image
    return images


def augment_batch(images: torch.Tensor, augment: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """The uint8 (N, C, H, W) batch with `augment`'s geometric augmentations applied per image (not `erase`,
    which works on the normalized batch: `erase_batch`). Order: affine warp, right-angle turn, crop, flips."""
    from torchvision.transforms.v2 import functional as F

    amounts = augment_amounts(augment)
    n, _, h, w = images.shape
    if any(amounts.get(a) for a in _AFFINE):
        images = _affine(images, amounts, generator)
    if "rotate90" in amounts:
        images = _rotate90(images, generator)
    if "crop" in amounts:
        pad = max(1, min(h, w) // 8)
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        # Gather each image's window with index arithmetic instead of a Python loop.
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (N, H)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (N, W)
        batch = torch.arange(n).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
        images = images.contiguous()
    if "flip" in amounts:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    if "vflip" in amounts:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), F.vertical_flip(images), images)
    return images


def erase_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): a random rectangle of half the images set to 0 (the mean)."""
    from torchvision.transforms.v2 import RandomErasing

    erase = RandomErasing(p=1.0, value=0)
    chosen = torch.rand(len(x), generator=generator) < 0.5
    for i in torch.nonzero(chosen).flatten().tolist():
        x[i] = erase(x[i])
    return x
