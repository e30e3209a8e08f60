"""The report's numbers: per-task tables, across-task aggregates, the probability of improvement, and the
``summary.json`` / ``summary.csv`` they are written to."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlplastic.report.runs import RunSet
from rlplastic.report.stats import (
    Interval,
    aggregate_iqm,
    aggregate_mean,
    poi_one_task,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)

METRICS = {"final_return": "final return", "auc": "AUC"}
#: Fewer counted seeds than this in a (task, variant) group gets a warning: its bootstrap CI is not reliable.
MIN_SEEDS = 5
PROTOCOL = {
    "final_return": "eval/episode_reward at the run's last eval frame",
    "auc": "trapezoid area under eval return over frames / frame span (time-averaged return)",
    "scores": "raw DMC returns (0-1000), not normalised",
    "iqm": "scipy.stats.trim_mean(pooled run scores, 0.25)",
    "mean": "mean over tasks of per-task means",
    "ci": "95% percentile stratified bootstrap (runs resampled within each task)",
}


def ci_dict(interval: Interval | None, n_runs: int = 2) -> dict[str, float | None]:
    """The interval as a dict; a single run has no CI (``low``/``high`` ``None``), nothing at all gives ``None``s."""
    if interval is None:
        return {"point": None, "low": None, "high": None}
    one = n_runs < 2
    return {"point": interval.point, "low": None if one else interval.low, "high": None if one else interval.high}


def task_table(runset: RunSet, reps: int, seed: int) -> dict[str, dict[str, Any]]:
    """``{task: {variant: entry}}``: the counted seeds and paths, the runs not counted, and per metric the values
    and their mean with a bootstrap CI over seeds."""
    per_task: dict[str, dict[str, Any]] = {}
    for (task, variant), group in runset.cells.items():
        kept = [r for r in group if runset.counted(r)]
        entry: dict[str, Any] = {
            "seeds": [r.seed for r in kept], "paths": [str(r.path) for r in kept],
            "not_counted": [str(r.path) for r in group if not runset.counted(r)],
        }  # fmt: skip
        for m in METRICS:
            values = runset.scores(m, task, variant)
            ci = stratified_bootstrap_ci({task: values}, aggregate_mean, reps, seed) if values.size else None
            entry[m] = {"values": values.tolist(), **ci_dict(ci, values.size)}
        per_task.setdefault(task, {})[variant] = entry
    return per_task


def aggregate_table(runset: RunSet, reps: int, seed: int) -> dict[str, dict[str, Any]]:
    """``{variant: entry}``: across the tasks where the variant has a counted run, IQM and mean of each metric with
    stratified bootstrap CIs."""
    aggregates: dict[str, dict[str, Any]] = {}
    for variant in runset.variants:
        tasks = [t for t in runset.tasks if runset.scores("final_return", t, variant).size]
        entry: dict[str, Any] = {"tasks": tasks, "n_runs": sum(runset.scores("final_return", t, variant).size
                                                                for t in tasks)}  # fmt: skip
        for m in METRICS:
            by_task = {t: runset.scores(m, t, variant) for t in tasks}
            entry[m] = {
                name: ci_dict(stratified_bootstrap_ci(by_task, stat, reps, seed) if by_task else None, entry["n_runs"])
                for name, stat in (("iqm", aggregate_iqm), ("mean", aggregate_mean))
            }
        aggregates[variant] = entry
    return aggregates


def few_seeds(per_task: dict[str, dict[str, Any]], minimum: int = MIN_SEEDS) -> list[dict[str, Any]]:
    """The (task, variant) groups with at least one but fewer than ``minimum`` counted seeds.

    :param per_task: the :func:`task_table`.
    :return: ``[{"task", "variant", "n"}, ...]`` in table order.
    """
    return [
        {"task": task, "variant": variant, "n": len(e["seeds"])}
        for task, by_variant in per_task.items()
        for variant, e in by_variant.items()
        if 0 < len(e["seeds"]) < minimum
    ]


def few_seeds_warning(groups: list[dict[str, Any]], minimum: int = MIN_SEEDS) -> str | None:
    """One sentence naming the groups of :func:`few_seeds` and why their CIs mislead (``None`` when there are none)."""
    if not groups:
        return None
    named = ", ".join(f"{g['task']} {g['variant']} (n={g['n']})" for g in groups[:8])
    more = f" and {len(groups) - 8} more" if len(groups) > 8 else ""
    return (
        f"{len(groups)} group(s) have fewer than {minimum} seeds: {named}{more}. Their 95% bootstrap CIs are not "
        "reliable: with 2 seeds the interval is just [min, max], with 1 there is none. Run more seeds before "
        "drawing conclusions."
    )


def comparison_pair(compare: Sequence[str] | None, variants: list[str]) -> tuple[str, str] | None:
    """``(X, Y)`` for P(X > Y): the ``--compare`` pair, else the second variant in sorted order against the first
    when there are exactly two, else ``None``."""
    if compare is not None:
        return compare[0], compare[1]
    return (variants[1], variants[0]) if len(variants) == 2 else None


def comparison_table(
    runset: RunSet, pair: tuple[str, str] | None, chosen: str, reps: int, seed: int
) -> dict[str, Any] | None:
    """P(X > Y) per metric over the tasks both variants have counted runs on, with its CI and per-task values.

    :param pair: ``(X, Y)``, or ``None`` to skip (returns ``None``).
    :param chosen: how the pair was chosen (``"--compare"`` or ``"automatic"``), recorded in the summary.
    """
    if pair is None:
        return None
    x, y = pair
    common = [t for t in runset.tasks if runset.scores("final_return", t, x).size]
    common = [t for t in common if runset.scores("final_return", t, y).size]
    comparison: dict[str, Any] = {"x": x, "y": y, "chosen": chosen, "tasks": common}
    for m in METRICS:
        xs = {t: runset.scores(m, t, x) for t in common}
        ys = {t: runset.scores(m, t, y) for t in common}
        comparison[m] = None
        if common:
            comparison[m] = {
                **ci_dict(probability_of_improvement_ci(xs, ys, reps, seed)),
                "per_task": {t: poi_one_task(xs[t], ys[t]) for t in common},
            }
    return comparison


def run_entries(runset: RunSet) -> list[dict[str, Any]]:
    """One entry per run for ``summary.json``: identity, state, scores, events, reading notes."""
    return [
        {"path": str(r.path), "task": r.task, "variant": r.variant, "seed": r.seed, "complete": r.complete,
         "counted": runset.counted(r), "last_frame": r.last_frame, "final_return": r.final_return, "auc": r.auc,
         "events": {k: v.tolist() for k, v in r.events().items()}, "notes": r.notes}
        for r in runset.runs
    ]  # fmt: skip


def finite(tree: Any) -> Any:
    """NaN and infinities → ``None`` (strict JSON)."""
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def write_json(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``: strict JSON (no NaN), indented."""
    path.write_text(json.dumps(finite(summary), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, summary: dict[str, Any]) -> None:
    """``summary.csv``: one row per (scope, task, variant, metric, statistic) with the point and its CI."""
    rows = [("scope", "task", "variant", "metric", "statistic", "n_tasks", "n_runs", "point", "ci_low", "ci_high")]
    trio = lambda ci: (ci["point"], ci["low"], ci["high"])  # noqa: E731
    for task, by_variant in summary["tasks"].items():
        for variant, e in by_variant.items():
            rows += [("task", task, variant, m, "mean", 1, len(e["seeds"]), *trio(e[m])) for m in METRICS]
    for variant, e in summary["aggregates"].items():
        for m in METRICS:
            for stat in ("iqm", "mean"):
                rows.append(("aggregate", "ALL", variant, m, stat, len(e["tasks"]), e["n_runs"], *trio(e[m][stat])))
    c = summary["comparison"]
    for m in METRICS if c else ():
        name, stat = f"{c['x']} > {c['y']}", "probability_of_improvement"
        rows.append(("comparison", "ALL", name, m, stat, len(c["tasks"]), "", *trio(c[m] or ci_dict(None))))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["" if v is None else v for v in row] for row in rows])
