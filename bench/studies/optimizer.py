"""The optimizer study: the optimizer sweeps (learning rate, SGD/Adagrad/Adam, augmentation) for a VGG-BN and a ResNet,
plus VGG without BN under Adam, over seeds (accuracy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.report.figures import seed_curves
from bench.report.format import fmt_num, fmt_pct, fmt_text, image_link, markdown_table, pp_text
from bench.report.seeds import none_trained, reference_cell, seed_cell, seed_difference, seed_groups, training_outcome
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting
from bench.studies.plans import kw, resolve_role, role_kw
from bench.studies.recipe import SEED_REPORT_LABEL, seeds_of, test_images


@dataclass(frozen=True)
class OptimizerBudget:
    """The optimizer study's knobs: the sweeps that run, on which nets, and each unit's training per seed."""

    sweeps: tuple[str, ...] = setting(("lr", "optimizer", "augment", "no_bn"), "sweeps")  # of SWEEPS
    roles: tuple[str, ...] = setting(("sweep_vgg", "sweep_resnet"), "sweep_roles")  # the nets every sweep trains
    seeds: int = setting(2, "sweep_seeds")
    epochs: int = setting(10, "sweep_epochs")
    max_batches: int | None = setting(None, "sweep_max_batches")

    @property
    def model_roles(self) -> tuple[str, ...]:
        """The model roles this budget names (checked against `bench.studies.plans.ROLE_MODELS`)."""
        return self.roles


#: The optimizer sweeps, each varying one setting of SWEEP_BASE (SGD, lr 0.001, augmentation on).
SWEEPS = ("lr", "optimizer", "augment", "no_bn")
SWEEP_AUGMENT = ("flip", "rotate90")  # the optimizer seed report's random flips and rotations by 90/180/270
SWEEP_BASE: dict[str, object] = {"optimizer": "sgd", "lr": 1e-3, "augment": SWEEP_AUGMENT, "schedule": "constant"}
SWEEP_LRS = (2e-3, 1e-3, 8e-4)
SWEEP_OPTIMIZERS = ("sgd", "adagrad", "adam")
#: The optimizer seed report's figures (%), per (net kind, sweep, value); None: failed to train (about 1%).
SWEEP_SEED_TOP1: dict[tuple[str, str, object], float | None] = {
    ("vgg", "lr", 2e-3): 88.6, ("vgg", "lr", 1e-3): 94.6, ("vgg", "lr", 8e-4): 92.6,
    ("resnet", "lr", 2e-3): 85.0, ("resnet", "lr", 1e-3): 91.8, ("resnet", "lr", 8e-4): 89.4,
    ("vgg", "optimizer", "sgd"): 94.6, ("vgg", "optimizer", "adagrad"): 90.8, ("vgg", "optimizer", "adam"): None,
    ("resnet", "optimizer", "sgd"): 91.8, ("resnet", "optimizer", "adagrad"): 88.2, ("resnet", "optimizer", "adam"): 86.0,
    ("vgg", "augment", True): 94.6, ("vgg", "augment", False): 92.2,
    ("resnet", "augment", True): 91.8, ("resnet", "augment", False): 89.2,
}



def _sweep_configs(preset: Preset, budget: OptimizerBudget) -> list[tuple[str, str, dict[str, object]]]:
    """(role, config label, training overrides) of every configuration the preset's sweeps need, each once."""
    configs: dict[tuple[str, str], dict[str, object]] = {}

    def add(role: str, **changes: object) -> None:
        train = {**SWEEP_BASE, **changes}
        aug = "aug" if train["augment"] else "no aug"
        configs.setdefault((role, f"{train['optimizer']} lr {train['lr']:g} {aug}"), train)

    for role in budget.roles:
        if "lr" in budget.sweeps:
            for lr in SWEEP_LRS:
                add(role, lr=lr)
        if "optimizer" in budget.sweeps:
            for optimizer in SWEEP_OPTIMIZERS:
                add(role, optimizer=optimizer)
        if "augment" in budget.sweeps:
            add(role)
            add(role, augment=())
    if "no_bn" in budget.sweeps:
        if "sweep_vgg" in budget.roles:
            add("sweep_vgg", optimizer="adam")  # the BN twin under the same optimizer
        add("sweep_vgg_nobn", optimizer="adam")
    return [(role, label, train) for (role, label), train in configs.items()]


