"""Rows -> PNG plots: one file each, matplotlib Agg, written atomically (`save_figure`); the figures with a
`build_*` for the label check are in `bench.report.figures`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.atomic import atomic_path
from bench.report.format import model_depth
from bench.report.stats import wilson_interval

#: The least top-1 span (percentage points) an accuracy axis shows: a few tenths of a point never fill the height.
MIN_ACCURACY_SPAN = 10.0


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


# --------------------------------------------------------------------------- axis helpers


def top1_interval(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """A row's torch top-1 with its error bar, as fractions: (mean, min, max) over its seeds where it has several,
    else (top-1, Wilson 95% interval over its test images); None when it has no top-1."""
    seeds = row.get("seeds") or {}
    if seeds.get("spread") is not None:
        return seeds["mean"], seeds["low"], seeds["high"]
    top1 = seeds.get("mean") if seeds.get("mean") is not None else row.get("top1")
    if top1 is None:
        return None
    samples = seeds.get("samples") or row.get("samples")
    low, high = wilson_interval(top1, samples) if samples else (top1, top1)
    return top1, low, high


def log_axis(axis) -> None:
    """Put `axis` (an x or y Axis) on a log scale labelled in plain numbers at 1, 2, 3 and 5 of each decade (a short
    range still gets labels; the other ticks stay bare so their labels cannot crowd)."""
    from matplotlib.ticker import FuncFormatter

    def label(value: float, _position: Any) -> str:
        if value <= 0:
            return ""
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
        return f"{value:g}" if mantissa in (1.0, 2.0, 3.0, 5.0) else ""

    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def _yerr(values: Sequence[tuple[float, float, float]], scale: float = 100.0) -> list[list[float]]:
    return [[scale * (v - lo) for v, lo, _ in values], [scale * (hi - v) for v, _, hi in values]]


def accuracy_limits(ax, lows: Sequence[float], highs: Sequence[float], span: float = MIN_ACCURACY_SPAN) -> None:
    """Accuracy limits (in %) that hold every error bar and span at least `span` points, inside [0, 100]."""
    lo, hi = min(lows), max(highs)
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
    pad = 0.05 * (hi - lo)
    lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
    if hi - lo < span:  # pressed against 0 or 100: extend the other way
        lo, hi = (0.0, span) if lo == 0.0 else (100.0 - span, 100.0)
    ax.set_ylim(lo, hi)


def plot_cost_vs_depth(rows: Sequence[dict[str, Any]], engines: Sequence[str], path: str | Path) -> Path | None:
    """p50 latency per engine (left, bars: its 95% interval) and FLOPs (right) against depth; residual solid, plain
    dashed."""
    plt = pyplot()
    fig, (ax_lat, ax_flops) = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = False
    for group, style in (("residual", "-o"), ("plain", "--s")):
        members = sorted(((model_depth(r["model"]), r) for r in rows
                          if r.get("group") == group and model_depth(r["model"])), key=lambda t: t[0])
        for e_i, engine in enumerate(engines):
            pts = [(d, r[f"latency_p50_{engine}"], r.get(f"latency_ci_{engine}")) for d, r in members
                   if r.get(f"latency_p50_{engine}") is not None]
            if pts:
                err = [[max(0.0, v - (ci or (v, v))[0]) for _, v, ci in pts],
                       [max(0.0, (ci or (v, v))[1] - v) for _, v, ci in pts]]
                ax_lat.errorbar([d for d, _, _ in pts], [v for _, v, _ in pts], yerr=err, fmt=style, color=f"C{e_i}",
                                capsize=3, label=f"{engine} {group}")
                drawn = True
        pts = [(d, r["flops"]) for d, r in members if r.get("flops")]
        if pts:
            ax_flops.plot([d for d, _ in pts], [v / 1e6 for _, v in pts], style, color="C4", label=group)
    if not drawn:
        plt.close(fig)
        return None
    depths = sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])})
    ax_lat.set_ylabel("p50 latency, batch 1 (ms)")
    ax_lat.set_title("Latency vs depth (bars: p50 95% interval)")
    ax_flops.set_ylabel("MFLOPs per image")
    ax_flops.set_title("FLOPs vs depth (plain and residual overlap)")
    for ax in (ax_lat, ax_flops):
        ax.set_xlabel("depth (layers)")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_accuracy_vs_flops(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Test top-1 against FLOPs per image (log scale), one colour per net named in the legend (labels on the points
    would overlap where nets cost alike); error bars: seed min-max, or the Wilson 95% interval for one seed."""
    pts = [(r, iv) for r in rows if r.get("flops") and (iv := top1_interval(r))]
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    markers = "osD^v<>ph*"
    for i, (r, (top1, low, high)) in enumerate(pts):
        ax.errorbar(r["flops"], 100 * top1, yerr=[[100 * (top1 - low)], [100 * (high - top1)]],
                    fmt=markers[i // 10 % len(markers)], color=f"C{i % 10}", capsize=3, label=r["label"])
    log_axis(ax.xaxis)
    accuracy_limits(ax, [100 * iv[1] for _, iv in pts], [100 * iv[2] for _, iv in pts])
    ax.set_xlabel("FLOPs per image (torch counter, log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{title} (bars: seed min-max or Wilson 95%)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save_figure(fig, path)


def plot_per_class(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Per-class F1 on the test split, grouped bars, one bar per net."""
    rows = [r for r in rows if r.get("per_class")]
    if not rows:
        return None
    plt = pyplot()
    names = [c.get("name", str(c["class"])) for c in rows[0]["per_class"]]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names)), 4.2), layout="constrained")
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [100 * c["f1"] for c in r["per_class"]], width, label=r["label"], color=f"C{i % 10}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)  # level: a slanted label's box would cover its neighbours
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    # Beside the axes: above the bars it would hide the best classes.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_channel_subsets(rows: Sequence[dict[str, Any]], subsets: Sequence[str], path: str | Path) -> Path | None:
    """Top-1 on each channel subset, one bar per net; the legend says the way (naive or channel-agnostic)."""
    rows = [r for r in rows if r.get("subsets")]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(subsets))]
        way = "channel-agnostic" if r.get("subset_mode") == "select" else "naive"
        ax.bar(xs, [100 * (r["subsets"].get(s) or 0) for s in subsets], width, label=f"{r['label']} ({way})",
               color=f"C{i % 10}")
    ax.set_xticks(range(len(subsets)))
    ax.set_xticklabels(subsets)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy on channel subsets\n(naive: averaged to 3; channel-agnostic: fed natively)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_k_ablation(rows: Sequence[dict[str, Any]], engines: Sequence[str], path: str | Path) -> Path | None:
    """Top-1, params and latency against the number of kernels K."""
    pts = sorted((r["k"], r) for r in rows if r.get("k") is not None)
    if len(pts) < 2:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    ks = [k for k, _ in pts]
    axes[0].plot(ks, [100 * (r.get("top1") or math.nan) for _, r in pts], "-o")
    axes[0].set_ylabel("test top-1 (%)")
    axes[1].plot(ks, [(r.get("params") or math.nan) / 1e6 for _, r in pts], "-o", color="C1")
    axes[1].set_ylabel("params (M)")
    for i, e in enumerate(engines):
        axes[2].plot(ks, [r.get(f"latency_p50_{e}") or math.nan for _, r in pts], "-o", color=f"C{i + 2}", label=e)
    axes[2].set_ylabel("p50 latency, batch 1 (ms)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("K (kernels)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.suptitle("Dynamic ResNet-20: K ablation")
    fig.tight_layout()
    return save_figure(fig, path)
