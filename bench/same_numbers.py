"""Check that a refactor changes no number: record tiny runs' CSVs, then compare two recordings.

    python bench/same_numbers.py record DIR        # train the cases below into DIR/<case>/
    python bench/same_numbers.py compare A B       # every (frame, tag, value) equal, time/* aside

The cases cover pixels and states, the full monitor (every probe metric), Adaptive RR, and every
intervention family (resets, ReDo, injection, shrink-and-perturb, the regularizers, SAM). Wall-clock
tags (``time/*``) are the only ones left out of the comparison. Each case takes well under a minute on
two CPU cores; ``--only NAME`` runs one.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "device=cpu", "progress=false", "save_video=false", "num_eval_episodes=1", "eval_every_frames=1000",
    "log_every_frames=200", "save_every_frames=0", "seed=3", "monitor.figures=false",
]  # fmt: skip
PIXELS = ["task=cartpole_balance", "num_train_frames=1600", "num_seed_frames=400", "hidden_dim=32",
          "feature_dim=16", "batch_size=16", "replay_buffer_size=5000"]  # fmt: skip
STATES = ["task=cartpole_balance", "obs_type=states", "aug=none", "num_train_frames=3000", "num_seed_frames=400",
          "hidden_dim=64", "batch_size=32", "replay_buffer_size=5000"]  # fmt: skip
FULL = ["monitor=full", "monitor.probe_every_updates=100", "monitor.probe_batch_size=64",
        "monitor.hessian_iters=12", "monitor.hessian_directions_k=4", "monitor.hutchinson_probes=4",
        "monitor.fit_steps=5"]  # fmt: skip

CASES: dict[str, list[str]] = {
    "pixels_full_nc_sam": [*PIXELS, *FULL, "intervention=[nc_reg,sam]"],
    "pixels_inject_reset": [*PIXELS, "intervention=[inject,heads_reset]", "intervention.inject.trigger.at_frames=[800]",
                            "intervention.heads_reset.modules=[actor]",
                            "intervention.heads_reset.trigger.every_frames=1000"],
    "states_adaptive_redo_l2": [*STATES, *FULL, "rr=adaptive", "rr.check_every_frames=1000", "rr.threshold=0.5",
                                "intervention=[redo,l2_init]", "intervention.redo.period=200"],
    "states_sp_wd_w2": [*STATES, "intervention=[shrink_perturb,weight_decay,w2_init]",
                        "intervention.shrink_perturb.trigger.every_frames=1000"],
}


def record(out: Path, only: str | None) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for name, overrides in CASES.items():
        if only and name != only:
            continue
        run_dir = out / name
        command = [sys.executable, str(ROOT / "train.py"), *COMMON, *overrides, f"run_dir={run_dir}"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
        print(f"{name}: {len(rows(run_dir / 'scalars.csv'))} rows (time/* aside)")


def rows(path: Path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(r["frame"], r["tag"], r["value"]) for r in csv.DictReader(f) if not r["tag"].startswith("time/")]


def compare(a: Path, b: Path) -> int:
    failures = 0
    cases = sorted(p.name for p in a.iterdir() if (p / "scalars.csv").exists() and (b / p.name).is_dir())
    if not cases:
        sys.exit(f"no case recorded in both {a} and {b}")
    for case in cases:
        left, right = rows(a / case / "scalars.csv"), rows(b / case / "scalars.csv")
        if left == right:
            print(f"{case}: same ({len(left)} rows)")
            continue
        failures += 1
        pairs = enumerate(zip(left, right, strict=False))
        diff = next((i for i, (x, y) in pairs if x != y), min(len(left), len(right)))
        print(f"{case}: DIFFERENT ({len(left)} vs {len(right)} rows); first at row {diff}: "
              f"{left[diff] if diff < len(left) else None} vs {right[diff] if diff < len(right) else None}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--only")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.only)
    else:
        sys.exit(1 if compare(args.a, args.b) else 0)


if __name__ == "__main__":
    main()
