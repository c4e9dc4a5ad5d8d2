"""The studies of residual learning, end to end: train briefly, export, check parity, measure, report.

    >>> from bench.studies import get_preset, study_plan
    >>> plan = study_plan("depth", get_preset("quick"))
    >>> [u.label for u in plan.units]
    ['resnet20', 'plain20', 'resnet56', 'plain56']

A study is one module (`depth`, `dynamic`, `activation`, `family`, `ladder`, `recipe`, `optimizer`, `serve`) holding its
`Study`: its kind (`StudyKind`: timed, accuracy-only, ladder), its budget (nested in the preset:
`Preset.studies[name]`), its plan (units as data) and its report section. This package face imports every study
module and registers it (`bench.studies.registry`); adding a study is one module and one line here.

`presets` says how much each run spends; `runner` prepares units (`measure`), times each study by its kind
(`timing`) and keeps the run folder resumable (`run_folder`); `run` is the whole run as a library call
(`run_studies`: check inputs, run, write records.jsonl, run.json and report.md); `reporting` renders the report
with each study's section (`bench.report` keeps the generic formatting, plots and rendering).
"""

from bench.studies import activation, depth, dynamic, family, ladder, optimizer, recipe, serve
from bench.studies.base import Preset, Study, StudyKind, StudyPlan, StudyUnit, UnitSpec
from bench.studies.registry import get_study, register, study_names, study_plan, unregister

for _module in (depth, dynamic, activation, family, ladder, recipe, optimizer, serve):  # the order `rbench suite` runs
    register(_module.STUDY)

#: The built-in studies, in the order `rbench suite` runs them.
STUDIES = study_names()

from bench.studies.presets import PRESETS, get_preset  # noqa: E402 - the presets hold the studies' budgets

__all__ = ["PRESETS", "STUDIES", "Preset", "Study", "StudyKind", "StudyPlan", "StudyUnit", "UnitSpec", "get_preset",
           "get_study", "register", "study_names", "study_plan", "unregister"]
