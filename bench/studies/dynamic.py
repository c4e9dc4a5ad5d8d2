"""The dynamic study: static vs dynamic convolution (VGG and ResNet form), channel subsets, K ablation.

Its timing phase adds the cost split of its main dynamic nets (attention, aggregation, convolution;
`bench.scenarios.dynamic_cost`) to the latency and throughput every timed study gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.figures import plot_learning_curves
from bench.report.format import (
    accuracy_gap,
    engines_in,
    fmt_count,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_text,
    image_row,
    latency_ratios,
    markdown_table,
    measurement_columns,
    ratio_text,
    records_of,
    unit_rows,
)
from bench.report.plots import plot_accuracy_vs_flops, plot_channel_subsets, plot_k_ablation
from bench.report.summary import SummaryRow, accuracy_row, latency_row
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, plain_json, setting
from bench.studies.plans import kw, resolve_role, role_kw

#: How the dynamic study reaches a channel subset: the way each of its subset figures used.
SUBSET_WAYS = {
    "naive": "naive: the RGB net, the kept channels averaged and copied to 3",
    "channel-agnostic": "channel-agnostic: one in_chans='any' net, trained once, fed the kept channels natively",
    "retrained": "retrained per subset: a net built for and trained on the kept channels",
}
#: Channel dropout of the dynamic study's channel-agnostic nets: half the channels dropped per sample (at least
#: one kept), so every subset size occurs in training.
AGNOSTIC_CHANNEL_DROPOUT = 0.5


@dataclass(frozen=True)
class DynamicBudget:
    """The dynamic study's knobs."""

    kernels: tuple[int, ...] = setting((3, 4, 5, 6), "kernels")  # K of the dynamic-conv ablation
    channel_subsets: tuple[str, ...] = setting(("RGB", "RG", "GB", "R", "G", "B"), "channel_subsets")  # evaluated
    subset_nets: tuple[str, ...] = setting(("R",), "subset_nets")  # subsets that also get a net of matching in_chans
    max_batches: int | None = setting(None, "dynamic_max_batches")  # training batches per epoch (None: all)
    vgg: bool = setting(True, "dynamic_vgg")  # include the VGG-form pair


