"""The report's figures: eval return, plasticity tags and replay ratio per task, as PNGs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlplastic.report.runs import EVAL_TAG, RR_SWITCH, RR_TAG, Run
from rlplastic.report.stats import align_curves, mean_band

DEFAULT_TAGS = (
    "plasticity/critic/fau", "plasticity/actor/fau", "plasticity/encoder/fau", "plasticity/critic/dormant",
    "plasticity/critic/srank", "plasticity/critic/nc1", "plasticity/critic/hessian_top",
)  # fmt: skip
_EVENT_STYLES = ("--", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (8, 3)), (0, (3, 1)))


@dataclass(frozen=True)
class PlotContext:
    """What every plot of one report shares.

    :param out: the output dir the PNGs go to.
    :param reps: bootstrap resamples of the bands.
    :param seed: seed of the bands' bootstrap.
    :param include_partial: unfinished runs enter the band (else they are thin dashed lines).
    :param tags: the tags of the plasticity panels.
    """

    out: Path
    reps: int
    seed: int
    include_partial: bool
    tags: tuple[str, ...]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", name)


def _new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _plot_tag(ax: Any, groups: dict[str, list[Run]], tag: str, colors: dict[str, str], ctx: PlotContext) -> None:
    """Mean ± bootstrap band per variant on ``ax``; runs left out of the band as thin dashed lines."""
    for variant, group in groups.items():
        with_tag = [r for r in group if tag in r.series]
        band = [r for r in with_tag if r.complete or ctx.include_partial] or with_tag
        if band:
            grid, values = align_curves([r.series[tag] for r in band])
            if grid.size:
                mean, low, high = mean_band(values, ctx.reps, ctx.seed)
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


def plots_for_task(task: str, groups: dict[str, list[Run]], colors: dict[str, str], ctx: PlotContext) -> list:
    """Write the task's PNGs; returns ``(title, file name)`` pairs."""
    out, written = ctx.out, []
    runs = [r for group in groups.values() for r in group]
    if any(EVAL_TAG in r.series for r in runs):
        fig, axes = _new_figure()
        _plot_tag(axes[0, 0], groups, EVAL_TAG, colors, ctx)
        axes[0, 0].set(ylabel="eval return", title=f"{task}: eval return, mean ± 95% CI")
        _legend(axes[0, 0], fontsize=8)
        written.append((f"eval return on {task}", f"returns_{_safe(task)}.png"))
        fig.savefig(out / written[-1][1], dpi=110)
    tags = [t for t in ctx.tags if any(t in r.series for r in runs)]
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
