"""Records -> a report a person reads: Markdown tables and PNG plots (the only module that draws).

Pure functions turn result records (`bench.records.io`) into rows and Markdown; the `plot_*`
functions write one PNG each (matplotlib, Agg backend, written atomically) and return its path.
`render_report` puts a whole study or suite run together and returns the Markdown text;
the caller writes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.atomic import atomic_path

Record = dict[str, Any]
Column = tuple[str, str, Callable[[Any], str]]  # (header, row key, formatter)


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def fmt_ms(value: Any) -> str:
    return "n/a" if value is None else (f"{value:.3f}" if value < 1 else f"{value:.2f}")


def fmt_count(value: Any) -> str:
    """12_345_678 -> '12.35M' (params, MACs, FLOPs)."""
    if value is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))


def fmt_num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def fmt_text(value: Any) -> str:
    return "n/a" if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub Markdown table of `rows`, one column per (header, key, formatter)."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(f(row.get(k)) for _, k, f in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


# --------------------------------------------------------------------------- records -> rows


def records_of(records: Iterable[Record], kind: str | None = None, study: str | None = None,
               **match: Any) -> list[Record]:
    """The records of `kind` (and `study`) whose fields equal `match` (a None value matches a missing key)."""
    out = []
    for r in records:
        if kind is not None and r.get("kind") != kind:
            continue
        if study is not None and r.get("study") != study:
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def is_ladder_record(record: Record) -> bool:
    """Whether `record` comes from a precision ladder's timing phase (it names its rung: 'ort int8')."""
    return bool(record.get("rung"))


def engines_in(records: Iterable[Record]) -> list[str]:
    """Engines the studies timed, in first-seen order (a precision ladder's rungs have their own section)."""
    seen: dict[str, None] = {}
    for r in records:
        if r.get("kind") == "latency" and r.get("engine") and not is_ladder_record(r):
            seen.setdefault(r["engine"], None)
    return list(seen)


def model_depth(name: str) -> int | None:
    """The depth in a CIFAR ResNet/plain name ('plain56' -> 56)."""
    m = re.fullmatch(r"(?:resnet|plain)(\d+)", name or "")
    return int(m.group(1)) if m else None


