"""Label-free selection of a representation space, graded against real labels (issue 25).

A *criterion* ranks the configurations (encoder × head × map, or a detector) of one dataset
without a test label: synthetic anomalies made from validation normals, Mass-Volume on validation
normals, the adequacy normal fit, the unlabelled pool. The suite then grades each criterion with
the labels it has: Kendall's tau against the true test ranking, the regret of the configuration it
selects, and whether that one is in the true top 3, beside a random and a leave-one-dataset-out
prior pick. Everything here reads records and their arrays only (no torch), like the report.

Modules: :mod:`.criteria` (per-cell measures and the criterion registry), :mod:`.grade` (tau,
regret, baselines, the regret interval), :mod:`.render` (tables, figures, the ``--dataset`` advice).
"""

from bench.selection.criteria import CRITERIA, register_criterion  # noqa: F401
from bench.selection.grade import select_run, selection_table  # noqa: F401