def dynamic_plan(preset: Preset) -> StudyPlan:
    budget = STUDY.budget_of(preset)
    vgg = resolve_role("vgg", preset)
    dy_vgg = resolve_role("dy_vgg", preset)
    default_k = 4 if 4 in budget.kernels else budget.kernels[0]
    subsets = budget.channel_subsets
    cap = budget.max_batches  # the same training budget for every net of this study
    units = []
    if budget.vgg:
        units += [
            StudyUnit(vgg, UnitSpec(vgg, kwargs=role_kw(preset, "vgg"), rgb=True, eval_subsets=subsets,
                                    max_batches=cap), group="VGG static"),
            StudyUnit(f"{dy_vgg} K={default_k}",
                      UnitSpec(dy_vgg, kwargs=role_kw(preset, "dy_vgg", kernels=default_k), rgb=True,
                               eval_subsets=subsets, max_batches=cap), group="VGG dynamic"),
        ]
    units += [
        StudyUnit("resnet20", UnitSpec("resnet20", rgb=True, eval_subsets=subsets, max_batches=cap),
                  group="ResNet static"),
    ]
    for k in budget.kernels:
        units.append(StudyUnit(f"dy_resnet20 K={k}",
                               UnitSpec("dy_resnet20", kwargs=kw(kernels=k), rgb=True, max_batches=cap,
                                        eval_subsets=subsets if k == default_k else ()),
                               group="ResNet dynamic" if k == default_k else "K ablation"))
    # The third way: one net per role that takes any channel subset, trained once with channel dropout.
    units += [
        StudyUnit("resnet20 in_chans=any",
                  UnitSpec("resnet20", rgb=True, eval_subsets=subsets, max_batches=cap, any_chans=True,
                           channel_dropout=AGNOSTIC_CHANNEL_DROPOUT), group="ResNet static, any channels"),
        StudyUnit(f"dy_resnet20 K={default_k} in_chans=any",
                  UnitSpec("dy_resnet20", kwargs=kw(kernels=default_k), rgb=True, eval_subsets=subsets,
                           max_batches=cap, any_chans=True, channel_dropout=AGNOSTIC_CHANNEL_DROPOUT),
                  group="ResNet dynamic, any channels"),
    ]
    for subset in budget.subset_nets:
        units.append(StudyUnit(f"resnet20 in_chans={len(subset)} ({subset})",
                               UnitSpec("resnet20", channels=subset, max_batches=cap), group="subset net"))
        units.append(StudyUnit(f"dy_resnet20 K={default_k} in_chans={len(subset)} ({subset})",
                               UnitSpec("dy_resnet20", kwargs=kw(kernels=default_k), channels=subset,
                                        max_batches=cap), group="subset net"))
    notes = [f"Channel subsets three ways: {'; '.join(SUBSET_WAYS.values())}. The channel-agnostic nets "
             "(nets.channel_agnostic: shared per-channel kernels, mean and max over the channels) train on RGB with "
             f"each channel dropped with probability {AGNOSTIC_CHANNEL_DROPOUT:g} per sample (at least one kept)."]
    if not budget.vgg:
        notes.append("This preset leaves out the VGG-form pair (too slow for it); standard and full include it, "
                     "and `rbench dynamic` times it.")
    if cap:
        notes.append(f"Every net of this study trains on at most {cap} batches of {preset.batch_size} per epoch "
                     f"({preset.epochs} epochs): dynamic convolution is slow to train on a CPU, and static and "
                     "dynamic nets get the same budget so that the comparison stays fair.")
    if budget.vgg and vgg != "vgg19_bn":
        notes.append(f"This preset compares {vgg} with {dy_vgg} instead of vgg19_bn with dy_vgg19, so that "
                     "the whole suite fits its CPU time budget; `--preset full` uses VGG-19.")
    return StudyPlan(
        "dynamic", "Dynamic convolution vs static convolution",
        "What does dynamic convolution (K expert kernels mixed per input by attention) cost in FLOPs, params "
        "and latency, what accuracy does it buy, how robust is it to missing colour channels, and how does "
        "K matter?",
        tuple(units), notes=tuple(notes),
    )



#: The dynamic study's units whose latency the report splits into attention, aggregation and convolution.
COST_SPLIT_GROUPS = ("VGG dynamic", "ResNet dynamic")


