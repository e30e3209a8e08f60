"""Command line: ``python -m rlplastic.report PATH... [--out DIR] [--compare X Y] [--tags ...]``.

A PATH is a run dir, a variant or task dir, a run root or a sweep dir. With a single PATH, ``--out`` defaults to
``PATH/report``; a single PATH that is a run dir itself is reported as it stands (``--include-partial`` implied).
Bad input exits 2 with one message on stderr; warnings (too few seeds) go to stderr too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlplastic.report.build import build_report
from rlplastic.report.plots import DEFAULT_TAGS
from rlplastic.report.runs import ReportError, discover_runs, is_run_dir


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m rlplastic.report PATH... [--out DIR] [--compare X Y] [--tags ...]``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :return: 0 on success, 2 on bad input (the message goes to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="rlplastic.report",
        description="Aggregate rlplastic run dirs (run dirs, run roots or sweep dirs, searched recursively) into "
        "report.md, summary.json, summary.csv and PNG plots. See the module docstring for the protocol.",
    )
    parser.add_argument("paths", nargs="+", help="run dirs or dirs containing run dirs")
    parser.add_argument("--out", help="output directory (default with a single PATH: PATH/report)")
    parser.add_argument("--compare", nargs=2, metavar=("X", "Y"), help="variants for P(X > Y)")
    parser.add_argument("--tags", nargs="+", help=f"tags of the plasticity plot (default: {' '.join(DEFAULT_TAGS)})")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--include-partial", action="store_true", help="count unfinished runs in the tables too")
    args = parser.parse_args(argv)
    try:
        if args.reps < 1:
            raise ReportError(f"--reps must be at least 1, got {args.reps}")
        out = _output(args.paths, args.out)
        runs = discover_runs(args.paths)
        single = len(args.paths) == 1 and is_run_dir(Path(args.paths[0]))
        summary = build_report(
            runs, out, compare=args.compare, reps=args.reps, seed=args.seed,
            include_partial=args.include_partial or single, tags=args.tags, sources=args.paths,
        )  # fmt: skip
    except ReportError as error:
        print(f"rlplastic.report: error: {error}", file=sys.stderr)
        return 2
    for warning in summary["warnings"]:
        print(f"rlplastic.report: warning: {warning}", file=sys.stderr)
    how = "; a single run dir, counted as it stands (--include-partial)" if single and not args.include_partial else ""
    print(f"{out / 'report.md'}: {len(runs)} run dir(s), {len(summary['incomplete'])} incomplete or failed{how}")
    return 0


def _output(paths: list[str], out: str | None) -> Path:
    """``--out``, or ``PATH/report`` for a single PATH.

    :raises ReportError: several paths and no ``--out``.
    """
    if out is not None:
        return Path(out)
    if len(paths) > 1:
        raise ReportError(f"--out is required with several paths ({len(paths)} given)")
    return Path(paths[0]) / "report"
