"""Every report figure is rendered from rows and checked: written as a PNG, no label clipped by the figure's edge or
overlapping another, error bars where the figure has intervals, and honest accuracy axes."""

from __future__ import annotations

import pytest

from bench.report import figures, plots
from bench.scenarios.ladder import plot_ladder

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _history(epochs, start):
    return [{"epoch": e + 1, "train_acc": start + 0.05 * e, "val_acc": start + 0.04 * e} for e in range(epochs)]


def _row(label, *, model="resnet20", group="", study="depth", top1=0.78, flops=62e6, latency=2.0, seeds=None,
         epochs=6, k=None):
    row = {"label": label, "model": model, "group": group, "study": study, "top1": top1, "samples": 1000,
           "flops": flops, "params": 270_000, "history": _history(epochs, top1 - 0.3), "val_size": 300,
           "latency_p50_torch": latency, "latency_ci_torch": [0.95 * latency, 1.1 * latency],
           "latency_p50_ort": latency / 3, "latency_ci_ort": [0.3 * latency, 0.4 * latency],
           "per_class": [{"class": i, "name": n, "precision": 0.8, "recall": 0.7, "f1": top1}
                         for i, n in enumerate(CLASSES)],
           "subsets": {"RGB": top1, "R": top1 - 0.1}, "subset_mode": "average", "k": k,
           "seeds": seeds or {"mean": top1, "spread": None, "samples": 1000}}
    return row


def _rung(engine, precision, p50, top1, pareto=False):
    return {"engine": engine, "precision": precision, "runs": True, "p50_ms": p50, "p50_ci": [0.9 * p50, 1.2 * p50],
            "top1": top1, "samples": 1000, "agreement": 0.99, "pareto": pareto, "batch": 1}


LADDER = [_rung("torch", "fp32", 2.22, 0.783), _rung("torch", "bf16", 6.39, 0.781), _rung("ort", "fp32", 0.624, 0.783),
          _rung("ort", "int8", 0.287, 0.783, True), _rung("openvino", "fp32", 0.578, 0.783),
          _rung("openvino", "bf16", 0.324, 0.784, True), _rung("openvino", "int8", 0.245, 0.781, True)]
DEPTH = [_row(f"{kind}{d}", model=f"{kind}{d}", group=group, top1=top1, flops=62e6 * d / 20, latency=d / 10,
              seeds={"mean": top1, "low": top1 - 0.01, "high": top1 + 0.01, "spread": 0.02} if d == 20 else None)
         for d in (20, 56, 110) for kind, group, top1 in (("resnet", "residual", 0.80), ("plain", "plain", 0.5 + 1 / d))]
MANY = [_row(f"net{i} with a longish label", study=s, top1=0.6 + i / 100, flops=(i + 1) * 3e7, latency=0.5 + i)
        for i, s in enumerate(["depth", "dynamic", "activation", "family"] * 3)]


@pytest.fixture
def checked(monkeypatch):
    """Every figure saved while it is active is first checked for clipped and overlapping labels."""
    problems: dict[str, list[str]] = {}
    save = plots.save_figure

    def checking_save(fig, path):
        problems[str(path)] = figures.label_problems(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", checking_save)
    monkeypatch.setattr(figures, "save_figure", checking_save)
    return problems


def _is_png(path):
    return path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name, draw", [
    ("latency_vs_flops", lambda p: figures.plot_latency_vs_flops(MANY, ["torch", "ort"], p)),
    ("accuracy_vs_depth", lambda p: figures.plot_accuracy_vs_depth(DEPTH, p)),
    ("curves_one_run", lambda p: figures.plot_learning_curves(MANY[:1], p, "one run")),
    ("curves_many_runs", lambda p: figures.plot_learning_curves(MANY, p, "twelve runs")),
    ("curves_over_seeds", lambda p: figures.seed_curves(
        [{"group": f"resnet20|lr {lr}", "histories": [(s, _history(4, 0.5 + s / 10)) for s in (0, 1)]}
         for lr in (0.1, 0.01, 0.001, 0.0001, 1e-5)], p, "sweeps")),
    ("pareto", lambda p: figures.plot_pareto(LADDER, p, "resnet20: precision ladder (batch 1, 1000 test images)")),
    ("ladder_command", lambda p: plot_ladder(LADDER, p, "resnet50 precision ladder on Intel(R) Xeon(R) Processor")),
    ("cost_vs_depth", lambda p: plots.plot_cost_vs_depth(DEPTH, ["torch", "ort"], p)),
    ("accuracy_vs_flops", lambda p: plots.plot_accuracy_vs_flops(MANY, p, "Families: accuracy vs FLOPs")),
    ("per_class", lambda p: plots.plot_per_class(MANY[:5], p, "Families: per-class F1 (test split)")),
    ("channel_subsets", lambda p: plots.plot_channel_subsets(MANY[:4], ["RGB", "R"], p)),
    ("k_ablation", lambda p: plots.plot_k_ablation([_row(f"K={k}", k=k) for k in (3, 4, 5, 6)], ["torch", "ort"], p)),
])
def test_every_figure_renders_with_every_label_readable(checked, tmp_path, name, draw):
    path = draw(tmp_path / f"{name}.png")
    assert _is_png(path), name
    assert checked[str(path)] == [], checked[str(path)]


def test_the_label_check_sees_clipped_and_overlapping_labels():
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.annotate("a label far outside the figure", (0.5, 0.5), xytext=(400, 0), textcoords="offset points")
    ax.text(0.1, 0.1, "first")
    ax.text(0.1, 0.1, "second")
    problems = figures.label_problems(fig)
    plt.close(fig)
    assert any("outside the figure" in p for p in problems)
    assert any("overlap" in p for p in problems)


def test_figures_carry_their_intervals():
    fig = figures.build_accuracy_vs_depth(DEPTH)
    bars = [c for c in fig.axes[0].collections if c.__class__.__name__ == "LineCollection"]
    assert len(bars) == 2  # residual and plain each with its error bars
    fig = figures.build_latency_vs_flops(MANY, ["torch", "ort"])
    assert len(fig.axes) >= 2 and all(ax.get_xscale() == "log" for ax in fig.axes[:2])
    fig = figures.build_learning_curves(MANY, "twelve runs")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(MANY) and all(ax.collections for ax in shown)  # a band in every panel
    plots.pyplot().close("all")


def test_the_pareto_plot_does_not_stretch_a_few_tenths_of_a_point():
    """The rungs' top-1 differ by 0.3 pp: the axis shows at least MIN_ACCURACY_SPAN points and every Wilson bar."""
    fig = figures.build_pareto(LADDER, "ladder")
    low, high = fig.axes[0].get_ylim()
    assert high - low >= figures.MIN_ACCURACY_SPAN
    assert low <= 75.0 and high >= 81.0  # 78.3% on 1000 images: Wilson [75.6, 80.7]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "openvino int8 (front)" in labels and "torch bf16" in labels  # named in the legend, not on the points
    assert not fig.axes[0].texts
    plots.pyplot().close(fig)


def test_an_interval_comes_from_the_seeds_or_the_test_images():
    one = _row("one")
    top1, low, high = figures.top1_interval(one)
    assert top1 == 0.78 and low < 0.78 < high and high - low == pytest.approx(0.051, abs=0.003)
    several = _row("several", seeds={"mean": 0.7, "low": 0.68, "high": 0.73, "spread": 0.05})
    assert figures.top1_interval(several) == (0.7, 0.68, 0.73)
    assert figures.top1_interval({"label": "untrained"}) is None
