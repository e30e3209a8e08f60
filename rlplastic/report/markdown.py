"""``report.md``: what was read, the protocol, the tables, the plots, events, incomplete runs and notes.

Each section is one function returning its lines; :func:`render_markdown` joins them in reading order.
"""

from __future__ import annotations

import math
from typing import Any

from rlplastic.report.correlation import format_rho
from rlplastic.report.runs import RunSet
from rlplastic.report.summary import METRICS, MIN_SEEDS


def format_number(x: float, sig: int = 3) -> str:
    """``x`` with ``sig`` significant digits in fixed notation (``812``, ``55.6``, ``0.0123``); the integer part is
    never rounded away (``1234``), and magnitudes below 1e-4 use scientific notation (``1.23e-05``).

    :param x: the number.
    :param sig: significant digits (at least 1).
    """
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -4:
        return f"{x:.{sig - 1}e}"
    return f"{x:.{max(0, sig - 1 - magnitude)}f}"


def _fmt(ci: dict[str, float | None] | None, decimals: int | None = None) -> str:
    """``point [low, high]`` with 3 significant digits each (or fixed ``decimals``, for probabilities)."""
    if ci is None or ci["point"] is None:
        return "—"
    show = format_number if decimals is None else (lambda x: f"{x:.{decimals}f}")
    if ci["low"] is None:
        return f"{show(ci['point'])} (1 run: no CI)"
    return f"{show(ci['point'])} [{show(ci['low'])}, {show(ci['high'])}]"


def _variant(summary: dict[str, Any], variant: str) -> str:
    """```variant``` followed by the settings it stands for, where known: ```default` (aug=shift, rr=static 0.5)``."""
    settings = summary.get("variants", {}).get(variant, {}).get("settings")
    return f"`{variant}` ({settings})" if settings else f"`{variant}`"


def render_markdown(summary: dict[str, Any], runset: RunSet, plots: dict[str, list[tuple[str, str]]]) -> str:
    """``report.md`` from the summary tree, the runs and the plot files.

    :param summary: the tree :func:`~rlplastic.report.build.build_report` writes to ``summary.json``.
    :param runset: the runs reported on.
    :param plots: ``{task: [(title, file name), ...]}``.
    """
    sections = (
        header_section(summary, runset), warning_section(summary), protocol_section(summary["protocol"]),
        task_section(summary), aggregate_section(summary), comparison_section(summary["comparison"], runset.variants),
        correlation_section(summary["correlation"], summary["correlation"]["plots"]),
        plots_section(plots, runset.tasks), events_section(runset), incomplete_section(summary, runset),
    )  # fmt: skip
    return "\n".join(line for section in sections for line in section) + "\n"


def header_section(summary: dict[str, Any], runset: RunSet) -> list[str]:
    """Title and what was read: runs by state, tasks, variants."""
    runs, tasks, variants = runset.runs, runset.tasks, runset.variants
    n_done = sum(r.complete for r in runs)
    n_nolog = sum(not r.series for r in runs)
    where = ", ".join(f"`{s}`" for s in summary["sources"]) or "the given runs"
    return [
        "# rlplastic report", "",
        f"Read {len(runs)} run dir(s) under {where}: {n_done} finished, {len(runs) - n_done - n_nolog} in progress "
        f"or crashed, {n_nolog} without logs. {len(tasks)} task(s): {', '.join(tasks)}. {len(variants)} variant(s): "
        f"{', '.join(_variant(summary, v) for v in variants)}.", "",
    ]  # fmt: skip


def warning_section(summary: dict[str, Any]) -> list[str]:
    """The report's warnings (too few seeds), as block quotes right under the header."""
    return [line for w in summary.get("warnings", []) for line in (f"> **Warning:** {w}", "")]


def protocol_section(p: dict[str, Any]) -> list[str]:
    """How every number is computed, with the bootstrap settings of this report."""
    return [
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
        "- **Variants**: the settings after a variant's name are read from its runs' `config.yaml`: the keys whose "
        "values differ between the variants of a task (`default` is the configuration without overrides). Numbers "
        "have 3 significant digits.",
        f"- **Seeds**: a group with fewer than {MIN_SEEDS} counted seeds is flagged under the header; its CI is not "
        "reliable (with 2 seeds the bootstrap interval is just [min, max]).",
        "- **Curves**: per variant, seeds on a common grid (the union of their logged frames inside the range every "
        "seed covers, linear interpolation; for eval curves these are the shared eval frames), mean ± 95% bootstrap "
        "band; unfinished runs outside the band are thin dashed lines up to their last frame. Probe curves "
        "(`plasticity/*`) carry a marker on each probe (thinned beyond 40 per curve); one common point is drawn with "
        "its CI as an error bar. `events/*` are vertical lines on the return and RR plots (an event firing more than "
        "40 times in a run: ticks at the bottom).", "",
    ]  # fmt: skip


def task_section(summary: dict[str, Any]) -> list[str]:
    """Final return and AUC per task and variant: mean over seeds with its CI."""
    lines = [
        "## Per task", "",
        "| task | variant | seeds | final return, mean [95% CI] | AUC, mean [95% CI] | not counted |",
        "|---|---|---:|---|---|---:|",
    ]  # fmt: skip
    for task, by_variant in summary["tasks"].items():
        for v, e in by_variant.items():
            cells = [_variant(summary, v), str(len(e["seeds"])), _fmt(e["final_return"]), _fmt(e["auc"])]
            lines.append(f"| {task} | " + " | ".join(cells) + f" | {len(e['not_counted'])} |")
    return lines


