"""Seeds → tables, curves and a markdown report: ``python -m rlplastic.report PATH... [--out DIR]``.

Modules: :mod:`~rlplastic.report.stats` (AUC, IQM, stratified bootstrap, probability of improvement, curve
alignment), :mod:`~rlplastic.report.runs` (run discovery, grouping, what each variant stands for),
:mod:`~rlplastic.report.summary` (the tables, ``summary.json``/``summary.csv``), :mod:`~rlplastic.report.correlation`
(which signal predicts plasticity loss), :mod:`~rlplastic.report.plots`, :mod:`~rlplastic.report.markdown`,
:mod:`~rlplastic.report.build` (:func:`build_report`) and :mod:`~rlplastic.report.cli` (:func:`main`).

Protocol
--------
**Runs.** A run dir is any directory holding ``config.yaml``, ``scalars.csv`` or ``tb/``, found recursively under
the given paths (hidden dirs are skipped and a run dir's own subdirs are not searched). Its task is
``config.yaml``'s ``task_name`` (else the grandparent dir's name), its variant the parent dir's name (every override
but the seed), its seed ``config.yaml``'s ``seed`` (else the ``seed<k>`` dir name); a run dir not named ``seed<k>``
(placed with ``run_dir=...``) is a variant of its own name. A single PATH that is a run dir is reported as it stands
(``--include-partial`` implied), and ``--out`` defaults to ``PATH/report`` for a single PATH. Scalars are read from
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
counted run on the task); other runs are drawn as thin dashed lines up to their last frame. Probe curves
(``plasticity/*``) carry a marker per probe (every k-th past 40), as do eval curves of at most 25 points; a single
common point is drawn with its CI as an error bar. ``events/<name>`` frames are vertical lines on the return and RR
plots (``rr_switch`` dotted, ``task_switch`` solid black), or ticks at the bottom for an event firing more than 40
times in a run.

**Labels and warnings.** A variant is labelled with the settings it stands for, read from its runs'
``config.yaml``: the keys that differ between the variants of a task (``default (aug=shift, rr=static 0.5)``), in
tables and legends. A (task, variant) group with fewer than 5 counted seeds is named in a warning in ``report.md``
and on stderr: with 2 seeds a percentile bootstrap interval is just [min, max]. Numbers show 3 significant digits.

**Which signal predicts plasticity loss**: see :mod:`rlplastic.report.correlation` (skipped without
``plasticity/critic/fit_loss``).
"""

from rlplastic.report.build import build_report
from rlplastic.report.cli import main
from rlplastic.report.correlation import FIT_LOSS_TAG, correlate_task, correlation_summary, weighted_spearman
from rlplastic.report.markdown import format_number
from rlplastic.report.plots import DEFAULT_TAGS, PlotContext
from rlplastic.report.runs import (
    EVAL_TAG,
    RR_SWITCH,
    RR_TAG,
    ReportError,
    Run,
    RunSet,
    discover_runs,
    load_run,
    variant_labels,
    variant_settings,
)
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
    "DEFAULT_TAGS", "EVAL_TAG", "FIT_LOSS_TAG", "METRICS", "RR_SWITCH", "RR_TAG", "Interval", "PlotContext",
    "ReportError", "Run", "RunSet", "aggregate_iqm", "aggregate_mean", "align_curves", "area_under_curve",
    "build_report", "correlate_task", "correlation_summary", "discover_runs", "format_number", "iqm", "load_run",
    "main", "mean_band", "poi_one_task", "probability_of_improvement", "probability_of_improvement_ci",
    "stratified_bootstrap_ci", "variant_labels", "variant_settings", "weighted_spearman",
]  # fmt: skip
