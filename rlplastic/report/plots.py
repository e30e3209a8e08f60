"""The report's figures: eval return, plasticity tags and replay ratio per task, as PNGs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlplastic.report.correlation import TARGETS, collect_pairs, format_rho
from rlplastic.report.runs import EVAL_TAG, RR_SWITCH, RR_TAG, Run
from rlplastic.report.stats import align_curves, mean_band

DEFAULT_TAGS = (
    "plasticity/critic/fau", "plasticity/actor/fau", "plasticity/encoder/fau", "plasticity/critic/dormant",
    "plasticity/critic/srank", "plasticity/critic/nc1", "plasticity/critic/hessian_max",
)  # fmt: skip
TASK_SWITCH = "task_switch"
#: Markers are drawn on every point up to this many per curve, then on every k-th point (thinned).
MAX_MARKERS = 40
#: Eval curves with at most this many points get markers too (probe curves always do).
SPARSE_POINTS = 25
#: An event firing more often than this in one run is drawn as short ticks at the bottom, not full lines.
DENSE_EVENTS = 40
_EVENT_STYLES = ("--", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (8, 3)), (0, (3, 1)))


@dataclass(frozen=True)
class PlotContext:
    """What every plot of one report shares.

    :param out: the output dir the PNGs go to.
    :param reps: bootstrap resamples of the bands.
    :param seed: seed of the bands' bootstrap.
    :param include_partial: unfinished runs enter the band (else they are thin dashed lines).
    :param tags: the tags of the plasticity panels.
    :param colors: ``{variant: matplotlib colour}``.
    :param labels: ``{variant: legend label}`` (the variant name when missing).
    """

    out: Path
    reps: int
    seed: int
    include_partial: bool
    tags: tuple[str, ...]
    colors: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def color(self, variant: str) -> str:
        """The variant's colour (the same on every plot of the report)."""
        return self.colors.get(variant, "C0")

    def label(self, variant: str) -> str:
        """The variant's legend label: its name and, where known, the settings it stands for."""
        return self.labels.get(variant, variant)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name)


#: Above this many variants the legend goes below the panels instead of over the first one's data.
_LEGEND_INSIDE_MAX = 6