def aggregate_section(summary: dict[str, Any]) -> list[str]:
    """IQM and mean across tasks per variant."""
    lines = [
        "", "## Across tasks", "",
        "| variant | tasks | runs | IQM final | mean final | IQM AUC | mean AUC |", "|---|---:|---:|---|---|---|---|",
    ]  # fmt: skip
    for v, e in summary["aggregates"].items():
        cells = [_fmt(e[m][s]) for m in METRICS for s in ("iqm", "mean")]
        lines.append(f"| {_variant(summary, v)} | {len(e['tasks'])} | {e['n_runs']} | " + " | ".join(cells) + " |")
    return lines


def comparison_section(c: dict[str, Any] | None, variants: list[str]) -> list[str]:
    """P(X > Y) per metric, overall and per task, or why it was skipped."""
    lines = ["", "## Probability of improvement", ""]
    if c is None:
        return [*lines, f"Skipped: {len(variants)} variants; choose two with `--compare X Y`."]
    how = "given by `--compare`"
    if c["chosen"] != "--compare":
        how = "chosen automatically: the only two variants, the second in sorted order as X; `--compare X Y` chooses"
    lines.append(f"P(X > Y) with X = `{c['x']}`, Y = `{c['y']}` ({how}), over {len(c['tasks'])} common task(s).")
    if c["tasks"]:
        lines += ["", "| metric | P(X > Y) [95% CI] | " + " | ".join(c["tasks"]) + " |",
                  "|---|---|" + "---:|" * len(c["tasks"])]  # fmt: skip
        for m, label in METRICS.items():
            per = " | ".join(f"{c[m]['per_task'][t]:.2f}" for t in c["tasks"])
            lines.append(f"| {label} | {_fmt(c[m], 2)} | {per} |")
    return lines


def plots_section(plots: dict[str, list[tuple[str, str]]], tasks: list[str]) -> list[str]:
    """The PNGs, per task."""
    lines = ["", "## Plots", ""]
    for task in tasks:
        lines += [f"### {task}", ""] + [f"![{title}]({name})\n" for title, name in plots[task]]
    return lines


def events_section(runset: RunSet) -> list[str]:
    """Every ``events/<name>`` per run: its frames, or a count with the first and last for many firings."""
    events = [(r, name, f) for r in runset.runs for name, f in sorted(r.events().items())]
    if not events:
        return []
    lines = ["## Events", "", "| task | variant | seed | event | frames |", "|---|---|---|---|---|"]
    for r, name, f in events:
        shown = ", ".join(map(str, f)) if len(f) <= 5 else f"{len(f)} firings, first {f[0]}, last {f[-1]}"
        lines.append(f"| {r.task} | `{r.variant}` | {r.seed} | {name} | {shown} |")
    return [*lines, ""]


def incomplete_section(summary: dict[str, Any], runset: RunSet) -> list[str]:
    """Every run not finished with evaluations, by path, and the notes met while reading."""
    lines = ["## Incomplete or failed runs", ""]
    lines += [f"- `{e['path']}`: {e['status']}" for e in summary["incomplete"]] or ["None: every run finished."]
    notes = [f"- `{r.path}`: {note}" for r in runset.runs for note in r.notes]
    if notes:
        lines += ["", "Notes while reading:", "", *notes]
    return lines


def correlation_section(correlation: dict[str, Any], plots: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The markdown section: per task, signals ranked by |ρ| with the fit loss, and the scatter figures.

    :param correlation: :func:`correlation_summary`'s result.
    :param plots: ``{task: [(title, file name), ...]}`` of the scatter figures.
    """
    lines = ["", "## Which signal predicts plasticity loss", ""]
    if correlation["skipped"]:
        return [*lines, f"Skipped: {correlation['skipped']}."]
    lines.append(
        f"Spearman ρ of every `plasticity/*` signal with the target-fitting loss `{correlation['target']}` at the "
        "same probe frame, and with the return gain over the evaluation window that follows the probe (return at "
        "the next eval minus at the previous), pairs of all runs of a task pooled; 95% bootstrap CI over runs. "
        "Ranked by |ρ| with the fit loss; a CI that covers 0 means no evidence of a relation. Signals that drift "
        "with training time correlate with each other through time alone: read ρ as a screen, not a cause. Pairs "
        "and runs are those of the fit-loss column."
    )
    for task, rows in correlation["tasks"].items():
        lines += ["", f"### {task}", "", "| rank | signal | ρ with fit loss [95% CI] | ρ with return gain [95% CI] | "
                  "pairs | runs |", "|---:|---|---|---|---:|---:|"]  # fmt: skip
        for i, row in enumerate(rows, start=1):
            f, g = row["fit_loss"], row["return_gain"]
            cells = [str(i), f"`{row['signal']}`", format_rho(f), format_rho(g), str(f["n_pairs"]), str(f["n_runs"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"![{title}]({name})\n" for title, name in plots.get(task, [])]
    return lines
