"""The report's figures with intervals: latency vs FLOPs, accuracy vs depth, training curves as small multiples, and
a precision ladder's Pareto plot; and `label_problems`, the check that no label of a figure is clipped or overlaps.

Each figure has a `build_*` that returns the matplotlib Figure (None when the rows hold nothing to draw), so a test
can check its labels, and a `plot_*` that writes it (`bench.report.plots.save_figure`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from bench.report.format import model_depth
from bench.report.plots import (  # noqa: F401 (the axis helpers' former home)
    MIN_ACCURACY_SPAN,
    _yerr,
    accuracy_limits,
    log_axis,
    pyplot,
    save_figure,
    top1_interval,
)
from bench.report.stats import wilson_interval

#: Panels per row of a small-multiples figure.
PANELS_PER_ROW = 4


# --------------------------------------------------------------------------- the label check


def _drawn_tick_labels(axis) -> list:
    """The tick labels `axis` draws: matplotlib keeps labels of ticks beyond the view limits, undrawn."""
    low, high = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low):
            out += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    return out


def _shown(texts) -> list:
    return [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]


def label_problems(fig) -> list[str]:
    """What a reader would see wrong with `fig`'s text: a label outside the figure (clipped when saved at the figure's
    size) or two labels of one axes that overlap (tick labels, annotations and texts). Empty when every label reads."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    texts = _shown([fig._suptitle, *fig.texts])  # noqa: SLF001 - matplotlib keeps the suptitle there alone
    per_axes = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        ticks = (_shown(_drawn_tick_labels(ax.xaxis)), _shown(_drawn_tick_labels(ax.yaxis)))
        own = _shown([*ax.texts, ax.title, ax._left_title, ax._right_title])  # noqa: SLF001 - the side titles
        legend = ax.get_legend()
        texts += [*ticks[0], *ticks[1], *own, ax.xaxis.label, ax.yaxis.label,
                  *(_shown([legend.get_title(), *legend.get_texts()]) if legend else [])]
        per_axes += [ticks[0], ticks[1], own]
    for t in _shown(texts):
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
            problems.append(f"label {t.get_text()!r} lies outside the figure")
    for group in per_axes:
        for a, b in combinations(group, 2):
            if a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)):
                problems.append(f"labels {a.get_text()!r} and {b.get_text()!r} overlap")
    return problems


# --------------------------------------------------------------------------- intervals of a row


# --------------------------------------------------------------------------- latency vs FLOPs


def build_latency_vs_flops(rows: Sequence[dict[str, Any]], engines: Sequence[str]):
    """p50 latency (batch 1) against FLOPs per image, one panel per engine, every timed net of every study (`rows`
    carry a `study`); the error bars are each p50's 95% interval, both axes logarithmic."""
    pts = [r for r in rows if r.get("flops") and any(r.get(f"latency_p50_{e}") for e in engines)]
    if not pts or not engines:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(engines), figsize=(4.6 * len(engines), 3.8), squeeze=False,
                             layout="constrained")
    studies = list(dict.fromkeys(r.get("study", "") for r in pts))
    for ax, engine in zip(axes[0], engines, strict=True):
        for s_i, study in enumerate(studies):
            mine = [r for r in pts if r.get("study", "") == study and r.get(f"latency_p50_{engine}")]
            if not mine:
                continue
            p50 = [r[f"latency_p50_{engine}"] for r in mine]
            cis = [r.get(f"latency_ci_{engine}") or (v, v) for r, v in zip(mine, p50, strict=True)]
            err = [[max(0.0, v - lo) for v, (lo, _) in zip(p50, cis, strict=True)],
                   [max(0.0, hi - v) for v, (_, hi) in zip(p50, cis, strict=True)]]
            ax.errorbar([r["flops"] / 1e6 for r in mine], p50, yerr=err, fmt="o", color=f"C{s_i % 10}",
                        markersize=5, capsize=2, label=study or "nets")
        log_axis(ax.xaxis)
        log_axis(ax.yaxis)
        ax.set_xlabel("MFLOPs per image (log)")
        ax.set_ylabel("p50 latency, batch 1 (ms, log)")
        ax.set_title(engine)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="study")
    fig.suptitle("Latency vs FLOPs: every timed net (bars: p50 95% interval)", fontsize=10)
    return fig


