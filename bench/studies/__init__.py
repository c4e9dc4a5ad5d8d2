"""The studies of residual learning, end to end: train briefly, export, check parity, measure, report.

    >>> from bench.studies import get_preset, study_plan
    >>> plan = study_plan("depth", get_preset("quick"))
    >>> [u.label for u in plan.units]
    ['resnet20', 'plain20', 'resnet56', 'plain56']

The training-recipe studies (`recipe`: the 001 ladder; `optimizer`: the 004 sweeps) train the same net
under several recipes and seeds (`UnitSpec.train`, `UnitSpec.seed`) and only score accuracy
(`UnitSpec.accuracy_only`, `StudyPlan.timed=False`).

`presets` says how much each run spends, `plans` what each study trains and measures (as data),
`runner` measures units and keeps the run folder resumable; `bench.report.render` turns the records into
Markdown and plots.
"""

from bench.studies.plans import STUDIES, StudyPlan, StudyUnit, UnitSpec, study_plan
from bench.studies.presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "STUDIES", "Preset", "StudyPlan", "StudyUnit", "UnitSpec", "get_preset", "study_plan"]
