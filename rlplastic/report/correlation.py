"""Which monitored signal predicts plasticity loss: per task, the Spearman rank correlation of every ``plasticity/*``
signal with the target-fitting loss and with the return gain that follows, with bootstrap CIs over runs.

Protocol
--------
- **Pairs.** For a signal S and a run: *fit loss*: ``(S(f), fit_loss(f))`` at every probe frame f where both are
  logged (``plasticity/critic/fit_loss``, the loss of fitting fresh targets from the current weights: higher means
  less plastic). A signal logged per log window rather than per probe (FAU: no frame in common with the probes)
  is paired by window: each probe with the value of the window that contains it (the first log at or after f).
  *Return gain*: ``(S(f), R(e1) - R(e0))`` for every frame f of S, where ``e0`` is the last
  evaluation at or before f and ``e1`` the first after it (the gain over the evaluation window that follows the
  probe). Pairs of every run on the task (all variants, finished or not) are pooled.
- **ρ** is Spearman's rank correlation of the pooled pairs (average ranks for ties). Its 95% CI is a percentile
  bootstrap over **runs**: runs are resampled with replacement (a run's pairs travel together, since probes within
  a run are not independent), ρ recomputed on the resampled pool each time (at most :data:`MAX_REPS` resamples).
  A single run gets no interval.
- **Ranking.** Signals are ranked per task by |ρ| with the fit loss. The section is skipped when no run logged the
  fit loss.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rlplastic.report.runs import EVAL_TAG, Run

FIT_LOSS_TAG = "plasticity/critic/fit_loss"
TARGETS = {"fit_loss": "fit loss at the probe", "return_gain": "return gain over the next eval window"}
#: Scatter figures are drawn for this many signals per task (the top ones by |ρ| with the fit loss).
MAX_SCATTERS = 8
#: Bootstrap resamples of the correlation CIs are capped here (each one re-ranks every pooled pair).
MAX_REPS = 1000


@dataclass(frozen=True)
class Pairs:
    """Paired observations pooled over runs, each pair tagged with the run it came from.

    :param x: the signal values.
    :param y: the target values.
    :param run: index of each pair's run (0 .. ``n_runs - 1``).
    :param n_runs: runs that contributed at least one pair.
    :param variant: the variant of each pair's run (for colouring).
    """

    x: np.ndarray
    y: np.ndarray
    run: np.ndarray
    n_runs: int
    variant: np.ndarray


def _group_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of ``values`` in the multiset where point i appears ``weights[..., i]`` times.

    :param values: ``(n,)``.
    :param weights: ``(reps, n)`` non-negative multiplicities.
    :return: ``(reps, n)``: the rank each copy of point i gets (tied copies share their average rank, 1-based).
    """
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_of_sorted = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    group = np.empty_like(group_of_sorted)
    group[order] = group_of_sorted
    totals = np.add.reduceat(weights[:, order], starts, axis=1)  # (reps, groups): copies per distinct value
    below = np.cumsum(totals, axis=1) - totals
    return (below + (totals + 1.0) / 2.0)[:, group]


