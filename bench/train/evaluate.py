"""A trained net's loss and accuracy over a data split, as the loop validates each epoch."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, amp: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` over `batches`."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for x, y in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return (loss_sum / seen, correct / seen) if seen else (float("nan"), float("nan"))
