"""Seeds → tables, curves and a markdown report: ``python -m rlplastic.report RUN_DIR... --out DIR``.

Modules: :mod:`~rlplastic.report.stats` (AUC, IQM, stratified bootstrap, probability of improvement, curve
alignment), :mod:`~rlplastic.report.runs` (run discovery and grouping), :mod:`~rlplastic.report.summary` (the
tables, ``summary.json``/``summary.csv``), :mod:`~rlplastic.report.plots`, :mod:`~rlplastic.report.markdown`,
:mod:`~rlplastic.report.build` (:func:`build_report`) and :mod:`~rlplastic.report.cli` (:func:`main`).

Protocol
--------
**Runs.** A run dir is any directory holding ``config.yaml``, ``scalars.csv`` or ``tb/``, found recursively under
the given paths (hidden dirs are skipped and a run dir's own subdirs are not searched). Its task is
``config.yaml``'s ``task_name`` (else the grandparent dir's name), its variant the parent dir's name (every override
but the seed), its seed ``config.yaml``'s ``seed`` (else the ``seed<k>`` dir name). Scalars are read from
``scalars.csv``, or from the TensorBoard event files in ``tb/`` when there is no CSV; the x-axis is environment
frames and a frame logged twice keeps its last value. Two dirs with the same (task, variant, seed) are an error.

**Which runs count.** A run is complete when it has ``run_complete.json``. The final-return and AUC tables, the
across-task aggregates and the probability of improvement use complete runs with evaluation data only;
``--include-partial`` adds runs that are in progress or crashed (their numbers then cover only the frames they
reached). Every other run is listed by path in the report's "Incomplete or failed runs", never dropped silently,
and partial runs still appear in the curves up to their last frame.

**Scores** are raw returns, not normalised: DMC returns lie in [0, 1000] on every task.

- *Final return*: a run's ``eval/episode_reward`` at its last evaluation frame (the trainer also evaluates at its
  last frame).
- *AUC*: the area under the eval curve by the trapezoid rule over frames, divided by the frame span (last minus
  first eval frame): the time-averaged return, on the returns' scale (a line from 0 to 1000 has AUC 500). A run
  with a single evaluation has AUC equal to that return.
- *Per task and variant*: mean over seeds, 95 % percentile bootstrap CI (seeds resampled with replacement).
- *Across tasks, per variant* (tasks where the variant has at least one counted run): IQM, the mean of the middle
  50 % of the pooled run scores (``scipy.stats.trim_mean(scores, 0.25)`` on the flattened scores, as rliable), and
  the mean over tasks of the per-task means. 95 % CIs by **stratified bootstrap**: seeds are resampled with
  replacement independently within each task, ``reps`` times (default 2000), percentile interval, NumPy generator
  seeded with ``seed`` (default 0). A single run gets its value and no interval.
- *Probability of improvement* P(X > Y): for each task, the probability that a random run of X scores higher than
  a random run of Y (Mann–Whitney U / (n_X n_Y), ties count 1/2), averaged over the tasks both have; the stratified
  bootstrap resamples X's and Y's runs independently within each task (as rliable).

**Curves.** Per variant, the seeds are put on a common grid: the union of their logged frames inside the range all
of them cover, each seed linearly interpolated between its own points (for eval curves with one schedule the grid
is exactly the shared eval frames, so nothing is interpolated). The line is the mean across seeds with a 95 %
bootstrap band at each frame. The seeds averaged are the counted ones (all runs with the tag when a variant has no
counted run on the task); other runs are drawn as thin dashed lines up to their last frame.
"""

from rlplastic.report.build import build_report
from rlplastic.report.cli import main
from rlplastic.report.plots import DEFAULT_TAGS
from rlplastic.report.runs import EVAL_TAG, RR_SWITCH, RR_TAG, ReportError, Run, RunSet, discover_runs, load_run
from rlplastic.report.stats import (
    Interval,
    aggregate_iqm,
    aggregate_mean,
    align_curves,
    area_under_curve,
    iqm,
    mean_band,
    poi_one_task,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)
from rlplastic.report.summary import METRICS

__all__ = [
    "DEFAULT_TAGS", "EVAL_TAG", "METRICS", "RR_SWITCH", "RR_TAG", "Interval", "ReportError", "Run", "RunSet",
    "aggregate_iqm", "aggregate_mean", "align_curves", "area_under_curve", "build_report", "discover_runs", "iqm",
    "load_run", "main", "mean_band", "poi_one_task", "probability_of_improvement", "probability_of_improvement_ci",
    "stratified_bootstrap_ci",
]  # fmt: skip
