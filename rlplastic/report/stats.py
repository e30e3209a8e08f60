"""Statistics of the report: time-averaged return (AUC), IQM, stratified bootstrap CIs, probability of improvement,
and the alignment of seeds' curves on one grid with a bootstrap band."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class Interval(NamedTuple):
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float


def area_under_curve(frames: ArrayLike, values: ArrayLike) -> float:
    """Trapezoid-rule area under ``values`` over ``frames``, divided by the frame span (a time-averaged value).

    :param frames: increasing x positions (environment frames).
    :param values: the curve at ``frames``.
    :return: the time average; the value itself for a single point.
    """
    f, v = np.asarray(frames, dtype=float), np.asarray(values, dtype=float)
    if f.ndim != 1 or f.shape != v.shape or f.size == 0:
        raise ValueError(f"frames and values must be 1-D, equally long and non-empty, got {f.shape} and {v.shape}")
    if np.any(np.diff(f) < 0):
        raise ValueError("frames must be sorted")
    if f[-1] == f[0]:
        return float(v.mean())
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2.0 / (f[-1] - f[0]))


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50 % of all scores, cutting ``int(0.25 n)`` from each end of the
    sorted, flattened scores (exactly ``scipy.stats.trim_mean(x, 0.25)``, rliable's IQM, without its per-call cost).

    :param scores: any array of scores; flattened.
    """
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    if x.size == 0:
        raise ValueError("iqm of no scores")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def aggregate_iqm(scores_by_task: Mapping[str, np.ndarray]) -> float:
    """IQM of the run scores of every task pooled together (rliable's ``aggregate_iqm``)."""
    return iqm(np.concatenate([np.ravel(v) for v in scores_by_task.values()]))


def aggregate_mean(scores_by_task: Mapping[str, np.ndarray]) -> float:
    """Mean over tasks of each task's mean score (every task weighs the same)."""
    return float(np.mean([np.mean(v) for v in scores_by_task.values()]))


def poi_one_task(x: ArrayLike, y: ArrayLike) -> float:
    """P(X > Y) on one task: the fraction of (x, y) run pairs with x > y, ties counting 1/2 (Mann–Whitney U over
    ``n_x n_y``)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def probability_of_improvement(x_by_task: Mapping[str, ArrayLike], y_by_task: Mapping[str, ArrayLike]) -> float:
    """P(X > Y): per task, the chance that a random run of X beats a random run of Y (ties count 1/2), averaged
    over the tasks both have.

    :param x_by_task: ``{task: scores of X's runs}``.
    :param y_by_task: ``{task: scores of Y's runs}``.
    """
    tasks = sorted(t for t in set(x_by_task) & set(y_by_task) if np.size(x_by_task[t]) and np.size(y_by_task[t]))
    if not tasks:
        raise ValueError("probability of improvement needs at least one task with scores for both")
    return float(np.mean([poi_one_task(x_by_task[t], y_by_task[t]) for t in tasks]))


def _bootstrap(
    samples: Sequence[Mapping[str, Any]], statistic: Callable[..., float], reps: int, seed: int, alpha: float
) -> Interval:
    """Stratified percentile bootstrap: each sample's runs resampled independently within each task."""
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arrays = [{t: np.asarray(s[t], dtype=float).ravel() for t in sorted(s)} for s in samples]
    for a in arrays:
        if not a or any(v.size == 0 for v in a.values()):
            raise ValueError("every task needs at least one score")
    rng = np.random.default_rng(seed)
    draws = [{t: rng.integers(0, v.size, size=(reps, v.size)) for t, v in a.items()} for a in arrays]
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = statistic(*[{t: v[d[t][r]] for t, v in a.items()} for a, d in zip(arrays, draws, strict=True)])
    low, high = np.percentile(stats, [50.0 * alpha, 100.0 - 50.0 * alpha])
    return Interval(float(statistic(*arrays)), float(low), float(high))


def stratified_bootstrap_ci(
    scores_by_task: Mapping[str, ArrayLike],
    statistic: Callable[[dict[str, np.ndarray]], float],
    reps: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Point estimate and percentile CI of ``statistic`` by stratified bootstrap (runs resampled within each task).

    :param scores_by_task: ``{task: run scores}``, at least one score per task.
    :param statistic: maps ``{task: scores}`` to a number, e.g. :func:`aggregate_iqm` or :func:`aggregate_mean`.
    :param reps: number of bootstrap resamples.
    :param seed: seed of the NumPy generator (same inputs and seed → same interval).
    :param alpha: 1 - confidence level (0.05 → 95 % CI).
    """
    return _bootstrap([scores_by_task], statistic, reps, seed, alpha)


def probability_of_improvement_ci(
    x_by_task: Mapping[str, ArrayLike],
    y_by_task: Mapping[str, ArrayLike],
    reps: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """:func:`probability_of_improvement` over the common tasks with a stratified bootstrap CI (X's and Y's runs
    resampled independently within each task).

    :param x_by_task: ``{task: scores of X's runs}``.
    :param y_by_task: ``{task: scores of Y's runs}``.
    :param reps: number of bootstrap resamples.
    :param seed: seed of the NumPy generator.
    :param alpha: 1 - confidence level.
    """
    tasks = sorted(t for t in set(x_by_task) & set(y_by_task) if np.size(x_by_task[t]) and np.size(y_by_task[t]))
    if not tasks:
        raise ValueError("probability of improvement needs at least one task with scores for both")
    xs, ys = {t: x_by_task[t] for t in tasks}, {t: y_by_task[t] for t in tasks}
    return _bootstrap([xs, ys], probability_of_improvement, reps, seed, alpha)


def align_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Put curves on one grid: the union of their frames inside the range all cover, each linearly interpolated.

    :param curves: ``(frames, values)`` per seed, frames sorted.
    :return: ``grid`` (n_frames,) and ``values`` (n_curves, n_frames); empty when the ranges do not overlap.
    """
    start, end = max(f[0] for f, _ in curves), min(f[-1] for f, _ in curves)
    if start > end:
        return np.empty(0), np.empty((len(curves), 0))
    grid = np.unique(np.concatenate([f[(f >= start) & (f <= end)] for f, _ in curves])).astype(float)
    return grid, np.stack([np.interp(grid, f, v) for f, v in curves])


def mean_band(values: np.ndarray, reps: int, seed: int, alpha: float = 0.05) -> tuple[np.ndarray, ...]:
    """Mean over rows and its percentile-bootstrap band (rows resampled with replacement), column by column.

    :param values: ``(n_curves, n_frames)``, e.g. from :func:`align_curves`.
    :param reps: bootstrap resamples.
    :param seed: seed of the NumPy generator.
    :param alpha: 1 - confidence level.
    :return: ``mean, low, high``, each ``(n_frames,)``; a single row gives its values three times.
    """
    mean = values.mean(axis=0)
    if values.shape[0] == 1:
        return mean, mean, mean
    n = values.shape[0]
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=reps) / n  # resampled rows
    low, high = np.empty_like(mean), np.empty_like(mean)
    for start in range(0, values.shape[1], 2048):
        means = weights @ values[:, start : start + 2048]
        low[start : start + 2048], high[start : start + 2048] = np.percentile(
            means, [50.0 * alpha, 100.0 - 50.0 * alpha], axis=0
        )
    return mean, low, high
