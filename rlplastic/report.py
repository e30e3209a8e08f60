"""Seeds → tables, curves and a markdown report: ``python -m rlplastic.report RUN_DIR... --out DIR``.

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

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml
from numpy.typing import ArrayLike

from rlplastic.checkpoint import COMPLETE_NAME, MARKER_NAME
from rlplastic.logger import CSV_NAME, TB_DIR, read_scalars_csv
from rlplastic.rundir import CONFIG_NAME

EVAL_TAG = "eval/episode_reward"
RR_TAG = "rr/value"
RR_SWITCH = "rr_switch"
DEFAULT_TAGS = (
    "plasticity/critic/fau", "plasticity/actor/fau", "plasticity/encoder/fau", "plasticity/critic/dormant",
    "plasticity/critic/srank", "plasticity/critic/nc1", "plasticity/critic/hessian_max",
)  # fmt: skip
METRICS = {"final_return": "final return", "auc": "AUC"}
_EVENT_STYLES = ("--", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (8, 3)), (0, (3, 1)))


class ReportError(ValueError):
    """Bad input to the report (a missing path, no runs or logs, an unknown variant or tag, ``reps < 1``)."""


class Interval(NamedTuple):
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float


@dataclass(eq=False)
class Run:
    """One run dir: its identity, completion state and logged scalars.

    :param path: the run dir, as discovered under the given paths.
    :param task: ``config.yaml``'s ``task_name``, else the grandparent dir's name.
    :param variant: the parent dir's name (``default`` or the overrides, e.g. ``aug=none,rr=adaptive``).
    :param seed: ``config.yaml``'s ``seed``, else ``k`` from the ``seed<k>`` dir name, else the dir name.
    :param complete: whether ``run_complete.json`` says the run finished.
    :param last_frame: the largest frame logged under any tag (``None`` without logs).
    :param series: ``{tag: (frames, values)}``, frames sorted and unique (int64), values float64.
    :param checkpoint_frame: the frame of the last checkpoint (``checkpoint.json``), if any.
    :param notes: problems met while reading (unreadable files, torn CSV rows).
    """

    path: Path
    task: str
    variant: str
    seed: int | str
    complete: bool
    last_frame: int | None
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    checkpoint_frame: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def has_eval(self) -> bool:
        """Whether the run logged at least one evaluation."""
        return EVAL_TAG in self.series and len(self.series[EVAL_TAG][0]) > 0

    @property
    def final_return(self) -> float | None:
        """The eval return at the last eval frame (``None`` without evaluations)."""
        return float(self.series[EVAL_TAG][1][-1]) if self.has_eval else None

    @property
    def auc(self) -> float | None:
        """The time-averaged eval return, see :func:`area_under_curve` (``None`` without evaluations)."""
        return area_under_curve(*self.series[EVAL_TAG]) if self.has_eval else None

    def events(self) -> dict[str, np.ndarray]:
        """``{name: frames}`` of the ``events/<name>`` tags (sub-tags ``events/<name>/<key>`` left out)."""
        return {tag.split("/")[1]: f for tag, (f, _) in self.series.items() if re.fullmatch(r"events/[^/]+", tag)}


# -- statistics --------------------------------------------------------------------------------------------------


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


def _poi_one_task(x: np.ndarray, y: np.ndarray) -> float:
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
    return float(np.mean([_poi_one_task(x_by_task[t], y_by_task[t]) for t in tasks]))


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


def _mean_band(values: np.ndarray, reps: int, seed: int, alpha: float = 0.05) -> tuple[np.ndarray, ...]:
    """Mean over rows and its percentile-bootstrap band (resampling rows), frame by frame."""
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


# -- reading runs ------------------------------------------------------------------------------------------------


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() or (path / CSV_NAME).is_file() or (path / TB_DIR).is_dir()


def _find_run_dirs(root: Path) -> list[Path]:
    found, stack, seen = [], [root], set()
    while stack:
        path = stack.pop()
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if _is_run_dir(path):
            found.append(path)
            continue
        try:
            children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), reverse=True)
        except OSError:
            continue
        stack.extend(children)
    return found


def _read_csv(path: Path, notes: list[str]) -> dict[str, list[tuple[int, float]]]:
    bad: list[int] = []
    rows = read_scalars_csv(path, malformed=bad)
    if bad:
        notes.append(f"{len(bad)} malformed row(s) in {CSV_NAME} skipped (a torn write?)")
    return rows


def _read_tb(tb_dir: Path, notes: list[str]) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    try:
        acc = ea.EventAccumulator(str(tb_dir), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        return {t: [(int(e.step), float(e.value)) for e in acc.Scalars(t)] for t in acc.Tags().get("scalars", [])}
    except Exception as error:  # a corrupt event file must not stop the whole report
        notes.append(f"unreadable TensorBoard events in {tb_dir.name}/ ({error.__class__.__name__}: {error})")
        return {}


def _to_arrays(pairs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    frames = np.array([p[0] for p in pairs], dtype=np.int64)
    values = np.array([p[1] for p in pairs], dtype=float)
    order = np.argsort(frames, kind="stable")
    frames, values = frames[order], values[order]
    last = np.append(frames[1:] != frames[:-1], True)  # the last value logged at each frame
    return frames[last], values[last]


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError) as error:
        notes.append(f"unreadable {path.name} ({error.__class__.__name__})")
        return {}


def load_run(path: str | Path) -> Run:
    """Read one run dir: identity from ``config.yaml`` and the dir names, scalars from the CSV or ``tb/``.

    :param path: the run dir (``<run_root>/<task>/<variant>/seed<k>``).
    """
    path, notes = Path(path), []
    config: dict[str, Any] = {}
    if (path / CONFIG_NAME).is_file():
        try:
            loaded = yaml.safe_load((path / CONFIG_NAME).read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            notes.append(f"unreadable {CONFIG_NAME} ({error.__class__.__name__}); task and seed taken from dir names")
    resolved = path.resolve()
    task = str(config.get("task_name") or resolved.parent.parent.name)
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        match = re.fullmatch(r"seed(-?\d+)", resolved.name)
        seed = int(match.group(1)) if match else resolved.name
    rows = _read_csv(path / CSV_NAME, notes) if (path / CSV_NAME).is_file() else {}
    if not rows and (path / TB_DIR).is_dir():
        rows = _read_tb(path / TB_DIR, notes)
    series = {tag: _to_arrays(pairs) for tag, pairs in sorted(rows.items()) if pairs}
    done = _read_json(path / COMPLETE_NAME, notes)
    marker = _read_json(path / MARKER_NAME, notes) or {}
    return Run(
        path=path, task=task, variant=resolved.parent.name, seed=seed,
        complete=done is not None and done.get("status", "complete") == "complete",
        last_frame=max((int(f[-1]) for f, _ in series.values()), default=None), series=series,
        checkpoint_frame=marker.get("frame"), notes=notes,
    )  # fmt: skip


def _seed_key(run: Run) -> tuple:
    return (
        run.task,
        run.variant,
        isinstance(run.seed, str),
        run.seed if isinstance(run.seed, int) else 0,
        str(run.seed),
    )


def discover_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Find and read every run dir under ``paths`` (run dirs, variant/task dirs, run roots or sweep dirs).

    :param paths: where to look, searched recursively.
    :return: the runs, sorted by task, variant and seed; a dir reached twice is read once.
    :raises ReportError: a path does not exist or holds no run dir, or two dirs share (task, variant, seed).
    """
    runs: dict[Path, Run] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ReportError(f"path does not exist: {given}")
        if not root.is_dir():
            raise ReportError(f"not a directory: {given}")
        found = _find_run_dirs(root)
        if not found:
            raise ReportError(
                f"empty run dir: {given} holds no run dirs (expected {CONFIG_NAME}, {CSV_NAME} or {TB_DIR}/)"
            )
        for run_dir in found:
            if run_dir.resolve() not in runs:
                runs[run_dir.resolve()] = load_run(run_dir)
    by_key: dict[tuple, Run] = {}
    for run in runs.values():
        key = (run.task, run.variant, run.seed)
        if key in by_key:
            raise ReportError(
                f"two run dirs are task {run.task!r}, variant {run.variant!r}, seed {run.seed}: {by_key[key].path} "
                f"and {run.path}; report them separately"
            )
        by_key[key] = run
    return sorted(runs.values(), key=_seed_key)