def weighted_spearman(x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
    """Spearman's ρ of the multisets where pair i appears ``weights[r, i]`` times, for every row r at once.

    Exactly ``scipy.stats.spearmanr`` of the pairs repeated by their weights (average ranks for ties), without
    building the repeated arrays.

    :param x: ``(n,)`` first variable.
    :param y: ``(n,)`` second variable.
    :param weights: ``(reps, n)`` or ``(n,)`` multiplicities (default: every pair once).
    :return: ``(reps,)`` (or a 0-d array for 1-D weights) of ρ; NaN where a variable is constant.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D and equally long, got {x.shape} and {y.shape}")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    if w.shape[1] != x.size:
        raise ValueError(f"weights must have {x.size} columns, got {w.shape}")
    rx, ry = _group_ranks(x, w), _group_ranks(y, w)
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = rx - (w * rx).sum(axis=1, keepdims=True) / total
        dy = ry - (w * ry).sum(axis=1, keepdims=True) / total
        rho = (w * dx * dy).sum(axis=1) / np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    rho = np.where(np.isfinite(rho), np.clip(rho, -1.0, 1.0), np.nan)
    return rho[0] if single else rho


def format_rho(entry: dict[str, Any]) -> str:
    """``ρ [low, high]`` with 2 decimals, ``ρ (1 run: no CI)``, or ``—`` without a ρ."""
    if entry["rho"] is None:
        return "—"
    if entry["low"] is None:
        return f"{entry['rho']:.2f} (1 run: no CI)"
    return f"{entry['rho']:.2f} [{entry['low']:.2f}, {entry['high']:.2f}]"


def spearman_ci(pairs: Pairs, reps: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """ρ of the pooled pairs and its percentile bootstrap CI over runs (a run's pairs resampled together).

    :param pairs: the pooled pairs.
    :param reps: bootstrap resamples.
    :param seed: seed of the NumPy generator.
    :param alpha: 1 - confidence level.
    :return: ``{"rho", "low", "high", "n_pairs", "n_runs"}``; ``rho`` ``None`` with fewer than 3 pairs or a constant
        variable, ``low``/``high`` ``None`` with a single run.
    """
    entry: dict[str, Any] = {"rho": None, "low": None, "high": None, "n_pairs": int(pairs.x.size),
                             "n_runs": pairs.n_runs}  # fmt: skip
    if pairs.x.size < 3:
        return entry
    rho = float(weighted_spearman(pairs.x, pairs.y))
    if not math.isfinite(rho):
        return entry
    entry["rho"] = rho
    if pairs.n_runs < 2:
        return entry
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, pairs.n_runs, size=(reps, pairs.n_runs))
    stats = np.empty(reps)
    for start in range(0, reps, 256):  # bounded memory: (256, n_pairs) weights at a time
        chunk = draws[start : start + 256]
        counts = np.stack([np.bincount(row, minlength=pairs.n_runs) for row in chunk])
        stats[start : start + 256] = weighted_spearman(pairs.x, pairs.y, counts[:, pairs.run])
    if np.all(np.isnan(stats)):
        return entry
    low, high = np.nanpercentile(stats, [50.0 * alpha, 100.0 - 50.0 * alpha])
    entry["low"], entry["high"] = float(low), float(high)
    return entry


def _fit_loss_pairs(run: Run, signal: str) -> tuple[np.ndarray, np.ndarray]:
    frames, values = run.series[signal]
    loss_frames, losses = run.series[FIT_LOSS_TAG]
    _, at_signal, at_loss = np.intersect1d(frames, loss_frames, return_indices=True)
    if at_signal.size:
        return values[at_signal], losses[at_loss]
    # a signal of the log windows (FAU): the window that contains the probe, i.e. the first log at or after it
    window = np.searchsorted(frames, loss_frames, side="left")
    ok = window < frames.size
    return values[window[ok]], losses[ok]


def _return_gain_pairs(run: Run, signal: str) -> tuple[np.ndarray, np.ndarray]:
    frames, values = run.series[signal]
    eval_frames, returns = run.series[EVAL_TAG]
    before = np.searchsorted(eval_frames, frames, side="right") - 1  # last eval at or before the probe
    after = before + 1  # first eval after it
    ok = (before >= 0) & (after < eval_frames.size)
    return values[ok], returns[after[ok]] - returns[before[ok]]


def collect_pairs(runs: Sequence[Run], signal: str, target: str) -> Pairs:
    """The pooled ``(signal, target)`` pairs of ``runs`` (see the module's protocol).

    :param runs: the runs of one task.
    :param signal: a ``plasticity/*`` tag.
    :param target: ``"fit_loss"`` or ``"return_gain"``.
    """
    needed = FIT_LOSS_TAG if target == "fit_loss" else EVAL_TAG
    pairing = _fit_loss_pairs if target == "fit_loss" else _return_gain_pairs
    xs, ys, ids, variants = [], [], [], []
    for run in runs:
        if signal not in run.series or needed not in run.series:
            continue
        x, y = pairing(run, signal)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            xs.append(x[keep]), ys.append(y[keep])
            ids.append(np.full(int(keep.sum()), len(ids))), variants.append([run.variant] * int(keep.sum()))
    if not xs:
        return Pairs(np.empty(0), np.empty(0), np.empty(0, dtype=int), 0, np.empty(0, dtype=object))
    return Pairs(np.concatenate(xs), np.concatenate(ys), np.concatenate(ids), len(xs),
                 np.array([v for group in variants for v in group], dtype=object))  # fmt: skip


def signals_of(runs: Sequence[Run]) -> list[str]:
    """The monitored signals to correlate: every ``plasticity/*`` tag any run logged, but the fit loss itself."""
    return sorted({t for r in runs for t in r.series if re.match(r"plasticity/", t) and t != FIT_LOSS_TAG})


def correlate_task(runs: Sequence[Run], reps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per signal, ρ with the fit loss and with the return gain (each with its CI), ranked by |ρ| with the fit
    loss (signals without a ρ last).

    :param runs: the runs of one task.
    :param reps: bootstrap resamples (at most :data:`MAX_REPS`).
    :param seed: seed of the bootstrap.
    :return: ``[{"signal", "fit_loss": {...}, "return_gain": {...}}, ...]`` (see :func:`spearman_ci`).
    """
    reps = min(reps, MAX_REPS)
    rows = [
        {"signal": s, **{t: spearman_ci(collect_pairs(runs, s, t), reps, seed) for t in TARGETS}}
        for s in signals_of(runs)
    ]
    return sorted(rows, key=lambda r: -abs(r["fit_loss"]["rho"]) if r["fit_loss"]["rho"] is not None else 1.0)


def correlation_summary(runs_by_task: dict[str, list[Run]], reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The report's correlation section: ``{"target", "skipped", "tasks": {task: ranked rows}}``.

    :param runs_by_task: ``{task: runs}``.
    :param reps: bootstrap resamples.
    :param seed: seed of the bootstrap.
    :return: ``skipped`` is the reason (no fit loss logged) or ``None``; tasks without a fit loss are left out.
    """
    with_loss = {t: rs for t, rs in runs_by_task.items() if any(FIT_LOSS_TAG in r.series for r in rs)}
    if not with_loss:
        return {"target": FIT_LOSS_TAG, "skipped": f"no run logged {FIT_LOSS_TAG}", "tasks": {}}
    return {"target": FIT_LOSS_TAG, "skipped": None,
            "tasks": {t: correlate_task(rs, reps, seed) for t, rs in sorted(with_loss.items())}}  # fmt: skip