def plot_latency_vs_flops(rows: Sequence[dict[str, Any]], engines: Sequence[str], path: str | Path) -> Path | None:
    """Write `build_latency_vs_flops` to `path` (None when nothing was timed)."""
    fig = build_latency_vs_flops(rows, engines)
    return None if fig is None else save_figure(fig, path)


# --------------------------------------------------------------------------- accuracy vs depth


def build_accuracy_vs_depth(rows: Sequence[dict[str, Any]]):
    """Test top-1 against depth for the residual and the plain nets; error bars: min-max over seeds where a net has
    several, else the Wilson 95% interval over the test images."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    lows, highs = [], []
    for group, style, colour in (("residual", "-o", "C0"), ("plain", "--s", "C3")):
        pts = sorted(((model_depth(r["model"]), top1_interval(r)) for r in rows
                      if r.get("group") == group and model_depth(r.get("model")) and top1_interval(r)),
                     key=lambda t: t[0])
        if not pts:
            continue
        values = [v for _, v in pts]
        ax.errorbar([d for d, _ in pts], [100 * v for v, _, _ in values], yerr=_yerr(values), fmt=style,
                    color=colour, capsize=4, label=group)
        lows += [100 * lo for _, lo, _ in values]
        highs += [100 * hi for _, _, hi in values]
    if not lows:
        plt.close(fig)
        return None
    accuracy_limits(ax, lows, highs)
    ax.set_xticks(sorted({model_depth(r["model"]) for r in rows if model_depth(r.get("model"))}))
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Accuracy vs depth (bars: seed min-max, or Wilson 95% for one seed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_accuracy_vs_depth(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Write `build_accuracy_vs_depth` to `path` (None without a residual or plain net)."""
    fig = build_accuracy_vs_depth(rows)
    return None if fig is None else save_figure(fig, path)


# --------------------------------------------------------------------------- training curves


def _curve_band(row: dict[str, Any]) -> tuple[list[int], list[float], list[float], list[float], list[float]] | None:
    """(epochs, training error, validation error, its lower and upper band) in %: the band is the min-max over the
    row's seeds (`histories`) where it has several, else the Wilson 95% interval over its validation images."""
    histories = [h for h in (row.get("histories") or [row.get("history") or []]) if h]
    if not histories:
        return None
    epochs = [h["epoch"] for h in min(histories, key=len)]
    n = len(epochs)
    val = [[1 - h[i]["val_acc"] for h in histories] for i in range(n)]
    train = [sum(1 - h[i]["train_acc"] for h in histories) / len(histories) for i in range(n)]
    mean = [sum(v) / len(v) for v in val]
    if len(histories) > 1:
        low, high = [min(v) for v in val], [max(v) for v in val]
    elif row.get("val_size"):
        bounds = [wilson_interval(1 - e, row["val_size"]) for e in mean]
        low, high = [1 - hi for _, hi in bounds], [1 - lo for lo, _ in bounds]
    else:
        low, high = mean, mean
    pct = lambda xs: [100 * x for x in xs]  # noqa: E731 - a local unit change
    return epochs, pct(train), pct(mean), pct(low), pct(high)