def optimizer_plan(preset: Preset) -> StudyPlan:
    """The optimizer sweeps (learning rate; SGD/Adagrad/Adam; augmentation on/off) for a VGG-BN and a ResNet, plus the
    VGG without BN under Adam, every configuration per seed."""
    from bench.data import parse_augment

    budget = STUDY.budget_of(preset)
    unknown = sorted(set(budget.sweeps) - set(SWEEPS))
    if unknown:
        raise UsageProblem(f"preset {preset.name!r} names unknown sweep(s) {', '.join(unknown)}; sweeps: {', '.join(SWEEPS)}")
    units = []
    for role, label, train in _sweep_configs(preset, budget):
        name = resolve_role(role, preset)
        overrides = {**train, "augment": parse_augment(train["augment"]), "epochs": budget.epochs}
        for seed in seeds_of(budget.seeds):
            spec = UnitSpec(name, kwargs=role_kw(preset, role), train=kw(**overrides), seed=seed, accuracy_only=True,
                            max_batches=budget.max_batches, test_size=preset.recipe_test_size)
            units.append(StudyUnit(f"{name} {label} (seed {seed})", spec, group=f"{role}|{name} {label}"))
    images = f"at most {budget.max_batches} batches of {preset.batch_size}" if budget.max_batches \
        else "the whole training split"
    nets = ", ".join(resolve_role(r, preset) for r in (*budget.roles, *(("sweep_vgg_nobn",)
                                                                            if "no_bn" in budget.sweeps else ())))
    notes = [f"Every configuration varies one setting of the base (SGD with Nesterov momentum 0.9, lr 0.001, a "
             f"constant rate, random horizontal flips and 90/180/270-degree rotations) and trains {nets} for "
             f"{budget.epochs} epoch(s) of {images} per epoch, with {budget.seeds} seeds; torch top-1 on "
             f"{test_images(preset)}; nothing is exported or timed. Reference column: {SEED_REPORT_LABEL} "
             "(VGG19-BN and ResNet-50, 50 epochs).",
             "A configuration whose loss becomes nan is recorded as failed (diverged) and the study goes on; one whose "
             "test accuracy is not above chance (1/classes plus 3 binomial standard errors) 'did not train'."]
    if set(budget.sweeps) != set(SWEEPS) or set(budget.roles) != {"sweep_vgg", "sweep_resnet"}:
        notes.append(f"Reduced at this preset: sweeps {', '.join(budget.sweeps)} only, on "
                     f"{', '.join(resolve_role(r, preset) for r in budget.roles)}, {budget.epochs} "
                     f"epoch(s) of {images}; the numbers show the study runs, not an answer (`--preset standard` runs "
                     "every sweep on both nets).")
    return StudyPlan("optimizer", "Learning rate x optimizer x augmentation for VGG vs ResNet",
                     "How do learning rate, optimizer (SGD, Adagrad, Adam) and augmentation change a VGG-BN's and a "
                     "ResNet's test accuracy, which differences exceed the seed spread, and does VGG without BatchNorm "
                     "fail under Adam as the seed report's VGG19 did (its explanation: vanishing gradients)?",
                     tuple(units), notes=tuple(notes), kind=StudyKind.ACCURACY)



def _sweep_role(group: dict[str, Any]) -> str:
    return group["group"].split("|", 1)[0]


def _sweep_rows(groups: Sequence[dict[str, Any]], role: str, sweep: str) -> list[tuple[object, dict[str, Any]]]:
    """(swept value, group) of `role`'s configurations that belong to `sweep` (one setting of SWEEP_BASE varied)."""
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


def optimizer_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """The optimizer sweeps per net: top-1 over seeds for each swept value, its difference from the base configuration
    (SGD, lr 0.001, augmentation on) against the seed spread, the seed report's figures, and whether VGG without
    BatchNorm fails under Adam."""

    groups = seed_groups(records, "optimizer")
    untrained = none_trained(groups)
    if untrained:
        return untrained, []
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
                             "diff": "" if g is base or not base else pp_text(g.get("mean"), base.get("mean")),
                             "verdict": verdict,
                             "reference": "failed" if ref is None else None if ref == "n/a" else ref})
                # The table gives every point; a finding, what its interval decides.
                if g is not base and base is not None and verdict.endswith(("better", "worse")):
                    findings.append(f"{g['model']}, {sweep} {rows[-1]['value']}: top-1 {fmt_pct(g.get('mean'))} vs "
                                    f"{fmt_pct(base.get('mean'))} at the base ({rows[-1]['diff'] or 'n/a'}): {verdict}"
                                    f"{'' if training_outcome(g) == 'trained' else '; ' + training_outcome(g)}.")
        if not rows:
            continue
        cols = [("net", "net", fmt_text), (sweep, "value", fmt_num if sweep == "lr" else fmt_text),
                ("test top-1, mean (min-max over seeds)", "top1", fmt_text), ("outcome", "outcome", fmt_text),
                ("vs base", "diff", fmt_text), ("vs seed spread", "verdict", fmt_text),
                (f"seed report ({SEED_REPORT_LABEL})", "reference", reference_cell)]
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
        findings.append(line)  # said once, among the findings
    parts.append(image_link(seed_curves(groups, out_dir / "figures" / "optimizer_curves.png", "optimizer sweeps: training curves"),
                      out_dir, "optimizer sweep curves"))
    return "".join(parts), findings



STUDY = Study("optimizer", StudyKind.ACCURACY, optimizer_plan, budget=OptimizerBudget, section=optimizer_section)
