"""Command line: ``python -m rlplastic.report RUN_DIR... --out DIR [--compare X Y] [--tags ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlplastic.report.build import build_report
from rlplastic.report.plots import DEFAULT_TAGS
from rlplastic.report.runs import ReportError, discover_runs


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