def build_learning_curves(rows: Sequence[dict[str, Any]], title: str):
    """Training error (dashed) and validation error (solid, with its band) per epoch, one small panel per net
    (`PANELS_PER_ROW` to a row, shared axes), so the figure reads at any number of runs."""
    curves = [(r["label"], c) for r in rows if (c := _curve_band(r))]
    if not curves:
        return None
    plt = pyplot()
    cols = min(PANELS_PER_ROW, len(curves))
    lines = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(max(5.5, 2.9 * cols + 0.6), 2.3 * lines + 0.9), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    for ax, (label, (epochs, train, val, low, high)) in zip(axes.flat, curves, strict=False):
        ax.plot(epochs, train, "--", color="C1", label="training error")
        ax.plot(epochs, val, "-o", color="C0", markersize=3, label="validation error")
        ax.fill_between(epochs, low, high, color="C0", alpha=0.2, linewidth=0)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if len(epochs) <= 10:
            ax.set_xticks(epochs)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax in axes.flat[max(0, len(curves) - cols):len(curves)]:  # the lowest panel of each column: its epochs
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("error (%)")
    fig.suptitle(f"{title}\n(band: validation error over seeds, or its Wilson 95% interval)", fontsize=10)
    axes.flat[0].legend(fontsize=7)
    return fig


def plot_learning_curves(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Write `build_learning_curves` to `path` (None when no row has a history)."""
    fig = build_learning_curves(rows, title)
    return None if fig is None else save_figure(fig, path)


# --------------------------------------------------------------------------- the precision ladder


#: One marker per precision, one colour per engine: the legend names each rung, so no label sits on the plot.
PRECISION_MARKERS = {"fp32": "o", "fp16": "^", "bf16": "s", "int8": "D"}


def build_pareto(rows: Sequence[dict[str, Any]], title: str):
    """A precision ladder as a Pareto plot: top-1 (Wilson 95% bars over its test images) against batch-1 p50 latency
    (95% interval bars), one point per rung (colour: engine, marker: precision, named in the legend), the front
    (no rung both faster and at least as accurate) joined; the accuracy axis spans at least `MIN_ACCURACY_SPAN`."""
    measured = [r for r in rows if r.get("p50_ms") is not None and r.get("top1") is not None]
    if not measured:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    engines = list(dict.fromkeys(r["engine"] for r in measured))
    lows, highs = [], []
    for r in measured:
        n = r.get("samples")
        low, high = wilson_interval(r["top1"], n) if n else (r["top1"], r["top1"])
        ci = r.get("p50_ci") or [r["p50_ms"], r["p50_ms"]]
        ax.errorbar(r["p50_ms"], 100 * r["top1"], xerr=[[max(0.0, r["p50_ms"] - ci[0])], [max(0.0, ci[1] - r["p50_ms"])]],
                    yerr=[[100 * (r["top1"] - low)], [100 * (high - r["top1"])]],
                    fmt=PRECISION_MARKERS.get(r["precision"], "o"), color=f"C{engines.index(r['engine']) % 10}",
                    markersize=9 if r.get("pareto") else 6, capsize=2, alpha=0.9,
                    label=f"{r['engine']} {r['precision']}{' (front)' if r.get('pareto') else ''}")
        lows.append(100 * low)
        highs.append(100 * high)
    front = sorted((r for r in measured if r.get("pareto")), key=lambda r: r["p50_ms"])
    if len(front) > 1:
        ax.plot([r["p50_ms"] for r in front], [100 * r["top1"] for r in front], "--", color="grey", lw=1)
    latencies = [r["p50_ms"] for r in measured]
    if max(latencies) > 5 * min(latencies):
        log_axis(ax.xaxis)  # engines differ by an order of magnitude on small nets
    accuracy_limits(ax, lows, highs)
    ax.set_xlabel(f"batch-{measured[0].get('batch') or 1} p50 latency (ms, lower is better)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="rung (dashed: Pareto front)",
              title_fontsize=7)
    return fig


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Write `build_pareto` to `path` (None when no rung was both timed and scored)."""
    fig = build_pareto(rows, title)
    return None if fig is None else save_figure(fig, path)


def seed_curves(groups: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Learning curves of an accuracy study's configurations (`bench.report.seeds.seed_groups`), one panel each, the
    band spanning its seeds."""
    rows = [{"label": g["group"].split("|")[-1], "histories": [h for _, h in g["histories"] if h]} for g in groups]
    return plot_learning_curves([r for r in rows if r["histories"]], path, title)
