"""bf16 vs fp32 side by side: does ``bf16=true`` learn like float32?

    python bench/bf16_learning.py                       # cartpole_balance pixels, batch 64, 30k frames, seeds 1-3
    python bench/bf16_learning.py --seeds 1 2 --frames 20000 --extra obs_type=states aug=none

Each (precision, seed) run trains into ``bench_runs/bf16/<precision>/seed<k>`` (re-running resumes or skips
finished runs) with the monitor off, then one table prints every evaluation's return per run and the
mean final return per precision. Worth running only where bf16 is fast: a CPU with AVX-512 BF16 / AMX
(``grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo``) or a GPU; elsewhere bf16 is emulated and several
times slower than float32.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["task=cartpole_balance", "batch_size=64", "monitor=off", "progress=false", "save_video=false",
        "eval_every_frames=5000", "num_eval_episodes=5"]  # fmt: skip


def eval_returns(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "scalars.csv", newline="") as f:
        return {int(r["frame"]): float(r["value"]) for r in csv.DictReader(f) if r["tag"] == "eval/episode_reward"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=30000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "bf16")
    parser.add_argument("--extra", nargs="*", default=[], help="more train.py overrides, e.g. obs_type=states aug=none")
    args = parser.parse_args()
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    results: dict[tuple[str, int], dict[int, float]] = {}
    for precision in ("fp32", "bf16"):
        for seed in args.seeds:
            run_dir = args.out / precision / f"seed{seed}"
            bf16 = "true" if precision == "bf16" else "false"
            command = [sys.executable, str(ROOT / "train.py"), *BASE, *args.extra, f"num_train_frames={args.frames}",
                       f"seed={seed}", f"bf16={bf16}", f"run_dir={run_dir}"]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{precision} seed {seed} failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
            results[precision, seed] = eval_returns(run_dir)
            returns = "  ".join(f"{v:.0f}" for _, v in sorted(results[precision, seed].items()))
            print(f"{precision} seed {seed}: {returns}")
    frames = sorted(next(iter(results.values())))
    print("\nframe    " + "  ".join(f"{p}/s{s}" for p, s in results))
    for frame in frames:
        print(f"{frame:<8} " + "  ".join(f"{results[key].get(frame, float('nan')):>7.0f}" for key in results))
    for precision in ("fp32", "bf16"):
        finals = [results[precision, s][frames[-1]] for s in args.seeds]
        print(f"{precision}: final return mean {sum(finals) / len(finals):.0f} over seeds {args.seeds} ({finals})")


if __name__ == "__main__":
    main()
