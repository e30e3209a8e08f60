"""``build_report``: check the input, compute the tables, draw the plots, write the files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlplastic.logger import CSV_NAME, TB_DIR
from rlplastic.report.correlation import MAX_SCATTERS, correlation_summary
from rlplastic.report.markdown import render_markdown
from rlplastic.report.plots import DEFAULT_TAGS, PlotContext, correlation_plots, plots_for_task
from rlplastic.report.runs import ReportError, Run, RunSet, variant_labels, variant_settings
from rlplastic.report.summary import (
    PROTOCOL,
    aggregate_table,
    comparison_pair,
    comparison_table,
    few_seeds,
    few_seeds_warning,
    run_entries,
    task_table,
    write_csv,
    write_json,
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
    check_input(runs, reps, compare, tags)
    out = output_dir(out_dir)
    runset = RunSet(runs, include_partial)
    chosen = "--compare" if compare is not None else "automatic"
    tables = {
        "tasks": task_table(runset, reps, seed),
        "aggregates": aggregate_table(runset, reps, seed),
        "comparison": comparison_table(runset, comparison_pair(compare, runset.variants), chosen, reps, seed),
    }
    ctx = PlotContext(
        out=out, reps=reps, seed=seed, include_partial=include_partial, tags=tuple(tags or DEFAULT_TAGS),
        colors={v: f"C{i % 10}" for i, v in enumerate(runset.variants)}, labels=variant_labels(runset.runs),
    )  # fmt: skip
    plots = draw_plots(runset, ctx)
    tables["correlation"] = correlate(runset, ctx)
    summary = assemble_summary(runset, tables, plots, reps, seed, sources)
    write_json(out / "summary.json", summary)
    write_csv(out / "summary.csv", summary)
    (out / "report.md").write_text(render_markdown(summary, runset, plots))
    return summary


def check_input(runs: Sequence[Run], reps: int, compare: Sequence[str] | None, tags: Sequence[str] | None) -> None:
    """Refuse bad input before anything is written.

    :raises ReportError: ``reps < 1``, no runs, no run with logs, ``compare`` not two known variants, a tag in
        ``tags`` that no run logged.
    """
    if reps < 1:
        raise ReportError(f"--reps must be at least 1, got {reps}")
    if not runs:
        raise ReportError("no run dirs to report on")
    if not any(r.series for r in runs):
        raise ReportError(f"no logs: expected {CSV_NAME} or {TB_DIR}/ event files in any of the {len(runs)} run dir(s)")
    variants = sorted({r.variant for r in runs})
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


def output_dir(out_dir: str | Path) -> Path:
    """Create the output dir (and its parents) if needed.

    :raises ReportError: the path exists and is not a directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out is not a directory: {out_dir}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def draw_plots(runset: RunSet, ctx: PlotContext) -> dict[str, list[tuple[str, str]]]:
    """Every task's PNGs: ``{task: [(title, file name), ...]}``."""
    return {task: plots_for_task(task, runset.groups_of(task), ctx) for task in runset.tasks}


def correlate(runset: RunSet, ctx: PlotContext) -> dict[str, Any]:
    """Which signal predicts plasticity loss, per task, with the scatter figures of the top-ranked signals (see
    :mod:`rlplastic.report.correlation`); ``skipped`` says why when no run logged the fit loss."""
    by_task = {task: [r for g in runset.groups_of(task).values() for r in g] for task in runset.tasks}
    result = correlation_summary(by_task, ctx.reps, ctx.seed)
    result["plots"] = {
        task: correlation_plots(task, by_task[task], rows, ctx, MAX_SCATTERS) for task, rows in result["tasks"].items()
    }
    return result


def assemble_summary(
    runset: RunSet,
    tables: dict[str, Any],
    plots: dict[str, list[tuple[str, str]]],
    reps: int,
    seed: int,
    sources: Sequence[str | Path] | None,
) -> dict[str, Any]:
    """The ``summary.json`` tree: protocol, sources, what each variant stands for, runs, tables, warnings,
    incomplete runs, plot files."""
    settings = variant_settings(runset.runs)
    small = few_seeds(tables["tasks"])
    return {
        "protocol": {**PROTOCOL, "reps": reps, "seed": seed, "alpha": 0.05, "include_partial": runset.include_partial},
        "sources": [str(s) for s in sources or []],
        "variants": {v: {"label": f"{v} ({s})" if s else v, "settings": s} for v, s in settings.items()},
        "runs": run_entries(runset),
        **tables,
        "few_seeds": small,
        "warnings": [w for w in (few_seeds_warning(small),) if w],
        "incomplete": runset.problems(),
        "plots": {t: [f for _, f in p] for t, p in plots.items()},
    }