def dynamic_cost_records(plan: StudyPlan, sources, contexts: list[dict[str, Any]], ctx,
                         on_stage: Callable[[str], None]) -> list[dict[str, Any]]:
    """The cost split (`bench.scenarios.dynamic_cost`) of the dynamic study's main dynamic nets at batch 1, eager torch."""
    from bench.records.builders import cost_split_record
    from bench.scenarios.dynamic_cost import dynamic_cost_split

    if "torch" not in ctx.engines:
        return []
    on_stage("cost-split/torch")
    wanted = {unit.spec.unit_id for unit in plan.units if unit.group in COST_SPLIT_GROUPS}
    iters = max(2, ctx.preset.iters // 20)  # quick: 10 calls of each part per round, 5 rounds
    records = []
    for source, context in zip(sources, contexts):
        if context["unit"] not in wanted:
            continue
        split = dynamic_cost_split(source.module(), source.input_shape, 1, warmup=min(3, ctx.preset.warmup),
                                   iters=iters, rounds=5 if iters >= 5 else 2)
        records.append(cost_split_record(split, model=source.name, model_config=plain_json(source.config),
                                         device=ctx.device, context=context, command=ctx.command))
    return records



def dynamic_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                    preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """Static vs dynamic convolution: cost table, channel subsets (three ways), K ablation."""
    subsets = (preset or {}).get("channel_subsets") or ()
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
    grey_data = {(r.get("dataset") or {}).get("name") for r in records_of(records, "accuracy", "dynamic")} & GREY_DATASETS
    parts = ["**Cost and accuracy** (RGB input" + (": the grey images copied to 3 channels)" if grey_data else ")")
             + "\n\n", markdown_table(main, measurement_columns(engines)) + "\n\n"]
    findings, figures = [], []
    by_group = {r["group"]: r for r in main}
    for kind in ("VGG", "ResNet"):
        s, d = by_group.get(f"{kind} static"), by_group.get(f"{kind} dynamic")
        if s and d:
            lat = latency_ratios(d, s, engines)
            findings.append(
                f"{d['label']} vs {s['label']}: {ratio_text(d.get('params'), s.get('params'))} the params, "
                f"{ratio_text(d.get('flops'), s.get('flops'))} the FLOPs; p50 latency, timed together: {lat}; "
                f"top-1 {fmt_pct(d.get('top1'))} vs {fmt_pct(s.get('top1'))} ({accuracy_gap(d, s)}).")
    for twin, agnostic in AGNOSTIC_TWINS:
        a, b = by_group.get(agnostic), by_group.get(twin)
        if a and b:
            findings.append(f"Channel-agnostic {a['label']} vs its RGB twin {b['label']} on RGB input: top-1 "
                            f"{fmt_pct(a.get('top1'))} vs {fmt_pct(b.get('top1'))} ({accuracy_gap(a, b)}).")
    parts.append(cost_split_table(records, rows)[0])  # its table says what its findings would, once
    with_subsets = [r for r in rows if r.get("subsets")]
    if with_subsets:
        sub_rows = [{"label": r["label"], "way": "channel-agnostic" if r.get("subset_mode") == "select" else "naive",
                     **{s: r["subsets"].get(s) for s in subsets}} for r in with_subsets]
        sub_rows += retrained_subset_rows(records, e0)
        subset_nets = [r for r in rows if r["group"] == "subset net"]
        n = next((r.get("samples") for r in records_of(records, "accuracy", "dynamic") if r.get("eval_channels")), None)
        grey = grey_data
        parts.append(f"**Channel subsets, three ways** (top-1 on {n or 'the'} test images through "
                     f"{subset_engine(records)}{'' if grey else '; the way column says how each row reached the subset'})"
                     + (": " if grey else "\n\n"))
        if grey:
            parts.append(f"{', '.join(sorted(grey))} is greyscale: its RGB form copies one plane to R, G and B, so "
                         "every subset carries the same information and the naive subsets score like RGB by "
                         "construction; a channel-agnostic net (mean and max over equal planes) gives the same logits "
                         "on every subset. Run `--dataset cifar10` (or a colour ImageFolder) for the colour "
                         "question." + (" " if subset_nets else "\n\n"))
        if not grey:  # on a greyscale set every subset scores as RGB does: the table would repeat one column
            parts.append(markdown_table(sub_rows, [("model", "label", fmt_text), ("way", "way", fmt_text)]
                                        + [(s, s, fmt_pct) for s in subsets]) + "\n\n")
        figures.append((plot_channel_subsets(with_subsets, subsets, figs / "dynamic_subsets.png"), "channel subsets"))
        if subset_nets and grey:  # the subset table, when shown, has these nets' rows
            parts.append("Nets built for one subset (in_chans = the kept channels, trained on them), top-1 "
                         f"{e0}: " + "; ".join(f"{r['label']} {fmt_pct(r.get(f'top1_{e0}'))} "
                                               f"({fmt_count(r.get('params'))} params)" for r in subset_nets) + ".\n\n")
    kab = sorted((r for r in rows if r.get("k") is not None), key=lambda r: r["k"])
    if kab:
        # The figure draws the K table (top-1, params, latency per engine); the finding gives its ends.
        figures.append((plot_k_ablation(kab, engines, figs / "dynamic_k.png"), "K ablation"))
        best = max(kab, key=lambda r: r.get("top1") or 0)
        # an engine that timed neither end of the ablation is left out, not printed as "n/a to n/a"
        lat = "; ".join(f"p50 {e} {fmt_ms(kab[0].get(f'latency_p50_{e}'))} to {fmt_ms(kab[-1].get(f'latency_p50_{e}'))} ms"
                        for e in engines if any(r.get(f"latency_p50_{e}") is not None for r in (kab[0], kab[-1])))
        findings.append(f"K ablation (K={kab[0]['k']} to {kab[-1]['k']}): highest top-1 at K={best['k']} "
                        f"({best['top1_seeds']}); params {fmt_count(kab[0].get('params'))} to "
                        f"{fmt_count(kab[-1].get('params'))}{'; ' + lat if lat else ''}.")
    figures.append((plot_learning_curves(main, figs / "dynamic_curves.png", "Static vs dynamic: training curves"),
                    "training curves"))
    figures.append((plot_accuracy_vs_flops(rows, figs / "dynamic_acc_flops.png", "Static vs dynamic: accuracy vs FLOPs"),
                    "accuracy vs FLOPs"))
    parts.append(image_row(out_dir, *figures))
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
    text = ("**Where the time goes** (eager torch, batch 1; every DynamicConv2d's parts timed apart on the input it "
            "sees, interleaved in rounds; medians in ms summed over the net's dynamic layers, absolute times only. "
            "*static conv* is the static twin's conv at the same shapes; *other* is the layer timed whole minus its "
            "three parts: choosing the form, reshapes, allocation)\n\n")
    text += markdown_table(split, [
        ("model", "label", fmt_text), ("form", "forms", fmt_text), ("layers", "layers", fmt_num),
        ("attention", "attention", fmt_ms), ("aggregation", "aggregation", fmt_ms), ("conv", "conv", fmt_ms),
        ("other", "other", fmt_ms), ("layers total", "layer", fmt_ms), ("static conv", "static_conv", fmt_ms),
        ("net p50 ms torch", "net_p50", fmt_ms)]) + "\n\n"
    findings = []
    for r in split:
        parts = {k: r.get(k) for k in ("attention", "aggregation", "conv", "static_conv")}
        if any(v is None for v in parts.values()):
            continue
        # Absolute times, no shares: the parts are timed apart, so a share of their difference can leave [0, 100%].
        findings.append(f"{r['label']} (torch, batch 1, summed over its {r['layers']} dynamic layers): attention "
                        f"{fmt_ms(parts['attention'])} ms, kernel aggregation {fmt_ms(parts['aggregation'])} ms, "
                        f"convolution {fmt_ms(parts['conv'])} ms, against {fmt_ms(parts['static_conv'])} ms for the "
                        "static twin's convolutions at the same shapes.")
    return text, findings



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


def dynamic_summary(records: Sequence[Record], preset: dict[str, Any]) -> list[SummaryRow]:
    """The dynamic study's rows: what dynamic convolution buys in accuracy and costs in latency (ResNet form), and
    what the channel-agnostic stem costs in accuracy against its RGB twin."""
    by_group = {r["group"]: r for r in unit_rows(records, "dynamic")}
    engines = engines_in(records)
    out = []
    s, d = by_group.get("ResNet static"), by_group.get("ResNet dynamic")
    if s and d:
        out.append(accuracy_row("Does dynamic convolution buy accuracy?", d, s))
        if engines:
            out.append(latency_row("What does it cost in latency?", d, s, engines[0]))
    for twin, agnostic in AGNOSTIC_TWINS:
        a, b = by_group.get(agnostic), by_group.get(twin)
        if a and b:
            out.append(accuracy_row(f"Does the channel-agnostic {b['label']} lose accuracy on RGB?", a, b))
    return [row for row in out if row is not None]


#: (RGB twin's group, its channel-agnostic net's group): the pairs the report compares on RGB input.
AGNOSTIC_TWINS = (("ResNet static", "ResNet static, any channels"), ("ResNet dynamic", "ResNet dynamic, any channels"))


STUDY = Study("dynamic", StudyKind.TIMED, dynamic_plan, budget=DynamicBudget, section=dynamic_section, seeded=True,
              extra_timing=dynamic_cost_records, summary=dynamic_summary)