# -- plots -------------------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name)


def _new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _plot_tag(ax: Any, groups: dict[str, list[Run]], tag: str, colors: dict[str, str], ctx: dict[str, Any]) -> None:
    """Mean ± bootstrap band per variant on ``ax``; runs left out of the band as thin dashed lines."""
    for variant, group in groups.items():
        with_tag = [r for r in group if tag in r.series]
        band = [r for r in with_tag if r.complete or ctx["include_partial"]] or with_tag
        if band:
            grid, values = align_curves([r.series[tag] for r in band])
            if grid.size:
                mean, low, high = _mean_band(values, ctx["reps"], ctx["seed"])
                ax.plot(grid, mean, color=colors[variant], lw=1.8, label=f"{variant} (n={len(band)})")
                ax.fill_between(grid, low, high, color=colors[variant], alpha=0.2, lw=0)
        for i, run in enumerate(r for r in with_tag if r not in band):
            label = f"{variant}: unfinished runs" if i == 0 else None
            ax.plot(*run.series[tag], color=colors[variant], lw=0.8, ls="--", alpha=0.7, label=label)
    ax.set_xlabel("frames")
    ax.grid(alpha=0.3)


def _legend(ax: Any, fontsize: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _plots_for_task(task: str, groups: dict[str, list[Run]], colors: dict[str, str], ctx: dict[str, Any]) -> list:
    """Write the task's PNGs; returns ``(title, file name)`` pairs."""
    out, written = ctx["out"], []
    runs = [r for group in groups.values() for r in group]
    if any(EVAL_TAG in r.series for r in runs):
        fig, axes = _new_figure()
        _plot_tag(axes[0, 0], groups, EVAL_TAG, colors, ctx)
        axes[0, 0].set(ylabel="eval return", title=f"{task}: eval return, mean ± 95% CI")
        _legend(axes[0, 0], fontsize=8)
        written.append((f"eval return on {task}", f"returns_{_safe(task)}.png"))
        fig.savefig(out / written[-1][1], dpi=110)
    tags = [t for t in ctx["tags"] if any(t in r.series for r in runs)]
    if tags:
        ncols = min(3, len(tags))
        fig, axes = _new_figure(math.ceil(len(tags) / ncols), ncols, size=(4.6, 3.4))
        for ax, tag in zip(axes.flat, tags, strict=False):
            _plot_tag(ax, groups, tag, colors, ctx)
            ax.set_title(tag.removeprefix("plasticity/"), fontsize=9)
        for ax in list(axes.flat)[len(tags) :]:
            ax.set_axis_off()
        _legend(axes[0, 0], fontsize=7)
        fig.suptitle(f"{task}: plasticity, mean ± 95% CI", fontsize=10)
        written.append((f"plasticity on {task}", f"plasticity_{_safe(task)}.png"))
        fig.savefig(out / written[-1][1], dpi=100)
    if any(RR_TAG in r.series for r in runs):
        from matplotlib.lines import Line2D

        fig, axes = _new_figure()
        ax, handles, styles = axes[0, 0], [], {}
        for i, (variant, group) in enumerate(groups.items()):
            lw = max(1.0, 3.0 - 0.7 * i)  # earlier variants wider, so equal traces stay visible
            handles.append(Line2D([], [], color=colors[variant], lw=lw, label=variant))
            for run in group:
                if RR_TAG in run.series:
                    ax.plot(*run.series[RR_TAG], color=colors[variant], lw=lw, alpha=0.8, drawstyle="steps-post")
                for name, frames in sorted(run.events().items()):
                    if name not in styles:
                        styles[name] = ":" if name == RR_SWITCH else _EVENT_STYLES[len(styles) % len(_EVENT_STYLES)]
                    alpha = 0.8 if len(frames) <= 40 else 0.3
                    ax.vlines(frames, 0, 1, transform=ax.get_xaxis_transform(), colors=colors[variant],
                              linestyles=styles[name], lw=1.0, alpha=alpha)  # fmt: skip
        handles += [Line2D([], [], color="0.3", ls=style, label=f"events/{name}") for name, style in styles.items()]
        ax.set(xlabel="frames", ylabel="replay ratio (updates / agent step)", title=f"{task}: RR per seed and events")
        ax.legend(handles=handles, fontsize=8)
        ax.grid(alpha=0.3)
        written.append((f"replay ratio on {task}", f"rr_{_safe(task)}.png"))
        fig.savefig(out / written[-1][1], dpi=110)
    return written


# -- the report --------------------------------------------------------------------------------------------------


def _ci(interval: Interval | None, n_runs: int = 2) -> dict[str, float | None]:
    """The interval as a dict; a single run has no CI (``low``/``high`` ``None``), nothing at all gives ``None``s."""
    if interval is None:
        return {"point": None, "low": None, "high": None}
    one = n_runs < 2
    return {"point": interval.point, "low": None if one else interval.low, "high": None if one else interval.high}


def _finite(tree: Any) -> Any:
    """NaN and infinities → ``None`` (strict JSON)."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def _fmt(ci: dict[str, float | None] | None, digits: int = 1) -> str:
    if ci is None or ci["point"] is None:
        return "—"
    if ci["low"] is None:
        return f"{ci['point']:.{digits}f} (1 run: no CI)"
    return f"{ci['point']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def _status(run: Run, counted: bool) -> str:
    if not run.series:
        found = [n for n in (CONFIG_NAME, CSV_NAME, TB_DIR) if (run.path / n).exists()]
        what = {CONFIG_NAME: CONFIG_NAME, CSV_NAME: f"{CSV_NAME} without rows", TB_DIR: f"{TB_DIR}/ without scalars"}
        found = [f"{CONFIG_NAME} only"] if found == [CONFIG_NAME] else [what[n] for n in found]
        return f"no logs: expected {CSV_NAME} or {TB_DIR}/ event files ({', '.join(found)})"
    if run.complete:
        return "finished, but no eval/episode_reward logged"
    text = f"in progress or crashed at frame {run.last_frame}"
    if run.checkpoint_frame is not None:
        text += f" (last checkpoint at frame {run.checkpoint_frame})"
    if not run.has_eval:
        return text + "; no evaluation logged yet"
    return text + (
        "; counted in the tables (--include-partial)" if counted else "; left out of the tables, drawn in the curves"
    )


def build_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    compare: Sequence[str] | None = None,
    reps: int = 2000,
    seed: int = 0,
    include_partial: bool = False,
    tags: Sequence[str] | None = None,
    sources: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Compute the tables, draw the plots and write ``report.md``, ``summary.json`` and ``summary.csv``.

    :param runs: the runs, e.g. from :func:`discover_runs`.
    :param out_dir: where the report goes (created if needed).
    :param compare: ``(X, Y)``: the variants for P(X > Y); ``None`` compares the two variants when there are exactly
        two (the second in sorted order as X), and skips otherwise.
    :param reps: bootstrap resamples for every CI.
    :param seed: seed of the bootstrap generator.
    :param include_partial: also count runs without ``run_complete.json`` in the final/AUC numbers.
    :param tags: tags of the plasticity plot (default :data:`DEFAULT_TAGS`).
    :param sources: the paths the runs were found under, named in the report.
    :return: the summary written to ``summary.json``.
    :raises ReportError: ``reps < 1``, no runs, no logs, an unknown variant in ``compare`` or tag in ``tags``.
    """
    if reps < 1:
        raise ReportError(f"--reps must be at least 1, got {reps}")
    if not runs:
        raise ReportError("no run dirs to report on")
    if not any(r.series for r in runs):
        raise ReportError(f"no logs: expected {CSV_NAME} or {TB_DIR}/ event files in any of the {len(runs)} run dir(s)")
    variants = sorted({r.variant for r in runs})
    tasks = sorted({r.task for r in runs})
    if compare is not None:
        unknown = [v for v in compare if v not in variants]
        if len(compare) != 2 or unknown:
            bad = ", ".join(repr(v) for v in unknown) or f"{list(compare)!r} (give two)"
            raise ReportError(f"unknown variant(s) in --compare: {bad}; known variants: {', '.join(variants)}")
    logged = {t for r in runs for t in r.series}
    if tags is not None and (missing := [t for t in tags if t not in logged]):
        available = sorted(t for t in logged if re.fullmatch(r"plasticity/[^/]+/[^/]+", t))
        raise ReportError(
            f"unknown tag(s) in --tags: {', '.join(missing)}; not logged by any run "
            f"(module-level plasticity tags present: {', '.join(available) or 'none'})"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out is not a directory: {out_dir}")
    out.mkdir(parents=True, exist_ok=True)

    counts = {id(r): r.has_eval and (r.complete or include_partial) for r in runs}
    cell: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        cell.setdefault((r.task, r.variant), []).append(r)
    scores = {m: {k: np.array([getattr(r, m) for r in g if counts[id(r)]]) for k, g in cell.items()} for m in METRICS}

    per_task: dict[str, dict[str, Any]] = {}
    for (task, variant), group in cell.items():
        kept = [r for r in group if counts[id(r)]]
        entry: dict[str, Any] = {
            "seeds": [r.seed for r in kept], "paths": [str(r.path) for r in kept],
            "not_counted": [str(r.path) for r in group if not counts[id(r)]],
        }  # fmt: skip
        for m in METRICS:
            values = scores[m][task, variant]
            ci = stratified_bootstrap_ci({task: values}, aggregate_mean, reps, seed) if values.size else None
            entry[m] = {"values": values.tolist(), **_ci(ci, values.size)}
        per_task.setdefault(task, {})[variant] = entry

    aggregates: dict[str, Any] = {}
    for variant in variants:
        agg_tasks = [t for t in tasks if scores["final_return"].get((t, variant), np.empty(0)).size]
        entry = {"tasks": agg_tasks, "n_runs": sum(scores["final_return"][t, variant].size for t in agg_tasks)}
        for m in METRICS:
            by_task = {t: scores[m][t, variant] for t in agg_tasks}
            entry[m] = {
                name: _ci(stratified_bootstrap_ci(by_task, stat, reps, seed) if by_task else None, entry["n_runs"])
                for name, stat in (("iqm", aggregate_iqm), ("mean", aggregate_mean))
            }
        aggregates[variant] = entry

    comparison = None
    pair = tuple(compare) if compare is not None else (variants[1], variants[0]) if len(variants) == 2 else None
    if pair is not None:
        x, y = pair
        common = [t for t in tasks if scores["final_return"].get((t, x), np.empty(0)).size]
        common = [t for t in common if scores["final_return"].get((t, y), np.empty(0)).size]
        comparison = {"x": x, "y": y, "chosen": "--compare" if compare is not None else "automatic", "tasks": common}
        for m in METRICS:
            xs, ys = {t: scores[m][t, x] for t in common}, {t: scores[m][t, y] for t in common}
            comparison[m] = None
            if common:
                comparison[m] = {
                    **_ci(probability_of_improvement_ci(xs, ys, reps, seed)),
                    "per_task": {t: _poi_one_task(xs[t], ys[t]) for t in common},
                }

    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    ctx = {"out": out, "reps": reps, "seed": seed, "include_partial": include_partial, "tags": tags or DEFAULT_TAGS}
    plots = {}
    for task in tasks:
        groups = {v: cell[task, v] for v in variants if (task, v) in cell}
        plots[task] = _plots_for_task(task, groups, colors, ctx)

    problems = [
        {"path": str(r.path), "status": _status(r, counts[id(r)])} for r in runs if not (r.complete and r.has_eval)
    ]
    summary = {
        "protocol": {
            "final_return": "eval/episode_reward at the run's last eval frame",
            "auc": "trapezoid area under eval return over frames / frame span (time-averaged return)",
            "scores": "raw DMC returns (0-1000), not normalised",
            "iqm": "scipy.stats.trim_mean(pooled run scores, 0.25)",
            "mean": "mean over tasks of per-task means",
            "ci": "95% percentile stratified bootstrap (runs resampled within each task)",
            "reps": reps, "seed": seed, "alpha": 0.05, "include_partial": include_partial,
        },
        "sources": [str(s) for s in sources or []],
        "runs": [
            {"path": str(r.path), "task": r.task, "variant": r.variant, "seed": r.seed, "complete": r.complete,
             "counted": counts[id(r)], "last_frame": r.last_frame, "final_return": r.final_return, "auc": r.auc,
             "events": {k: v.tolist() for k, v in r.events().items()}, "notes": r.notes}
            for r in runs
        ],
        "tasks": per_task, "aggregates": aggregates, "comparison": comparison, "incomplete": problems,
        "plots": {t: [f for _, f in p] for t, p in plots.items()},
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n")
    _write_csv(out / "summary.csv", summary)
    (out / "report.md").write_text(_markdown(summary, runs, plots, variants, tasks))
    return summary


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
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
        rows.append(("comparison", "ALL", name, m, stat, len(c["tasks"]), "", *trio(c[m] or _ci(None))))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["" if v is None else v for v in row] for row in rows])


def _markdown(summary: dict[str, Any], runs: Sequence[Run], plots: dict, variants: list, tasks: list) -> str:
    p = summary["protocol"]
    n_done = sum(r.complete for r in runs)
    n_nolog = sum(not r.series for r in runs)
    where = ", ".join(f"`{s}`" for s in summary["sources"]) or "the given runs"
    lines = [
        "# rlplastic report", "",
        f"Read {len(runs)} run dir(s) under {where}: {n_done} finished, {len(runs) - n_done - n_nolog} in progress "
        f"or crashed, {n_nolog} without logs. {len(tasks)} task(s): {', '.join(tasks)}. {len(variants)} variant(s): "
        f"{', '.join(f'`{v}`' for v in variants)}.", "",
        "## Protocol", "",
        "- **Scores** are raw returns: DMC returns are on 0–1000 on every task, so nothing is normalised.",
        "- **Final return**: a run's `eval/episode_reward` at its last evaluation frame.",
        "- **AUC**: trapezoid-rule area under the eval return over frames, divided by the frame span (first to last "
        "eval frame): the time-averaged return, on the same scale (a line from 0 to 1000 gives 500).",
        "- **Which runs count**: finished runs (with `run_complete.json`) with evaluations"
        + (", plus runs in progress or crashed (`--include-partial`; their numbers cover only the frames they "
           "reached)." if p["include_partial"] else "; runs in progress or crashed are left out of the tables "
           "(`--include-partial` adds them) but drawn in the curves up to their last frame."),
        f"- **CIs**: 95% percentile bootstrap with {p['reps']} resamples (seed {p['seed']}), stratified: seeds are "
        "resampled with replacement independently within each task; a single run gets no CI.",
        "- **Across tasks**: IQM = mean of the middle 50% of the pooled run scores (`scipy.stats.trim_mean(x, 0.25)`, "
        "as rliable); mean = mean over tasks of the per-task means. Only tasks where the variant has a counted run.",
        "- **Curves**: per variant, seeds on a common grid (the union of their logged frames inside the range every "
        "seed covers, linear interpolation; for eval curves these are the shared eval frames), mean ± 95% bootstrap "
        "band; unfinished runs outside the band are thin dashed lines up to their last frame.", "",
        "## Per task", "",
        "| task | variant | seeds | final return, mean [95% CI] | AUC, mean [95% CI] | not counted |",
        "|---|---|---:|---|---|---:|",
    ]  # fmt: skip
    for task, by_variant in summary["tasks"].items():
        for v, e in by_variant.items():
            lines.append(f"| {task} | `{v}` | {len(e['seeds'])} | {_fmt(e['final_return'])} | {_fmt(e['auc'])} | "
                         f"{len(e['not_counted'])} |")  # fmt: skip
    lines += [
        "", "## Across tasks", "",
        "| variant | tasks | runs | IQM final | mean final | IQM AUC | mean AUC |", "|---|---:|---:|---|---|---|---|",
    ]  # fmt: skip
    for v, e in summary["aggregates"].items():
        cells = [_fmt(e[m][s]) for m in METRICS for s in ("iqm", "mean")]
        lines.append(f"| `{v}` | {len(e['tasks'])} | {e['n_runs']} | " + " | ".join(cells) + " |")
    lines += ["", "## Probability of improvement", ""]
    c = summary["comparison"]
    if c is None:
        lines.append(f"Skipped: {len(variants)} variants; choose two with `--compare X Y`.")
    else:
        how = "given by `--compare`"
        if c["chosen"] != "--compare":
            how = (
                "chosen automatically: the only two variants, the second in sorted order as X; `--compare X Y` chooses"
            )
        lines.append(f"P(X > Y) with X = `{c['x']}`, Y = `{c['y']}` ({how}), over {len(c['tasks'])} common task(s).")
        if c["tasks"]:
            lines += ["", "| metric | P(X > Y) [95% CI] | " + " | ".join(c["tasks"]) + " |",
                      "|---|---|" + "---:|" * len(c["tasks"])]  # fmt: skip
            for m, label in METRICS.items():
                per = " | ".join(f"{c[m]['per_task'][t]:.2f}" for t in c["tasks"])
                lines.append(f"| {label} | {_fmt(c[m], 2)} | {per} |")
    lines += ["", "## Plots", ""]
    for task in tasks:
        lines += [f"### {task}", ""] + [f"![{title}]({name})\n" for title, name in plots[task]]
    events = [(r, name, f) for r in runs for name, f in sorted(r.events().items())]
    if events:
        lines += ["## Events", "", "| task | variant | seed | event | frames |", "|---|---|---|---|---|"]
        for r, name, f in events:
            shown = ", ".join(map(str, f)) if len(f) <= 5 else f"{len(f)} firings, first {f[0]}, last {f[-1]}"
            lines.append(f"| {r.task} | `{r.variant}` | {r.seed} | {name} | {shown} |")
        lines.append("")
    lines += ["## Incomplete or failed runs", ""]
    lines += [f"- `{e['path']}`: {e['status']}" for e in summary["incomplete"]] or ["None: every run finished."]
    notes = [f"- `{r.path}`: {note}" for r in runs for note in r.notes]
    if notes:
        lines += ["", "Notes while reading:", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m rlplastic.report RUN_DIR... --out DIR [--compare X Y] [--tags ...]``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :return: 0 on success, 2 on bad input (the message goes to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="rlplastic.report",
        description="Aggregate rlplastic run dirs (run dirs, run roots or sweep dirs, searched recursively) into "
        "report.md, summary.json, summary.csv and PNG plots. See the module docstring for the protocol.",
    )
    parser.add_argument("paths", nargs="+", help="run dirs or dirs containing run dirs")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--compare", nargs=2, metavar=("X", "Y"), help="variants for P(X > Y)")
    parser.add_argument("--tags", nargs="+", help=f"tags of the plasticity plot (default: {' '.join(DEFAULT_TAGS)})")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--include-partial", action="store_true", help="count unfinished runs in the tables too")
    args = parser.parse_args(argv)
    try:
        if args.reps < 1:
            raise ReportError(f"--reps must be at least 1, got {args.reps}")
        runs = discover_runs(args.paths)
        summary = build_report(
            runs, args.out, compare=args.compare, reps=args.reps, seed=args.seed,
            include_partial=args.include_partial, tags=args.tags, sources=args.paths,
        )  # fmt: skip
    except ReportError as error:
        print(f"rlplastic.report: error: {error}", file=sys.stderr)
        return 2
    print(f"{Path(args.out) / 'report.md'}: {len(runs)} run dir(s), {len(summary['incomplete'])} incomplete or failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
