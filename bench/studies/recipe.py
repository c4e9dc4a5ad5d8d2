"""The recipe study: the recipe ladder on a Keras-style ResNet, one trick at a time, over seeds (accuracy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report.figures import seed_curves
from bench.report.format import fmt_pct, fmt_text, image_link, markdown_table, pp_text
from bench.report.seeds import none_trained, reference_cell, seed_cell, seed_difference, seed_groups, training_outcome
from bench.studies.base import Preset, Record, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec, setting
from bench.studies.plans import kw, resolve_role


@dataclass(frozen=True)
class RecipeBudget:
    """The recipe study's knobs: each unit trains `epochs` epochs of at most `max_batches` batches (None: the whole
    training split) per seed."""

    rungs: int = setting(5, "recipe_rungs")  # how many rungs of the recipe ladder (RECIPE_RUNGS) run, from the first
    seeds: int = setting(2, "recipe_seeds")
    epochs: int = setting(10, "recipe_epochs")
    max_batches: int | None = setting(None, "recipe_max_batches")
    patience: tuple[int, int] = setting((10, 5), "recipe_patience")  # (early stopping, reduce-on-plateau) epochs


#: The recipe seed report's augmentation (Keras ImageDataGenerator style): rotation, shift, horizontal flip, zoom.
RECIPE_AUGMENT = ("rotate:15", "translate:0.1", "flip", "scale:0.1")
#: Stands for the preset's patience (`Preset.recipe_patience`) in a rung's training overrides.
PRESET_PATIENCE = "preset"
#: The recipe ladder: (label, what the rung adds, builder kwargs, training overrides); each rung keeps the previous
#: rung's settings and adds its own. '{es}' and '{plateau}' in the text are the preset's patiences.
RECIPE_RUNGS: tuple[tuple[str, str, dict[str, object], dict[str, object]], ...] = (
    ("baseline", "Keras-style bottleneck ResNet, Adam at a constant rate, no augmentation, the last epoch's weights",
     {}, {"optimizer": "adam", "lr": 1e-3, "schedule": "constant", "augment": (), "restore_best": False}),
    ("+ augmentation", "rotation +-15 deg, shift 10%, horizontal flip, zoom +-10%", {}, {"augment": RECIPE_AUGMENT}),
    ("+ deeper, early stopping", "one more block per stage; early stopping (patience {es}) restoring the best weights",
     {"extra_blocks": 1}, {"early_stop": PRESET_PATIENCE, "restore_best": True}),
    ("+ plateau schedule", "reduce the rate on plateau (factor 0.2, patience {plateau})", {},
     {"schedule": "plateau", "gamma": 0.2, "plateau_patience": PRESET_PATIENCE}),
    ("+ deeper, dropout 0.5", "two more blocks per stage than the baseline; dropout 0.5 before the classifier",
     {"extra_blocks": 2, "drop_rate": 0.5}, {}),
)
#: The seed reports' accuracies (%): CIFAR-10, not comparable with another data set's.
RECIPE_SEED_TOP1 = (72.3, 82.9, 83.4, 87.3, 89.2)
SEED_REPORT_LABEL = "CIFAR-10, from the seed report, not comparable across data sets"


def test_images(preset: Preset) -> str:
    size = preset.recipe_test_size or preset.test_size
    return "the whole test split" if size is None else f"{size} test images (the run's test split, cut to that size)"


def seeds_of(count: int) -> range:
    return range(count)



def recipe_plan(preset: Preset) -> StudyPlan:
    """The recipe ladder on the Keras-style ResNet: each rung adds one thing to the previous, every rung per seed."""
    from bench.data import parse_augment

    budget = STUDY.budget_of(preset)
    name = resolve_role("keras_resnet", preset)
    es, plateau = budget.patience
    patience = {"es": es, "plateau": plateau}
    preset_patience = {"early_stop": es, "plateau_patience": plateau}
    rungs = RECIPE_RUNGS[:max(1, min(budget.rungs, len(RECIPE_RUNGS)))]
    units, kwargs, train = [], dict(preset.model_kwargs.get("keras_resnet", {})), {"epochs": budget.epochs}
    for index, (label, _, rung_kwargs, rung_train) in enumerate(rungs):
        kwargs.update(rung_kwargs)
        train.update({k: preset_patience[k] if v == PRESET_PATIENCE else v for k, v in rung_train.items()})
        train["augment"] = parse_augment(train.get("augment", ()))
        for seed in seeds_of(budget.seeds):
            spec = UnitSpec(name, kwargs=kw(**kwargs), train=kw(**train), seed=seed, accuracy_only=True,
                            max_batches=budget.max_batches, test_size=preset.recipe_test_size)
            units.append(StudyUnit(f"{index + 1}. {label} (seed {seed})", spec, group=f"{index + 1}. {label}"))
    images = f"at most {budget.max_batches} batches of {preset.batch_size}" if budget.max_batches \
        else "the whole training split"
    notes = [
        f"Rungs: {'; '.join(f'{i + 1}. {label}: {what.format(**patience)}' for i, (label, what, _, _) in enumerate(rungs))}.",
        f"Each rung trains {name} for {budget.epochs} epoch(s) of {images} per epoch, with "
        f"{budget.seeds} seeds (initial weights, shuffling, augmentation; the data split is the run's), and is "
        f"scored by torch top-1 on {test_images(preset)}; nothing is exported or timed. Reference column: "
        f"{SEED_REPORT_LABEL}.",
    ]
    if len(rungs) < len(RECIPE_RUNGS):
        notes.append(f"Reduced at this preset: only the first {len(rungs)} of the {len(RECIPE_RUNGS)} rungs, "
                     f"{budget.epochs} epoch(s) of {images}; the numbers show the study runs, not what the "
                     "recipe is worth (`--preset standard` runs every rung long enough to separate them).")
    for what, value in (("early stopping", es), ("plateau", plateau)):
        if len(rungs) >= (3 if what == "early stopping" else 4) and value >= budget.epochs:
            notes.append(f"The {what} patience ({value}) is not below the {budget.epochs} epoch(s) of this "
                         f"preset: that rung's {what} never acts here.")
    return StudyPlan("recipe", "Training recipe: one trick at a time on a Keras-style ResNet",
                     "How much does each trick of the recipe study's seed report (augmentation, a deeper net with early stopping, "
                     "a plateau schedule, more depth with dropout) add to test accuracy, and is each gain larger than "
                     "the spread between seeds?", tuple(units), notes=tuple(notes), kind=StudyKind.ACCURACY)



def recipe_section(records: Sequence[Record], out_dir: Path, engines: Sequence[str],
                   preset: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """The recipe ladder: top-1 per rung over its seeds, the gain over the previous rung and whether it exceeds the
    seed spread, the curves, and the seed report's figures as a reference."""
    groups = seed_groups(records, "recipe")
    untrained = none_trained(groups)
    if untrained:
        return untrained, []
    rows, findings, previous = [], [], None
    for index, g in enumerate(groups):
        diff, verdict = seed_difference(previous, g) if previous else (None, "")
        rows.append({"rung": g["group"], "top1": seed_cell(g), "seeds": f"{g['n']} of {len(g['top1'])}",
                     "gain": "" if previous is None else pp_text(g.get("mean"), previous.get("mean")),
                     "verdict": verdict, "outcome": training_outcome(g),
                     "epochs": ", ".join(str(e) for e in g["epochs_run"]) + (
                         f" ({g['stopped_early']} stopped early)" if g["stopped_early"] else ""),
                     "reference": reference_cell(RECIPE_SEED_TOP1[index] if index < len(RECIPE_SEED_TOP1) else None)})
        seed_ref = RECIPE_SEED_TOP1[index] if index < len(RECIPE_SEED_TOP1) else None
        spread = "n/a" if g.get("spread") is None else f"{100 * g['spread']:.1f} pp"
        line = (f"{g['group']}: top-1 {fmt_pct(g.get('mean'))} over {g['n']} seed(s) (spread {spread})"
                f"{'' if seed_ref is None else f'; seed report {seed_ref:.1f}% ({SEED_REPORT_LABEL})'}")
        if previous is not None:
            line += f"; {pp_text(g.get('mean'), previous.get('mean'))} over the previous rung: {verdict}"
        if training_outcome(g) != "trained":
            line += f"; {training_outcome(g)}"
        if verdict.endswith(("better", "worse")):  # the table gives every rung; a finding, what its interval decides
            findings.append(line + ".")
        previous = g
    cols = [("rung", "rung", fmt_text), ("test top-1, mean (min-max over seeds)", "top1", fmt_text),
            ("seeds trained", "seeds", fmt_text), ("gain over previous rung", "gain", fmt_text),
            ("vs seed spread", "verdict", fmt_text), ("outcome", "outcome", fmt_text),
            ("epochs run per seed", "epochs", fmt_text), (f"seed report ({SEED_REPORT_LABEL})", "reference", fmt_text)]
    parts = [markdown_table(rows, cols) + "\n\n"]
    parts.append(image_link(seed_curves(groups, out_dir / "figures" / "recipe_curves.png", "recipe ladder: training curves"),
                      out_dir, "recipe ladder curves"))
    return "".join(parts), findings




STUDY = Study("recipe", StudyKind.ACCURACY, recipe_plan, budget=RecipeBudget, section=recipe_section)