def unit_rows(records: Sequence[Record], study: str) -> list[dict[str, Any]]:
    """One row per unit of `study` (in plan order): everything its tables and plots need."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("study") != study or r.get("accuracy_only"):  # an extra seed: only in the seed summary below
            continue
        label = r.get("label") or r.get("unit")
        row = rows.setdefault(label, {"label": label, "model": r.get("model"), "group": r.get("group", ""),
                                      "unit": r.get("unit"), "act": r.get("act"), "history": []})
        kind = r["kind"]
        if kind == "train":
            row.update(history=r.get("history") or [], final_train_error=r.get("final_train_error"),
                       final_val_error=r.get("final_val_error"), best_epoch=r.get("best_epoch"),
                       train_seconds=r.get("train_seconds"), epochs=r.get("epochs"),
                       train_images_per_epoch=r.get("train_images_per_epoch"))
        elif kind == "flops":
            row.update(params=r.get("params"), macs=r.get("macs"), flops=r.get("flops"),
                       counters_agree=r.get("counters_agree"))
        elif kind == "export":
            row.update(parity_passed=r.get("parity_passed"), parity_max_abs_err=r.get("parity_max_abs_err"),
                       exporter=r.get("exporter"))
        elif kind == "latency":
            row[f"latency_p50_{r['engine']}"] = r.get("latency_ms_p50")
            row[f"latencies_{r['engine']}"] = (r.get("latencies_ms"), r.get("rounds"))
            row[f"latency_p99_{r['engine']}"] = r.get("latency_ms_p99")
            row[f"latency_cv_{r['engine']}"] = r.get("latency_cv")
        elif kind == "throughput":
            row[f"throughput_{r['engine']}"] = r.get("throughput_img_s")
            row["throughput_batch"] = r.get("batch")
        elif kind == "accuracy":
            if r.get("eval_channels"):
                row.setdefault("subsets", {})[r["eval_channels"]] = r.get("top1")
                row["subset_mode"] = r.get("eval_channel_mode")  # 'average' (naive) or 'select' (fed natively)
                continue
            row[f"top1_{r['engine']}"] = r.get("top1")
            row[f"f1_{r['engine']}"] = r.get("f1_macro")
            row.setdefault("per_class", r.get("per_class"))
            if r.get("top1") is not None:
                row.setdefault("top1", r.get("top1"))
                row.setdefault("test_error", 1.0 - r["top1"])
            if r.get("agreement") is not None and r.get("engine") != r.get("reference_engine"):
                row[f"agreement_{r['engine']}"] = r.get("agreement")
    seeds = {g["label"]: g for g in seed_groups(records, study, by="label", engine="torch")}
    for row in rows.values():
        row["seeds"] = seeds.get(row["label"])
        row["top1_seeds"] = seed_cell(row["seeds"]) if row["seeds"] else "n/a"
    return list(rows.values())


def measurement_columns(engines: Sequence[str]) -> list[Column]:
    """The standard columns: params, MACs, FLOPs, top-1 and latency/throughput per engine."""
    cols: list[Column] = [("model", "label", fmt_text), ("params", "params", fmt_count), ("MACs", "macs", fmt_count),
                          ("FLOPs", "flops", fmt_count)]
    for e in engines:
        cols.append((f"top-1 {e}", f"top1_{e}", fmt_pct))
    cols.append(SEED_COLUMN)
    for e in engines:
        cols.append((f"p50 ms {e}", f"latency_p50_{e}", fmt_ms))
    for e in engines:
        cols.append((f"img/s {e}", f"throughput_{e}", fmt_num))
    return cols


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


def plot_learning_curves(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Training error (dashed) and validation error (solid) per epoch, one colour per net."""
    rows = [r for r in rows if r.get("history")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, row in enumerate(rows):
        colour = f"C{i % 10}"
        epochs = [h["epoch"] for h in row["history"]]
        ax.plot(epochs, [100 * (1 - h["train_acc"]) for h in row["history"]], "--", color=colour, alpha=0.8)
        ax.plot(epochs, [100 * (1 - h["val_acc"]) for h in row["history"]], "-o", color=colour, label=row["label"],
                markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(f"{title}\n(dashed: training error, solid: validation error)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    if max(len(r["history"]) for r in rows) <= 10:
        ax.set_xticks(sorted({h["epoch"] for r in rows for h in r["history"]}))
    return _save(fig, path)


def plot_error_vs_depth(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Final training and test error against depth, residual and plain nets."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for group, colour in (("residual", "C0"), ("plain", "C3")):
        pts = sorted((model_depth(r["model"]), r) for r in rows if r.get("group") == group and model_depth(r["model"]))
        if not pts:
            continue
        depths = [d for d, _ in pts]
        test = [100 * r["test_error"] if r.get("test_error") is not None else math.nan for _, r in pts]
        train = [100 * r["final_train_error"] if r.get("final_train_error") is not None else math.nan for _, r in pts]
        ax.plot(depths, test, "-o", color=colour, label=f"{group}: test error")
        ax.plot(depths, train, "--s", color=colour, alpha=0.7, label=f"{group}: final training error")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("error (%)")
    ax.set_title("Error vs depth")
    ax.set_xticks(sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_cost_vs_depth(rows: Sequence[dict[str, Any]], engines: Sequence[str], path: str | Path) -> Path | None:
    """p50 latency per engine (left) and FLOPs (right) against depth; residual solid, plain dashed."""
    plt = _pyplot()
    fig, (ax_lat, ax_flops) = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = False
    for group, style in (("residual", "-o"), ("plain", "--s")):
        members = sorted(((model_depth(r["model"]), r) for r in rows
                          if r.get("group") == group and model_depth(r["model"])), key=lambda t: t[0])
        for e_i, engine in enumerate(engines):
            pts = [(d, r.get(f"latency_p50_{engine}")) for d, r in members if r.get(f"latency_p50_{engine}") is not None]
            if pts:
                ax_lat.plot([d for d, _ in pts], [v for _, v in pts], style, color=f"C{e_i}", label=f"{engine} {group}")
                drawn = True
        pts = [(d, r["flops"]) for d, r in members if r.get("flops")]
        if pts:
            ax_flops.plot([d for d, _ in pts], [v / 1e6 for _, v in pts], style, color="C4", label=group)
    if not drawn:
        plt.close(fig)
        return None
    depths = sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])})
    ax_lat.set_ylabel("p50 latency, batch 1 (ms)")
    ax_lat.set_title("Latency vs depth")
    ax_flops.set_ylabel("MFLOPs per image")
    ax_flops.set_title("FLOPs vs depth (plain and residual overlap)")
    for ax in (ax_lat, ax_flops):
        ax.set_xlabel("depth (layers)")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_vs_flops(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Test top-1 against FLOPs per image (log scale), each net labelled."""
    pts = [r for r in rows if r.get("flops") and r.get("top1") is not None]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, r in enumerate(pts):
        ax.scatter(r["flops"], 100 * r["top1"], color=f"C{i % 10}", s=40, zorder=3)
        ax.annotate(r["label"], (r["flops"], 100 * r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per image (torch counter, log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_per_class(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Per-class F1 on the test split, grouped bars, one bar per net."""
    rows = [r for r in rows if r.get("per_class")]
    if not rows:
        return None
    plt = _pyplot()
    names = [c.get("name", str(c["class"])) for c in rows[0]["per_class"]]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names)), 4.2))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [100 * c["f1"] for c in r["per_class"]], width, label=r["label"], color=f"C{i % 10}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    # Below the axes: above the bars it would hide the best classes.
    ax.legend(fontsize=8, ncol=min(5, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    return _save(fig, path)


def plot_channel_subsets(rows: Sequence[dict[str, Any]], subsets: Sequence[str], path: str | Path) -> Path | None:
    """Top-1 on each channel subset, one bar per net; the legend says the way (naive or channel-agnostic)."""
    rows = [r for r in rows if r.get("subsets")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
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
    ax.set_title("Accuracy on channel subsets (naive: averaged to 3; channel-agnostic: fed natively)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=min(4, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return _save(fig, path)


def plot_k_ablation(rows: Sequence[dict[str, Any]], engines: Sequence[str], path: str | Path) -> Path | None:
    """Top-1, params and latency against the number of kernels K."""
    pts = sorted((r["k"], r) for r in rows if r.get("k") is not None)
    if len(pts) < 2:
        return None
    plt = _pyplot()
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
    return _save(fig, path)


# --------------------------------------------------------------------------- study sections


def _img(path: Path | None, out_dir: Path, alt: str) -> str:
    return f"![{alt}]({Path(path).relative_to(out_dir).as_posix()})\n\n" if path else ""


def _latency_ratios(a: dict, b: dict, engines: Sequence[str]) -> str:
    """`a`'s p50 latency over `b`'s per engine, with its 95% interval and what it supports:
    "1.96x (1.90-2.01, slower; torch), no measurable difference (0.97-1.04; ort)"."""
    from bench.measure.stats import compare_latencies

    parts = []
    for e in engines:
        (a_lat, a_rounds), (b_lat, b_rounds) = a.get(f"latencies_{e}") or (None, None), b.get(f"latencies_{e}") or (None, None)
        if not a_lat or not b_lat:
            parts.append(f"{_ratio(a.get(f'latency_p50_{e}'), b.get(f'latency_p50_{e}'))} ({e})")
            continue
        c = compare_latencies(b_lat, a_lat, b_rounds, a_rounds)
        interval = f"{c['low']:.2f}-{c['high']:.2f}"
        if c["verdict"] == "no measurable difference":
            parts.append(f"no measurable difference ({c['ratio']:.2f}x, 95% CI {interval}; {e})")
        else:
            parts.append(f"{c['ratio']:.2f}x ({interval}, {c['verdict']}; {e})")
    return ", ".join(parts)


def _ratio(a: Any, b: Any) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def _pp(a: Any, b: Any) -> str:
    """Difference of two fractions in percentage points."""
    return "n/a" if a is None or b is None else f"{100 * (a - b):+.1f} pp"


#: Torch top-1 over the seeds a net was trained with (`Preset.accuracy_seeds`): what an accuracy comparison rests on.
SEED_COLUMN: Column = ("top-1 torch over seeds: mean (min-max)", "top1_seeds", fmt_text)


def accuracy_gap(a: dict[str, Any], b: dict[str, Any], *, as_error: bool = False) -> str:
    """`a`'s torch top-1 minus `b`'s (rows of `unit_rows`), in pp, with what the seeds support: the means over seeds
    and 'within seed noise' when the gap is no larger than the seed spread (as the recipe studies judge a gain), or
    'one training run each' when neither has a second seed. `as_error`: the gap in test error (the sign flipped)."""
    ga, gb = a.get("seeds"), b.get("seeds")
    if not ga or not gb:
        return _pp(b.get("top1"), a.get("top1")) if as_error else _pp(a.get("top1"), b.get("top1"))
    diff, verdict = seed_difference(gb, ga)
    if diff is None:
        return verdict
    gap = f"{100 * (-diff if as_error else diff):+.1f} pp"
    if ga.get("spread") is None and gb.get("spread") is None:
        return f"{gap}, one training run each: no seed spread to judge it by"
    return f"{gap} between the means over {ga['n']} and {gb['n']} seeds, {verdict}"


def _mean_top1(row: dict[str, Any]) -> float:
    """A row's mean torch top-1 over its seeds, else its own top-1."""
    mean = (row.get("seeds") or {}).get("mean")
    return mean if mean is not None else row.get("top1") or 0.0


def _training_line(rows: Sequence[dict[str, Any]]) -> str:
    r = next((r for r in rows if r.get("epochs")), None)
    if not r:
        return ""
    return (f"Training: {r['epochs']} epoch(s) of up to {r.get('train_images_per_epoch')} images each "
            f"(best-validation weights measured).\n\n")


def depth_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    """The depth study: learning curves, error vs depth, latency vs depth, and the degradation verdict."""
    rows = unit_rows(records, "depth")
    figs = out_dir / "figures"
    parts = [_training_line(rows)]
    cols = [("model", "label", fmt_text), ("shortcuts", "group", fmt_text), ("params", "params", fmt_count),
            ("FLOPs", "flops", fmt_count), ("final train error", "final_train_error", fmt_pct),
            ("final val error", "final_val_error", fmt_pct), ("test error", "test_error", fmt_pct), SEED_COLUMN]
    cols += [(f"p50 ms {e}", f"latency_p50_{e}", fmt_ms) for e in engines]
    parts.append(markdown_table(rows, cols) + "\n\n")
    parts.append(_img(plot_learning_curves(rows, figs / "depth_curves.png", "Residual vs plain: training curves"),
                      out_dir, "training curves"))
    parts.append(_img(plot_error_vs_depth(rows, figs / "depth_error.png"), out_dir, "error vs depth"))
    parts.append(_img(plot_cost_vs_depth(rows, engines, figs / "depth_cost.png"), out_dir, "latency and FLOPs vs depth"))
    findings = []
    by = {r["label"]: r for r in rows}
    depths = sorted({model_depth(r["model"]) for r in rows if model_depth(r["model"])})
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        p_lo, p_hi, r_lo, r_hi = (by.get(f"plain{lo}"), by.get(f"plain{hi}"), by.get(f"resnet{lo}"), by.get(f"resnet{hi}"))
        if p_lo and p_hi and p_lo.get("final_train_error") is not None and p_hi.get("final_train_error") is not None:
            worse = p_hi["final_train_error"] > p_lo["final_train_error"]
            findings.append(
                f"Degradation {'shown' if worse else 'not shown'} here: plain{hi} ends with {fmt_pct(p_hi['final_train_error'])} "
                f"training error vs {fmt_pct(p_lo['final_train_error'])} for plain{lo} "
                f"(test error {fmt_pct(p_hi.get('test_error'))} vs {fmt_pct(p_lo.get('test_error'))}; test error "
                f"{accuracy_gap(p_hi, p_lo, as_error=True)}).")
        if r_lo and r_hi and r_lo.get("final_train_error") is not None and r_hi.get("final_train_error") is not None:
            findings.append(
                f"With shortcuts: resnet{hi} {fmt_pct(r_hi['final_train_error'])} training error vs "
                f"{fmt_pct(r_lo['final_train_error'])} for resnet{lo} "
                f"(test error {fmt_pct(r_hi.get('test_error'))} vs {fmt_pct(r_lo.get('test_error'))}; test error "
                f"{accuracy_gap(r_hi, r_lo, as_error=True)}).")
    for d in depths:  # at one depth too (smoke): a pair's accuracy and latency need no second depth
        r, p = by.get(f"resnet{d}"), by.get(f"plain{d}")
        if r and p:
            lat = _latency_ratios(r, p, engines)
            findings.append(
                f"At {d} layers the shortcuts change test error by {accuracy_gap(r, p, as_error=True)}; "
                f"p50 latency of the residual net over the plain net's, timed together: {lat}; "
                f"FLOPs ratio {_ratio(r.get('flops'), p.get('flops'))}.")
    if len(depths) >= 2 and by.get(f"resnet{depths[0]}") and by.get(f"resnet{depths[-1]}"):
        lo, hi = depths[0], depths[-1]
        r_lo, r_hi = by[f"resnet{lo}"], by[f"resnet{hi}"]
        lat = _latency_ratios(r_hi, r_lo, engines)
        findings.append(f"Going from resnet{lo} to resnet{hi} multiplies FLOPs by "
                        f"{_ratio(r_hi.get('flops'), r_lo.get('flops'))}; p50 latency: {lat}.")
    return "".join(parts), findings


def dynamic_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                    subsets: Sequence[str]) -> tuple[str, list[str]]:
    """Static vs dynamic convolution: cost table, channel subsets (three ways), K ablation."""
    from bench.studies.plans import SUBSET_WAYS

    rows = unit_rows(records, "dynamic")
    for r in records_of(records, "flops", "dynamic"):
        k = dict(r.get("model_config") or {}).get("kernels")
        for row in rows:
            any_chans = dict(r.get("model_config") or {}).get("in_chans") == "any"
            if row["unit"] == r.get("unit") and r.get("model") == "dy_resnet20" and not r.get("channels") \
                    and not any_chans:
                row["k"] = k
    e0 = engines[0] if engines else "torch"
    figs = out_dir / "figures"
    main = [r for r in rows if r["group"] in ("VGG static", "VGG dynamic", "ResNet static", "ResNet dynamic",
                                              "ResNet static, any channels", "ResNet dynamic, any channels")]
    parts = [_training_line(rows), "**Cost and accuracy** (RGB input: the grey images copied to 3 channels)\n\n",
             markdown_table(main, measurement_columns(engines)) + "\n\n"]
    findings = []
    by_group = {r["group"]: r for r in main}
    for kind in ("VGG", "ResNet"):
        s, d = by_group.get(f"{kind} static"), by_group.get(f"{kind} dynamic")
        if s and d:
            lat = _latency_ratios(d, s, engines)
            findings.append(
                f"{d['label']} vs {s['label']}: {_ratio(d.get('params'), s.get('params'))} the params, "
                f"{_ratio(d.get('flops'), s.get('flops'))} the FLOPs; p50 latency, timed together: {lat}; "
                f"top-1 {fmt_pct(d.get('top1'))} vs {fmt_pct(s.get('top1'))} ({accuracy_gap(d, s)}).")
    split_text, split_findings = cost_split_table(records, rows)
    parts.append(split_text)
    findings += split_findings
    with_subsets = [r for r in rows if r.get("subsets")]
    if with_subsets:
        sub_rows = [{"label": r["label"], "way": "channel-agnostic" if r.get("subset_mode") == "select" else "naive",
                     **{s: r["subsets"].get(s) for s in subsets}} for r in with_subsets]
        sub_rows += retrained_subset_rows(records, e0)
        subset_nets = [r for r in rows if r["group"] == "subset net"]
        n = next((r.get("samples") for r in records_of(records, "accuracy", "dynamic") if r.get("eval_channels")), None)
        parts.append(f"**Channel subsets, three ways** (top-1 on {n or 'the'} test images through "
                     f"{subset_engine(records)}; the way column says how each row reached the subset)\n\n")
        parts.append("".join(f"- {way}\n" for way in SUBSET_WAYS.values()) + "\n")
        grey = {r.get("dataset", {}).get("name") for r in records_of(records, "accuracy", "dynamic")} & GREY_DATASETS
        if grey:
            parts.append(f"> {', '.join(sorted(grey))} is greyscale: its RGB form copies one plane to R, G and B, so "
                         "every subset carries the same information and the naive subsets score like RGB by "
                         "construction; a channel-agnostic net (mean and max over equal planes) gives the same logits "
                         "on every subset. Run `--dataset cifar10` (or a colour ImageFolder) for the colour "
                         "question.\n\n")
        parts.append(markdown_table(sub_rows, [("model", "label", fmt_text), ("way", "way", fmt_text)]
                                    + [(s, s, fmt_pct) for s in subsets]) + "\n\n")
        parts.append(_img(plot_channel_subsets(with_subsets, subsets, figs / "dynamic_subsets.png"), out_dir,
                          "channel subsets"))
        if subset_nets:
            parts.append("**Nets built for the subset** (in_chans = number of kept channels, trained on them)\n\n")
            parts.append(markdown_table(subset_nets, [("model", "label", fmt_text), ("params", "params", fmt_count),
                                                      (f"top-1 {e0}", f"top1_{e0}", fmt_pct)]) + "\n\n")
    kab = sorted((r for r in rows if r.get("k") is not None), key=lambda r: r["k"])
    if kab:
        parts.append("**K ablation** (dynamic ResNet-20)\n\n")
        parts.append(markdown_table(kab, [("K", "k", fmt_num), ("params", "params", fmt_count), ("FLOPs", "flops", fmt_count),
                                          (f"top-1 {e0}", f"top1_{e0}", fmt_pct)]
                                    + [(f"p50 ms {e}", f"latency_p50_{e}", fmt_ms) for e in engines]) + "\n\n")
        parts.append(_img(plot_k_ablation(kab, engines, figs / "dynamic_k.png"), out_dir, "K ablation"))
        best = max(kab, key=lambda r: r.get("top1") or 0)
        findings.append(f"K ablation: best top-1 at K={best['k']} ({fmt_pct(best.get('top1'))}); params grow from "
                        f"{fmt_count(kab[0].get('params'))} (K={kab[0]['k']}) to {fmt_count(kab[-1].get('params'))} (K={kab[-1]['k']}).")
    parts.append(_img(plot_learning_curves(main, figs / "dynamic_curves.png", "Static vs dynamic: training curves"),
                      out_dir, "training curves"))
    parts.append(_img(plot_accuracy_vs_flops(rows, figs / "dynamic_acc_flops.png", "Static vs dynamic: accuracy vs FLOPs"),
                      out_dir, "accuracy vs FLOPs"))
    return "".join(parts), findings


def cost_split_rows(records: Sequence[Record], rows: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per cost_split record of the dynamic study: ms per part summed over the net's dynamic layers."""
    p50 = {r.get("unit"): r.get("latency_p50_torch") for r in rows}
    out = []
    for r in records_of(records, "cost_split", "dynamic"):
        total, extra, share = r.get("total_ms") or {}, r.get("extra_ms_by_part") or {}, r.get("extra_share") or {}
        modes = sorted({layer.get("mode") for layer in r.get("layers") or []})
        out.append({"label": r.get("label") or r.get("model"), "batch": r.get("batch"), "forms": ", ".join(modes),
                    "layers": len(r.get("layers") or []), "attention": total.get("attention"),
                    "aggregation": total.get("aggregation"), "conv": total.get("conv"), "other": r.get("other_ms"),
                    "layer": total.get("layer"), "static_conv": total.get("static_conv"),
                    "extra": r.get("extra_ms"), "conv_extra": extra.get("conv"),
                    "share_attention": share.get("attention"), "share_aggregation": share.get("aggregation"),
                    "share_conv": share.get("conv"), "net_p50": p50.get(r.get("unit"))})
    return out


def cost_split_table(records: Sequence[Record], rows: Sequence[dict[str, Any]] = ()) -> tuple[str, list[str]]:
    """The dynamic study's "where the extra latency goes" table and one finding per net ('' without records)."""
    split = cost_split_rows(records, rows)
    if not split:
        return "", []
    text = ("**Where the extra latency goes** (eager torch, batch 1; every DynamicConv2d's parts timed apart on the "
            "input it sees, interleaved in rounds; medians in ms summed over the net's dynamic layers. "
            "*static conv* is the static twin's conv at the same shapes; the extra cost is attention + aggregation + "
            "(conv - static conv); *other* is the layer minus its three parts: choosing the form, reshapes, "
            "allocation)\n\n")
    text += markdown_table(split, [
        ("model", "label", fmt_text), ("form", "forms", fmt_text), ("layers", "layers", fmt_num),
        ("attention", "attention", fmt_ms), ("aggregation", "aggregation", fmt_ms), ("conv", "conv", fmt_ms),
        ("other", "other", fmt_ms), ("layers total", "layer", fmt_ms), ("static conv", "static_conv", fmt_ms),
        ("extra", "extra", fmt_ms), ("attention share", "share_attention", fmt_pct),
        ("aggregation share", "share_aggregation", fmt_pct), ("conv share", "share_conv", fmt_pct),
        ("net p50 ms torch", "net_p50", fmt_ms)]) + "\n\n"
    findings = []
    for r in split:
        shares = {k: r.get(f"share_{k}") for k in ("attention", "aggregation", "conv")}
        if any(v is None for v in shares.values()):
            continue
        top = max(shares, key=lambda k: shares[k])
        findings.append(f"{r['label']}: of the {fmt_ms(r['extra'])} ms its dynamic layers add over static convs "
                        f"(torch, batch 1), {fmt_pct(shares['attention'])} is the attention, "
                        f"{fmt_pct(shares['aggregation'])} the kernel aggregation and {fmt_pct(shares['conv'])} the "
                        f"convolution's own excess; the {top} dominates.")
    return text, findings


def activation_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    rows = unit_rows(records, "activation")
    figs = out_dir / "figures"
    cols = [("activation", "label", fmt_text), ("final train error", "final_train_error", fmt_pct),
            ("test error", "test_error", fmt_pct)] + measurement_columns(engines)[4:]
    parts = [_training_line(rows), markdown_table(rows, cols) + "\n\n",
             _img(plot_learning_curves(rows, figs / "activation_curves.png", "ResNet-20: ReLU vs LeakyReLU vs SiLU"),
                  out_dir, "training curves")]
    findings = []
    scored = [r for r in rows if r.get("top1") is not None]
    if scored:
        best = max(scored, key=lambda r: _mean_top1(r))
        if all((r.get("seeds") or {}).get("spread") is None for r in scored):
            findings.append(f"Highest top-1 here: {best['label']} ({fmt_pct(best['top1'])}), from one short training "
                            "run per activation (seed 0): a gap of a few points can be the seed, not the activation.")
        else:
            findings.append(f"Highest mean top-1 over seeds here: {best['label']} ({seed_cell(best['seeds'])}).")
        relu = next((r for r in rows if r["label"] == "relu"), None)
        for r in rows:
            if relu is not None and r is not relu:
                findings.append(f"{r['label']} vs relu: top-1 {accuracy_gap(r, relu)}; p50 latency of {r['label']} "
                                f"over relu, timed together: {_latency_ratios(r, relu, engines)}.")
    return "".join(parts), findings


def family_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    rows = unit_rows(records, "family")
    figs = out_dir / "figures"
    cols = [("model", "label", fmt_text), ("family", "group", fmt_text)] + measurement_columns(engines)[1:]
    parts = [_training_line(rows), markdown_table(rows, cols) + "\n\n",
             _img(plot_accuracy_vs_flops(rows, figs / "family_acc_flops.png", "Families: accuracy vs FLOPs"),
                  out_dir, "accuracy vs FLOPs"),
             _img(plot_learning_curves(rows, figs / "family_curves.png", "Families: training curves"), out_dir,
                  "training curves"),
             _img(plot_per_class(rows, figs / "family_per_class.png", "Families: per-class F1 (test split)"), out_dir,
                  "per-class F1")]
    findings = []
    target = next((r for r in rows if r["group"] == "ResNet (target)"), None)
    rrdb = next((r for r in rows if r["group"] == "4-layer RRDB + attention"), None)
    if target and rrdb and target.get("top1") and rrdb.get("top1") is not None:
        share = rrdb["top1"] / target["top1"]
        verdict = "MET" if share >= 0.9 else "NOT MET"
        findings.append(
            f"Coursework target (4-layer net >= 90% of {target['label']}'s accuracy): **{verdict}**: "
            f"{rrdb['label']} {fmt_pct(rrdb['top1'])} vs {target['label']} {fmt_pct(target['top1'])} = {100 * share:.1f}% "
            f"of it, with {_ratio(rrdb.get('params'), target.get('params'))} the params and "
            f"{_ratio(rrdb.get('flops'), target.get('flops'))} the FLOPs; top-1 {accuracy_gap(rrdb, target)}.")
    elif target and not rrdb:
        findings.append("The 4-layer RRDB + attention net is not in the model zoo, so the 90% target could not be checked.")
    scored = [r for r in rows if r.get("top1") is not None and r.get("flops")]
    if scored:
        best = max(scored, key=lambda r: r["top1"])
        cheapest = min(scored, key=lambda r: r["flops"])
        findings.append(f"Most accurate: {best['label']} ({fmt_pct(best['top1'])}, {fmt_count(best['flops'])} FLOPs; over "
                        f"seeds {best['top1_seeds']}); cheapest: {cheapest['label']} ({fmt_count(cheapest['flops'])} "
                        f"FLOPs, {fmt_pct(cheapest['top1'])}).")
    return "".join(parts), findings


def retrained_subset_rows(records: Sequence[Record], engine: str) -> list[dict[str, Any]]:
    """The dynamic study's nets built for one subset, one row per architecture: its top-1 under each subset."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records_of(records, "accuracy", "dynamic"):
        if not r.get("channels") or r.get("eval_channels") or r.get("engine") != engine or r.get("accuracy_only"):
            continue
        kernels = dict(r.get("model_config") or {}).get("kernels")
        label = f"{r.get('model')} K={kernels}" if kernels else str(r.get("model"))
        rows.setdefault(label, {"label": f"{label} in_chans=len(subset)", "way": "retrained per subset"})
        rows[label][r["channels"]] = r.get("top1")
    return list(rows.values())


def subset_engine(records: Sequence[Record]) -> str:
    """The engine that measured the channel-subset accuracies."""
    return next((r["engine"] for r in records if r.get("kind") == "accuracy" and r.get("eval_channels")), "n/a")


GREY_DATASETS = {"fashion-mnist", "digits"}

def _z95(top1: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of a top-1 measured on `n` images."""
    return 1.96 * math.sqrt(max(top1 * (1 - top1), 0.0) / n) if n else math.nan


def _rung(row: dict[str, Any]) -> str:
    return f"{row['engine']} {row['precision']}"


def _speed_phrase(row: dict[str, Any]) -> str:
    """What the speedup interval supports: 'is 5.86x [4.10, 6.30] faster than torch fp32', 'is 2.10x [...] slower',
    or 'no measurable difference'."""
    speed, ci, verdict = row.get("speedup"), row.get("speedup_ci") or [None, None], row.get("verdict")
    if speed is None or None in ci:
        return f"not timed ({row.get('error') or 'no timing'})"
    if verdict == "faster":
        return f"is {speed:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] faster than torch fp32"
    if verdict == "slower":  # as a slowdown: torch fp32's speed over this rung's, interval inverted
        return f"is {1 / speed:.2f}x [{1 / ci[1]:.2f}, {1 / ci[0]:.2f}] slower than torch fp32"
    return (f"shows no measurable difference from torch fp32 (speedup {speed:.2f}x, but its 95% CI "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] does not lie wholly beyond 1 \u00b1 3%)")


def ladder_nets(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per net of the ladder study, in plan order: label, unit, and the ladder its records carry
    (`rows`, `int8`, settings: the field `ladder` of its torch fp32 batch-1 latency record)."""
    nets: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("study") != "ladder" or not is_ladder_record(r):
            continue
        label = r.get("label") or r.get("unit")
        net = nets.setdefault(label, {"label": label, "unit": r.get("unit"), "ladder": None})
        if r.get("ladder") and net["ladder"] is None:
            net["ladder"] = r["ladder"]
    return list(nets.values())


def _ladder_table(rows: Sequence[dict[str, Any]]) -> str:
    from bench.scenarios.ladder import LADDER_COLUMNS, ladder_rows_table

    cells = ladder_rows_table(rows)
    head = "| " + " | ".join(LADDER_COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(LADDER_COLUMNS))) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells])


def _int8_line(int8: dict[str, Any] | None) -> str:
    """The int8 file's calibration and its check against fp32, or why there is none."""
    if not int8:
        return ""
    if int8.get("error"):
        return f"int8 file: refused ({int8['error']}).\n\n"
    check = int8.get("check") or {}
    if not check:
        return ""
    verdict = "**passed**" if check.get("passed") else "**FAILED** (its rungs are measured anyway, marked 'check failed')"
    ratio = check.get("accuracy_ratio")
    return (f"int8 file: {int8.get('method')} calibration on {int8.get('calibration_images')} training images; its "
            f"check on {check.get('images')} test images {verdict}: it predicts the fp32 file's class on "
            f"{fmt_pct(check.get('top1_agreement'))} of them (needs {fmt_pct(check.get('min_agreement'))}), "
            f"top-1 {fmt_pct(check.get('int8_accuracy'))} vs {fmt_pct(check.get('fp32_accuracy'))} fp32 = accuracy "
            f"ratio {'n/a' if ratio is None else f'{ratio:.3f}'} (needs {check.get('min_accuracy_ratio')}).\n\n")


def ladder_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    """The precision ladder of each net: rows table, accuracy-vs-latency plot, rungs not run, int8 check,
    and findings stated only where the speedup interval supports them."""
    from bench.scenarios.ladder import REFERENCE, plot_ladder

    figs = out_dir / "figures"
    parts, findings = [], []
    for net in ladder_nets(records):
        label, ladder = net["label"], net["ladder"]
        parts.append(f"### {label}\n\n")
        if not ladder or not ladder.get("rows"):
            parts.append("No ladder rows in the records.\n\n")
            continue
        rows = ladder["rows"]
        ref = next((r for r in rows if (r["engine"], r["precision"]) == REFERENCE), {})
        ran = [r for r in rows if r.get("runs")]
        n = ref.get("samples") or ladder.get("test_limit")
        settings = ladder.get("settings") or {}
        throughput = (f"; images/s timed again at batch {ladder['throughput_batch']}"
                      if ladder.get("throughput_batch") else "")
        parts.append(f"Every rung is evaluated on the same {n} test images and timed at batch 1, interleaved with "
                     f"the others ({settings.get('iters')} timed runs in {settings.get('rounds')} rounds){throughput}. "
                     "Speedups are torch fp32's p50 over the rung's with a bootstrap 95% interval over the paired "
                     "rounds; '*' marks the Pareto front (no other rung both faster and at least as accurate).\n\n")
        parts.append(_ladder_table(rows) + "\n\n")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        title = f"{label}: precision ladder (batch 1, {n} test images)"
        parts.append(_img(plot_ladder(rows, figs / f"ladder_{slug}.png", title) if ran else None, out_dir,
                          f"{label} precision ladder"))
        not_run = [r for r in rows if not r.get("runs")]
        if not_run:
            parts.append("Not run here:\n\n" + "".join(f"- {_rung(r)}: {r.get('reason') or 'unknown reason'}\n"
                                                        for r in not_run) + "\n")
        parts.append(_int8_line(ladder.get("int8")))
        others = [r for r in ran if (r["engine"], r["precision"]) != REFERENCE]
        speed = [f"- {_rung(r)} {_speed_phrase(r)}.\n" for r in others]
        if speed:
            parts.append("**Speed** (batch-1 p50 latency, timed together)\n\n" + "".join(speed) + "\n")
        top1 = ref.get("top1")
        if top1 is not None and n:
            accuracy = [f"- {_rung(r)}: top-1 {fmt_pct(r.get('top1'))} ({_pp(r.get('top1'), top1)} vs torch fp32); "
                        f"the same class as torch fp32 on {fmt_pct(r.get('agreement'))} of the images"
                        f"{_differ(r.get('agreement'), n)}.\n" for r in others if r.get("top1") is not None]
            parts.append(f"**Accuracy** on {n} test images: torch fp32 scores {fmt_pct(top1)}. As an estimate of "
                         f"the whole test split's top-1, a figure from {n} images carries about "
                         f"\u00b1{100 * _z95(top1, n):.1f} pp of sampling noise (95%); every rung sees the same images, "
                         "so agreement with torch fp32 is the sharper measure of what a precision changes.\n\n"
                         + "".join(accuracy) + "\n")
        findings += _ladder_findings(label, rows, ladder.get("int8"), n)
    return "".join(parts), findings


def _differ(agreement: Any, n: int) -> str:
    if agreement is None or not n:
        return ""
    k = round((1 - agreement) * n)
    return f" ({k} of {n} differ)" if k else ""


def _ladder_findings(label: str, rows: Sequence[dict[str, Any]], int8: dict[str, Any] | None, n: Any) -> list[str]:
    from bench.scenarios.ladder import REFERENCE

    others = [r for r in rows if r.get("runs") and (r["engine"], r["precision"]) != REFERENCE]
    out = []
    faster = sorted((r for r in others if r.get("verdict") == "faster"), key=lambda r: -(r.get("speedup") or 0))
    if faster:
        best = faster[0]
        out.append(f"{label}: {_rung(best)} {_speed_phrase(best)} at batch 1 (p50 {fmt_ms(best.get('p50_ms'))} ms); "
                   f"top-1 {fmt_pct(best.get('top1'))} on {n} test images, the same class as torch fp32 on "
                   f"{fmt_pct(best.get('agreement'))} of them.")
    elif others:
        out.append(f"{label}: no rung is measurably faster than torch fp32 here.")
    slower = [f"{_rung(r)} ({_speed_phrase(r).removeprefix('is ').removesuffix(' slower than torch fp32')})"
              for r in others if r.get("verdict") == "slower"]
    if slower:
        out.append(f"{label}: slower than torch fp32: {', '.join(slower)}.")
    same = [_rung(r) for r in others if r.get("verdict") == "no measurable difference"]
    if same:
        out.append(f"{label}: no measurable difference from torch fp32: {', '.join(same)}.")
    check = (int8 or {}).get("check")
    if check:
        out.append(f"{label}: the int8 check {'passed' if check.get('passed') else 'FAILED'} on {check.get('images')} "
                   f"test images (agreement with fp32 {fmt_pct(check.get('top1_agreement'))}, top-1 "
                   f"{fmt_pct(check.get('int8_accuracy'))} vs {fmt_pct(check.get('fp32_accuracy'))}).")
    front = [_rung(r) for r in rows if r.get("pareto")]
    if front:
        out.append(f"{label}: Pareto front (latency vs top-1): {', '.join(front)}.")
    return out


# --------------------------------------------------------------------------- the training-recipe studies


def seed_groups(records: Sequence[Record], study: str, by: str = "group", engine: str | None = None,
                ) -> list[dict[str, Any]]:
    """One entry per configuration of an accuracy study (its units' `group`; `by="label"`: per label, as a timed
    study's extra seeds share their net's label), in plan order, over its seeds; `engine`: only that engine's
    accuracy records (a timed net has one per engine, its extra seeds torch's alone).

    Each holds `group`, `model`, `train_config` (of its first seed), `top1` {seed: torch top-1 or None when the
    training diverged}, `diverged` {seed: message}, `histories` [(seed, history)], `epochs_run` [epochs per seed],
    `stopped_early` (seeds that stopped early), `classes` and `samples` (of the test split), and the summary
    `mean`, `low`, `high`, `spread` (max - min over the seeds that trained; None with fewer than two) and `n`.
    """
    from bench.studies.runner import DIVERGED

    groups: dict[str, dict[str, Any]] = {}
    seed_of: dict[str, Any] = {}
    for r in records:
        if r.get("study") != study:
            continue
        key = _seed_key(r, by)
        g = groups.setdefault(key, {"group": key, "model": r.get("model"), "train_config": None, "top1": {},
                                    "diverged": {}, "histories": [], "epochs_run": [], "stopped_early": 0,
                                    "classes": None, "samples": None, "label": r.get("label")})
        if r["kind"] == "train":
            config = r.get("train_config") or {}
            seed = config.get("seed")
            seed_of[r.get("unit")] = seed
            g["train_config"] = g["train_config"] or config
            g["histories"].append((seed, r.get("history") or []))
            g["epochs_run"].append(r.get("epochs"))
            g["stopped_early"] += bool(r.get("stopped_early"))
            if config.get(DIVERGED):
                g["diverged"][seed] = config[DIVERGED]
                g["top1"][seed] = None
            classes = (r.get("dataset") or {}).get("num_classes")
            g["classes"] = g["classes"] or classes
    for r in records:
        if r.get("study") == study and r["kind"] == "accuracy" and not r.get("eval_channels") \
                and engine in (None, r.get("engine")):
            g = groups.get(_seed_key(r, by))
            if g is None:
                continue
            g["top1"][seed_of.get(r.get("unit"))] = r.get("top1")
            g["samples"] = g["samples"] or r.get("samples")
            g["classes"] = g["classes"] or (len(r["per_class"]) if r.get("per_class") else None)
    for g in groups.values():
        values = [v for v in g["top1"].values() if v is not None]
        g["n"] = len(values)
        g["mean"] = sum(values) / len(values) if values else None
        g["low"], g["high"] = (min(values), max(values)) if values else (None, None)
        g["spread"] = g["high"] - g["low"] if len(values) >= 2 else None
    return list(groups.values())


def _seed_key(record: Record, by: str) -> str:
    return str(record.get(by) or record.get("label") or record.get("unit") or "")


def chance_level(group: dict[str, Any]) -> float | None:
    """The top-1 a net that did not train scores at most: 1/classes plus 3 binomial standard errors of the test
    images (a guess's accuracy on `samples` images)."""
    k, n = group.get("classes"), group.get("samples")
    if not k or not n:
        return None
    p = 1.0 / k
    return p + 3 * math.sqrt(p * (1 - p) / n)


def training_outcome(group: dict[str, Any]) -> str:
    """'trained', 'diverged (k of n seeds)', 'did not train (at chance)' or a mix, for tables and verdicts."""
    parts = []
    seeds = len(group["top1"])
    if group["diverged"]:
        parts.append(f"diverged ({len(group['diverged'])} of {seeds} seeds)")
    chance = chance_level(group)
    at_chance = [v for v in group["top1"].values() if v is not None and chance is not None and v <= chance]
    if at_chance:
        parts.append(f"did not train, at chance ({len(at_chance)} of {seeds} seeds)")
    return "; ".join(parts) or "trained"


def seed_difference(base: dict[str, Any], other: dict[str, Any]) -> tuple[float | None, str]:
    """(other's mean top-1 minus base's, and what it supports): 'within seed noise' when the difference is no
    larger than the wider of the two seed spreads (max - min); 'n/a' when one did not train at all."""
    if base.get("mean") is None or other.get("mean") is None:
        return None, "n/a (a configuration has no trained seed)"
    diff = other["mean"] - base["mean"]
    spreads = [s for s in (base.get("spread"), other.get("spread")) if s is not None]
    if not spreads:
        return diff, "one seed each: no spread to compare with"
    noise = max(spreads)
    if abs(diff) <= noise:
        return diff, f"within seed noise (seed spread {100 * noise:.1f} pp)"
    return diff, f"{'gain' if diff > 0 else 'loss'} beyond the seed spread ({100 * noise:.1f} pp)"


def seed_cell(group: dict[str, Any]) -> str:
    """'81.2% (80.1-82.3%)': the mean top-1 and its min-max over the seeds; '81.2% (one training run)' with one."""
    if group.get("mean") is None:
        return "failed"
    if group.get("spread") is None:
        return f"{fmt_pct(group['mean'])} (one training run)"
    return f"{fmt_pct(group['mean'])} ({fmt_pct(group['low'])}-{fmt_pct(group['high'])})"


def _reference_cell(value: Any) -> str:
    if value == "failed":
        return "failed to train (about 1%)"
    return "n/a" if value is None else f"{value:.1f}%"


def _curves(groups: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Learning curves of each configuration's first seed that has any epochs."""
    rows = []
    for g in groups:
        seed, history = next(((s, h) for s, h in g["histories"] if h), (None, []))
        if history:
            rows.append({"label": f"{g['group'].split('|')[-1]} (seed {seed})", "history": history})
    return plot_learning_curves(rows, path, title) if rows else None


def recipe_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    """The 001 ladder: top-1 per rung over its seeds, the gain over the previous rung and whether it exceeds the
    seed spread, the curves, and the seed report's figures as a reference."""
    from bench.studies.plans import RECIPE_SEED_TOP1, SEED_REPORT_LABEL

    groups = seed_groups(records, "recipe")
    rows, findings, previous = [], [], None
    for index, g in enumerate(groups):
        diff, verdict = seed_difference(previous, g) if previous else (None, "")
        rows.append({"rung": g["group"], "top1": seed_cell(g), "seeds": f"{g['n']} of {len(g['top1'])}",
                     "gain": "" if previous is None else _pp(g.get("mean"), previous.get("mean")),
                     "verdict": verdict, "outcome": training_outcome(g),
                     "epochs": ", ".join(str(e) for e in g["epochs_run"]) + (
                         f" ({g['stopped_early']} stopped early)" if g["stopped_early"] else ""),
                     "reference": _reference_cell(RECIPE_SEED_TOP1[index] if index < len(RECIPE_SEED_TOP1) else None)})
        seed_ref = RECIPE_SEED_TOP1[index] if index < len(RECIPE_SEED_TOP1) else None
        spread = "n/a" if g.get("spread") is None else f"{100 * g['spread']:.1f} pp"
        line = (f"{g['group']}: top-1 {fmt_pct(g.get('mean'))} over {g['n']} seed(s) (spread {spread})"
                f"{'' if seed_ref is None else f'; seed report {seed_ref:.1f}% ({SEED_REPORT_LABEL})'}")
        if previous is not None:
            line += f"; {_pp(g.get('mean'), previous.get('mean'))} over the previous rung: {verdict}"
        if training_outcome(g) != "trained":
            line += f"; {training_outcome(g)}"
        findings.append(line + ".")
        previous = g
    cols = [("rung", "rung", fmt_text), ("test top-1, mean (min-max over seeds)", "top1", fmt_text),
            ("seeds trained", "seeds", fmt_text), ("gain over previous rung", "gain", fmt_text),
            ("vs seed spread", "verdict", fmt_text), ("outcome", "outcome", fmt_text),
            ("epochs run per seed", "epochs", fmt_text), (f"seed report ({SEED_REPORT_LABEL})", "reference", fmt_text)]
    parts = [markdown_table(rows, cols) + "\n\n"]
    parts.append(_img(_curves(groups, out_dir / "figures" / "recipe_curves.png", "001 ladder: training curves"),
                      out_dir, "recipe ladder curves"))
    return "".join(parts), findings


def _sweep_role(group: dict[str, Any]) -> str:
    return group["group"].split("|", 1)[0]


def _sweep_rows(groups: Sequence[dict[str, Any]], role: str, sweep: str) -> list[tuple[object, dict[str, Any]]]:
    """(swept value, group) of `role`'s configurations that belong to `sweep` (one setting of SWEEP_BASE varied)."""
    from bench.studies.plans import SWEEP_BASE

    out = []
    for g in groups:
        if _sweep_role(g) != role or not g["train_config"]:
            continue
        config = g["train_config"]
        same = {k: (config.get(k) == SWEEP_BASE[k] if k != "augment" else bool(config.get(k)))
                for k in ("optimizer", "lr", "augment")}
        varied = {"lr": "lr", "optimizer": "optimizer", "augment": "augment"}[sweep]
        if all(v for k, v in same.items() if k != varied):
            value = bool(config.get("augment")) if sweep == "augment" else config.get(varied)
            out.append((value, g))
    return out


def optimizer_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str]) -> tuple[str, list[str]]:
    """The 004 sweeps per net: top-1 over seeds for each swept value, its difference from the base configuration
    (SGD, lr 0.001, augmentation on) against the seed spread, the seed report's figures, and whether VGG without
    BatchNorm fails under Adam."""
    from bench.studies.plans import SEED_REPORT_LABEL, SWEEP_BASE, SWEEP_SEED_TOP1, SWEEPS

    groups = seed_groups(records, "optimizer")
    roles = list(dict.fromkeys(_sweep_role(g) for g in groups if _sweep_role(g) != "sweep_vgg_nobn"))
    parts, findings = [], []
    names = {"lr": "Learning rate (SGD, augmentation on)", "optimizer": "Optimizer (lr 0.001, augmentation on)",
             "augment": "Augmentation: flips and 90/180/270 rotations on vs off (SGD, lr 0.001)"}
    for sweep in SWEEPS[:3]:
        rows = []
        for role in roles:
            points = _sweep_rows(groups, role, sweep)
            if len(points) < 2:
                continue
            base_value = bool(SWEEP_BASE["augment"]) if sweep == "augment" else SWEEP_BASE[sweep]
            base = next((g for v, g in points if v == base_value), None)
            kind = "vgg" if role.startswith("sweep_vgg") else "resnet"
            for value, g in points:
                diff, verdict = (None, "the base") if g is base else seed_difference(base, g) if base else (None, "")
                ref = SWEEP_SEED_TOP1.get((kind, sweep, value), "n/a")
                rows.append({"net": g["model"], "value": "on" if value is True else "off" if value is False else value,
                             "top1": seed_cell(g), "outcome": training_outcome(g),
                             "diff": "" if g is base or not base else _pp(g.get("mean"), base.get("mean")),
                             "verdict": verdict,
                             "reference": "failed" if ref is None else None if ref == "n/a" else ref})
                if g is not base and base is not None:
                    findings.append(f"{g['model']}, {sweep} {rows[-1]['value']}: top-1 {fmt_pct(g.get('mean'))} vs "
                                    f"{fmt_pct(base.get('mean'))} at the base ({rows[-1]['diff'] or 'n/a'}): {verdict}"
                                    f"{'' if training_outcome(g) == 'trained' else '; ' + training_outcome(g)}.")
        if not rows:
            continue
        cols = [("net", "net", fmt_text), (sweep, "value", fmt_num if sweep == "lr" else fmt_text),
                ("test top-1, mean (min-max over seeds)", "top1", fmt_text), ("outcome", "outcome", fmt_text),
                ("vs base", "diff", fmt_text), ("vs seed spread", "verdict", fmt_text),
                (f"seed report ({SEED_REPORT_LABEL})", "reference", _reference_cell)]
        parts.append(f"**{names[sweep]}**\n\n" + markdown_table(rows, cols) + "\n\n")
    nobn = next((g for g in groups if _sweep_role(g) == "sweep_vgg_nobn"), None)
    if nobn is not None:
        bn = next((g for g in groups if _sweep_role(g) == "sweep_vgg" and (g["train_config"] or {}).get("optimizer")
                   == "adam"), None)
        failed = training_outcome(nobn) != "trained"
        bn_trained = bn is not None and training_outcome(bn) == "trained"
        line = (f"VGG without BatchNorm ({nobn['model']}) under Adam: top-1 {seed_cell(nobn)}, "
                f"{training_outcome(nobn)}")
        if bn is not None:
            line += f"; with BatchNorm ({bn['model']}) under Adam: {seed_cell(bn)}, {training_outcome(bn)}"
        if not failed:
            line += ". The seed report's failure of VGG19 under Adam (about 1%) does not reproduce here."
        elif bn_trained:
            line += (". The seed report's failure under Adam reproduces here for the net without BatchNorm only, as "
                     "its vanishing-gradient explanation predicts; gradients were not measured, so this shows that "
                     "BatchNorm separates the two, not why.")
        else:
            line += (". Whether the seed report's failure under Adam reproduces cannot be told here: the net with "
                     "BatchNorm did not train either (too little training at this preset, or Adam fails for both).")
        parts.append(f"**VGG without BatchNorm under Adam**\n\n{line}\n\n")
        findings.append(line)
    parts.append(_img(_curves(groups, out_dir / "figures" / "optimizer_curves.png", "004 sweeps: training curves"),
                      out_dir, "optimizer sweep curves"))
    return "".join(parts), findings


SECTIONS = {"depth": depth_section, "activation": activation_section, "family": family_section,
            "ladder": ladder_section, "recipe": recipe_section, "optimizer": optimizer_section}


def parity_table(records: Sequence[Record]) -> str:
    """One row per unique unit: exporter, parity verdict and worst error, engine agreement."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "export":
            seen.setdefault(r["unit"], {"label": r["unit"], "exporter": r.get("exporter"),
                                        "parity": "passed" if r.get("parity_passed") else "FAILED",
                                        "err": r.get("parity_max_abs_err")})
        if is_ladder_record(r):
            continue  # a ladder's rungs are compared in its own section
        if r.get("kind") == "accuracy" and r.get("engine") != r.get("reference_engine") and not r.get("eval_channels"):
            if r["unit"] in seen:
                seen[r["unit"]][f"agree_{r['engine']}"] = r.get("agreement")
    engines = sorted({k[6:] for row in seen.values() for k in row if k.startswith("agree_")})
    cols = [("unit", "label", fmt_text), ("exporter", "exporter", fmt_text), ("ONNX parity", "parity", fmt_text),
            ("max abs err", "err", lambda v: "n/a" if v is None else f"{v:.2g}")]
    cols += [(f"prediction agreement {e}", f"agree_{e}", fmt_pct) for e in engines]
    return markdown_table(list(seen.values()), cols)


def training_schedules(records: Iterable[Record]) -> list[str]:
    """The learning-rate schedules the run's nets trained with (from their train records), in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        if r.get("kind") == "train":
            schedule = (r.get("train_config") or {}).get("schedule")
            if schedule:
                seen.setdefault(schedule, None)
    return list(seen)


def schedule_note(records: Iterable[Record], preset: dict[str, Any]) -> str:
    """', cosine schedule' for the preset line: what the train records ran, else what the preset names, else ''."""
    schedules = training_schedules(records) or ([preset["schedule"]] if preset.get("schedule") else [])
    if not schedules:
        return ""
    return f", {' / '.join(schedules)} schedule{'s' if len(schedules) > 1 else ''}"


def contention_note(records: Sequence[Record]) -> str:
    """A warning line when some timings were taken while other work competed for the CPU, else ''."""
    timed = {(r.get("unit"), r.get("engine"), r.get("rung"), r.get("batch"), r["kind"]): r for r in records
             if r["kind"] in ("latency", "throughput")}
    busy = [r for r in timed.values() if (r.get("contention") or {}).get("contended")]
    if not busy:
        return ""
    # The kinds of evidence, without each run's figures (the records hold those).
    reasons = sorted({re.sub(r"\s+", " ", re.sub(r"[\d.]+(x|%)?", "", reason)).strip()
                      for r in busy for reason in r["contention"]["reasons"]})
    return (f"**Warning:** {len(busy)} of {len(timed)} timings were taken while other work competed for the CPU "
            f"({'; '.join(reasons)}); their latencies, and ratios built on them, may be off. "
            "Rerun on a quiet machine (`--require-quiet` on the measuring commands refuses a busy one).\n")


def render_report(records: Sequence[Record], run: dict[str, Any], out_dir: str | Path) -> str:
    """The Markdown report of a run (its plots written under `out_dir/figures/`)."""
    out_dir = Path(out_dir)
    engines = engines_in(records) or list(run.get("engines") or [])
    machine = run.get("machine") or (records[0]["machine"] if records else {})
    preset = run.get("preset_settings", {})
    studies = run.get("studies", [])
    minutes = (run.get("measured_seconds") or 0) / 60
    lines = [f"# {run.get('title', 'rbench report')}: preset {run.get('preset')}\n",
             f"Data: {run.get('dataset_note', run.get('dataset'))}. Engines: {', '.join(engines)} on "
             f"{run.get('device', 'cpu')}. Machine: {machine.get('cpu')} ({machine.get('cores_usable')} usable cores"
             f"{', GPU ' + machine['gpu']['name'] if machine.get('gpu') else ''}), torch "
             f"{machine.get('versions', {}).get('torch')}, onnxruntime {machine.get('versions', {}).get('onnxruntime')}.\n",
             f"Measured time of all units: {minutes:.1f} min (wall time of the last invocation: "
             f"{run.get('wall_seconds_this_invocation', 0) / 60:.1f} min). Command: `{run.get('command')}`.\n",
             f"Preset: {preset.get('train_size') or 'all'} train+val images, {preset.get('test_size') or 'all'} test "
             f"images, {preset.get('epochs')} epoch(s) of {preset.get('optimizer')} (lr {preset.get('lr') or 'default'}"
             f"{schedule_note(records, preset)}), batch {preset.get('batch_size')}, input "
             f"{preset.get('input_size')}x{preset.get('input_size')}; latency = batch 1, {preset.get('warmup')} "
             f"warm-up + {preset.get('iters')} timed runs (p50 shown); throughput = batch {preset.get('throughput_batch')}; "
             f"ONNX exporter: {preset.get('exporter')}.\n",
             "Units: params = all parameters (trainable or not); MACs by thop; FLOPs by torch's flop counter (2 per MAC), per "
             "image; latency in ms; top-1 on the test split through each engine. Records behind every number: "
             "[records.jsonl](records.jsonl).\n",
             "Timing: each study's nets are timed together, per engine, interleaved in rounds (a new random order "
             "each round), after all of them are trained and exported. A latency ratio comes with its bootstrap 95% "
             "interval and says faster or slower only when the whole interval lies beyond 1 \u00b1 3%; otherwise "
             "'no measurable difference'. Accuracy comes from one short training run per net (seed 0) unless the "
             "'over seeds' column gives a mean and min-max over several (the preset's accuracy_seeds: the extra seeds "
             "are trained and scored by torch only, not exported or timed); an accuracy difference no larger than the "
             "spread between seeds is 'within seed noise', and one without a second seed says 'one training run'"
             + ("; the training-recipe studies (recipe, optimizer) train every configuration with several seeds and "
                "call a difference no larger than the spread between seeds 'within seed noise'"
                if any(s.get("name") in ("recipe", "optimizer") for s in studies) else "") + ".\n",
             contention_note(records)]
    from bench.studies.shard import merge_note

    lines.append(merge_note(run))
    all_findings: list[tuple[str, list[str]]] = []
    body = []
    for study in studies:
        name = study["name"]
        body.append(f"## {study['title']}\n\n{study['question']}\n\n")
        for note in study.get("notes", ()):
            body.append(f"> {note}\n\n")
        if not records_of(records, study=name):
            body.append("No records yet.\n\n")
            continue
        if name == "dynamic":
            text, findings = dynamic_section(records, out_dir, engines, preset.get("channel_subsets") or ())
        elif name in SECTIONS:
            text, findings = SECTIONS[name](records, out_dir, engines)
        else:
            rows = unit_rows(records, name)
            text, findings = markdown_table(rows, measurement_columns(engines)) + "\n\n", []
        if findings:
            body.append("**Findings**\n\n" + "".join(f"- {f}\n" for f in findings) + "\n")
        body.append(text + "\n")
        all_findings.append((study["title"], findings))
    summary = ["## Key findings\n"]
    for title, findings in all_findings:
        summary += [f"- {title}:"] + [f"  - {f}" for f in findings]
    lines.append("\n".join(summary) + "\n")
    lines += body
    if records_of(records, "export"):  # the training-recipe studies export nothing
        lines.append("## Export parity and engine agreement\n\n" + parity_table(records) + "\n")
    return "\n".join(lines)
