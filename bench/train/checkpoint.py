"""What a training run leaves on disk: its checkpoints (weights-only loadable, written atomically) and its
learning curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.atomic import atomic_path
from bench.data import DatasetBundle
from bench.errors import DataProblem
from bench.train.config import TrainConfig

CHECKPOINT_FORMAT = "rbench.checkpoint/1"


def current_temperature(model: nn.Module) -> float | None:
    """The attention temperature of a dynamic-conv net (None for other nets)."""
    from nets.layers import DynamicConv2d

    for m in model.modules():
        if isinstance(m, DynamicConv2d):
            return float(m.temperature)
    return None


def checkpoint_payload(model: nn.Module, bundle: DatasetBundle, epoch: int, val_acc: float,
                       config: TrainConfig, history: list[dict]) -> dict[str, Any]:
    """The weights-only-loadable dict stored in best.pt / last.pt (tensors and plain data only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": dict(getattr(model, "config", {})),
        "normalization": {"mean": list(bundle.mean), "std": list(bundle.std)},
        "dataset": bundle.describe(),
        "epoch": epoch,
        "val_acc": val_acc,
        "temperature": current_temperature(model),
        "train_config": config.to_dict(),
        "history": [dict(h) for h in history],
    }


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file, renamed into place only when complete."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with a one-line DataProblem for a missing or foreign file."""
    from export.checkpoint import read_weights

    path = Path(path)
    payload = read_weights(path)
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise DataProblem(f"{path} is not an rbench checkpoint (no state_dict and model config)")
    return payload


def plot_history(history: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train and val) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