def _legend(fig: Any, ax: Any, handles: list[Any] | None = None, fontsize: int = 7) -> None:
    """The legend of ``ax`` (or of ``handles``): inside it for a few entries, below the panels for a sweep."""
    handles = ax.get_legend_handles_labels()[0] if handles is None else handles
    labels = [h.get_label() for h in handles]
    if not handles:
        return
    if len(handles) <= _LEGEND_INSIDE_MAX:
        ax.legend(handles=handles, fontsize=fontsize)
    else:
        # a column per ~4.5 in of figure width (long variant labels), the figure grown by the legend's rows
        ncols = max(1, min(3, int(fig.get_figwidth() // 4.5)))
        fig.set_figheight(fig.get_figheight() + 0.17 * math.ceil(len(handles) / ncols) + 0.2)
        fig.legend(handles, labels, loc="outside lower center", fontsize=7, ncols=ncols)


def _new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def marker_style(n_points: int, always: bool = False) -> dict[str, Any]:
    """Marker keywords for a curve of ``n_points``: none for dense curves unless ``always`` (probe curves), every
    point up to :data:`MAX_MARKERS`, then every k-th point so that at most about :data:`MAX_MARKERS` are drawn.

    :param n_points: points on the curve.
    :param always: markers however many points (probe curves, whose points are measurements).
    :return: ``{}`` or ``{"marker", "markersize", "markevery"}`` for ``Axes.plot``.
    """
    if not always and n_points > SPARSE_POINTS:
        return {}
    return {
        "marker": "o",
        "markersize": 5.0 if n_points <= 10 else 3.5,
        "markevery": max(1, math.ceil(n_points / MAX_MARKERS)),
    }


def _plot_tag(ax: Any, groups: dict[str, list[Run]], tag: str, ctx: PlotContext) -> None:
    """Mean ± bootstrap band per variant on ``ax``; runs left out of the band as thin dashed lines. Probe tags
    (``plasticity/*``) and sparse curves get markers, so a single point is visible; seeds without a common frame
    range are drawn one by one."""
    probe = tag.startswith("plasticity/")
    for variant, group in groups.items():
        with_tag = [r for r in group if tag in r.series]
        band = [r for r in with_tag if r.complete or ctx.include_partial] or with_tag
        if band:
            _plot_band(ax, [r.series[tag] for r in band], variant, probe, ctx)
        for i, run in enumerate(r for r in with_tag if r not in band):
            label = f"{ctx.label(variant)}: unfinished runs" if i == 0 else None
            frames, values = run.series[tag]
            ax.plot(frames, values, color=ctx.color(variant), lw=0.8, ls="--", alpha=0.7, label=label,
                    **marker_style(frames.size, probe))  # fmt: skip
    ax.set_xlabel("frames")
    ax.grid(alpha=0.3)


def _plot_band(ax: Any, curves: list[tuple[Any, Any]], variant: str, probe: bool, ctx: PlotContext) -> None:
    """One variant's mean curve and band; one point is an error bar, no common range gives one line per seed."""
    color, label = ctx.color(variant), f"{ctx.label(variant)} (n={len(curves)})"
    grid, values = align_curves(curves)
    if grid.size == 0:
        for i, (frames, seed_values) in enumerate(curves):
            ax.plot(frames, seed_values, color=color, lw=1.0, label=f"{label}, per seed (no common frames)" if i == 0
                    else None, **marker_style(frames.size, always=True))  # fmt: skip
        return
    mean, low, high = mean_band(values, ctx.reps, ctx.seed)
    if grid.size == 1:
        ax.errorbar(grid, mean, yerr=[mean - low, high - mean], color=color, marker="o", markersize=6, capsize=4,
                    lw=1.5, label=label)  # fmt: skip
        return
    ax.plot(grid, mean, color=color, lw=1.8, label=label, **marker_style(grid.size, probe))
    ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)


def event_styles(runs: list[Run]) -> dict[str, Any]:
    """``{event name: line style}`` for the ``events/<name>`` tags of ``runs``, the same on every plot of a task:
    ``rr_switch`` dotted, ``task_switch`` solid, the others dashed patterns in sorted order."""
    styles: dict[str, Any] = {}
    for name in sorted({name for r in runs for name in r.events()}):
        if name == RR_SWITCH:
            styles[name] = ":"
        elif name == TASK_SWITCH:
            styles[name] = "-"
        else:
            styles[name] = _EVENT_STYLES[sum(n not in (RR_SWITCH, TASK_SWITCH) for n in styles) % len(_EVENT_STYLES)]
    return styles


def draw_events(ax: Any, groups: dict[str, list[Run]], styles: dict[str, Any], ctx: PlotContext) -> list[Any]:
    """Mark every run's ``events/<name>`` frames on ``ax``: full-height vertical lines in the variant's colour (a
    task switch in black), or, for an event firing more than :data:`DENSE_EVENTS` times in a run, short ticks in a
    row of their own at the bottom. Each collection's ``gid`` is ``events/<name>``.

    :return: legend handles, one per event name drawn.
    """
    from matplotlib.lines import Line2D

    drawn: dict[str, bool] = {}  # name -> drawn as ticks
    rows = {name: i for i, name in enumerate(styles)}
    for variant, group in groups.items():
        for run in group:
            for name, frames in sorted(run.events().items()):
                dense = len(frames) > DENSE_EVENTS and name != TASK_SWITCH
                low, high = (0.01 + 0.035 * rows[name], 0.04 + 0.035 * rows[name]) if dense else (0.0, 1.0)
                switch = name == TASK_SWITCH
                ax.vlines(frames, low, high, transform=ax.get_xaxis_transform(), gid=f"events/{name}",
                          colors="k" if switch else ctx.color(variant), linestyles="-" if dense else styles[name],
                          lw=1.6 if switch else 1.0, alpha=0.6 if dense else 0.8)  # fmt: skip
                drawn[name] = drawn.get(name, False) or dense
    tick_rows = [rows[name] for name, dense in drawn.items() if dense]
    if tick_rows:  # room below the data for the rows of ticks
        low, high = ax.get_ylim()
        ax.set_ylim(low - (0.05 + 0.035 * max(tick_rows)) * (high - low) / 0.95, high)
    handles = []
    for name in (n for n in styles if n in drawn):
        if drawn[name]:
            handles.append(Line2D([], [], color="0.3", ls="none", marker="|", markersize=9, label=f"events/{name}"))
        else:
            color = "k" if name == TASK_SWITCH else "0.3"
            handles.append(Line2D([], [], color=color, ls=styles[name], lw=1.2, label=f"events/{name}"))
    return handles


def returns_figure(task: str, groups: dict[str, list[Run]], ctx: PlotContext) -> Any:
    """Eval return per variant (mean ± 95% CI) with every run's events marked."""
    fig, axes = _new_figure()
    ax = axes[0, 0]
    _plot_tag(ax, groups, EVAL_TAG, ctx)
    event_handles = draw_events(ax, groups, event_styles(_runs(groups)), ctx)
    ax.set(ylabel="eval return", title=f"{task}: eval return, mean ± 95% CI")
    _legend(fig, ax, ax.get_legend_handles_labels()[0] + event_handles, fontsize=8)
    return fig


def plasticity_figure(task: str, groups: dict[str, list[Run]], tags: list[str], ctx: PlotContext) -> Any:
    """One panel per plasticity tag (mean ± 95% CI per variant, with markers on the probe points)."""
    ncols = min(3, len(tags))
    fig, axes = _new_figure(math.ceil(len(tags) / ncols), ncols, size=(4.6, 3.4))
    for ax, tag in zip(axes.flat, tags, strict=False):
        _plot_tag(ax, groups, tag, ctx)
        ax.set_title(tag.removeprefix("plasticity/"), fontsize=9)
    for ax in list(axes.flat)[len(tags) :]:
        ax.set_axis_off()
    _legend(fig, axes[0, 0])
    fig.suptitle(f"{task}: plasticity, mean ± 95% CI", fontsize=10)
    return fig


def rr_figure(task: str, groups: dict[str, list[Run]], ctx: PlotContext) -> Any:
    """The replay ratio of every seed as steps, variants in their colours (earlier ones wider, so equal traces
    stay visible), with every run's events marked."""
    from matplotlib.lines import Line2D

    fig, axes = _new_figure()
    ax, handles = axes[0, 0], []
    for i, (variant, group) in enumerate(groups.items()):
        lw = max(1.0, 3.0 - 0.7 * i)
        handles.append(Line2D([], [], color=ctx.color(variant), lw=lw, label=ctx.label(variant)))
        for run in group:
            if RR_TAG in run.series:
                frames, values = run.series[RR_TAG]
                marker = {"marker": "o", "markersize": 5.0} if frames.size <= 2 else {}  # one point is visible
                ax.plot(frames, values, color=ctx.color(variant), lw=lw, alpha=0.8, drawstyle="steps-post", **marker)
    handles += draw_events(ax, groups, event_styles(_runs(groups)), ctx)
    ax.set(xlabel="frames", ylabel="replay ratio (updates / agent step)", title=f"{task}: RR per seed and events")
    _legend(fig, ax, handles, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _runs(groups: dict[str, list[Run]]) -> list[Run]:
    return [r for group in groups.values() for r in group]


def plots_for_task(task: str, groups: dict[str, list[Run]], ctx: PlotContext) -> list[tuple[str, str]]:
    """Write the task's PNGs (eval return, plasticity panels, replay ratio: those with data) into ``ctx.out``.

    :param task: the task.
    :param groups: ``{variant: runs}`` on the task.
    :return: ``(title, file name)`` per PNG written.
    """
    runs, written = _runs(groups), []
    figures = []
    if any(EVAL_TAG in r.series for r in runs):
        figures.append((f"eval return on {task}", f"returns_{_safe(task)}.png", returns_figure(task, groups, ctx), 110))
    tags = [t for t in ctx.tags if any(t in r.series for r in runs)]
    if tags:
        figures.append((f"plasticity on {task}", f"plasticity_{_safe(task)}.png",
                        plasticity_figure(task, groups, tags, ctx), 100))  # fmt: skip
    if any(RR_TAG in r.series for r in runs):
        figures.append((f"replay ratio on {task}", f"rr_{_safe(task)}.png", rr_figure(task, groups, ctx), 110))
    for title, name, fig, dpi in figures:
        fig.savefig(ctx.out / name, dpi=dpi)
        written.append((title, name))
    return written


def scatter_figure(task: str, runs: Sequence[Run], row: dict[str, Any], ctx: PlotContext) -> Any:
    """One signal on one task: a panel per target (fit loss, return gain), a point per pair coloured by variant,
    ρ and its CI in each panel's title.

    :param task: the task.
    :param runs: the task's runs.
    :param row: the signal's entry from :func:`~rlplastic.report.correlation.correlate_task`.
    :param ctx: colours and labels of the variants.
    """
    fig, axes = _new_figure(1, 2, size=(5.0, 3.8))
    signal = row["signal"]
    for ax, (target, title) in zip(axes[0], TARGETS.items(), strict=True):
        pairs = collect_pairs(runs, signal, target)
        size = 30 if pairs.x.size <= 50 else 12  # few points drawn larger
        for variant in sorted(set(pairs.variant.tolist())):
            mine = pairs.variant == variant
            ax.scatter(pairs.x[mine], pairs.y[mine], s=size, alpha=0.7, color=ctx.color(variant),
                       label=ctx.label(variant), edgecolors="none")  # fmt: skip
        ax.set_xlabel(signal.removeprefix("plasticity/"))
        ax.set_ylabel(title)
        ax.set_title(f"ρ = {format_rho(row[target])}, {pairs.x.size} pairs, {pairs.n_runs} runs", fontsize=9)
        ax.grid(alpha=0.3)
    _legend(fig, axes[0, 0])
    fig.suptitle(f"{task}: {signal} against plasticity loss and return gain", fontsize=10)
    return fig


def correlation_plots(
    task: str, runs: Sequence[Run], rows: list[dict[str, Any]], ctx: PlotContext, limit: int = 8
) -> list[tuple[str, str]]:
    """Write the scatter figures of the first ``limit`` ranked signals of a task into ``ctx.out``.

    :return: ``(title, file name)`` per PNG written.
    """
    written = []
    for row in rows[:limit]:
        name = f"corr_{_safe(task)}_{_safe(row['signal'].removeprefix('plasticity/'))}.png"
        scatter_figure(task, runs, row, ctx).savefig(ctx.out / name, dpi=100)
        written.append((f"{row['signal']} against plasticity loss on {task}", name))
    return written
