"""bf16 vs fp32 side by side: does ``bf16=true`` learn like float32?

    python bench/bf16_learning.py                       # cartpole_balance pixels, batch 64, 30k frames, seeds 1-3
    python bench/bf16_learning.py --jobs 2                # two runs at a time, one torch thread each
    python bench/bf16_learning.py --plot bf16.png         # also draw every run's evaluations
    python bench/bf16_learning.py --seeds 1 2 --frames 20000 --extra obs_type=states aug=none

Each (precision, seed) run trains into ``bench_runs/bf16/<precision>/seed<k>``, its output in ``seed<k>.log``
beside it (re-running resumes or skips finished runs), with the monitor off. Then one table prints every
evaluation's return per run, the mean ± standard deviation over seeds at each evaluation per precision,
and the mean final return.
With ``--jobs N`` the runs go N at a time (fp32 and bf16 of a seed side by side, so a pair shares the
same load), each with ``num_threads = cores // N``. Worth running only where bf16 is fast: a CPU with
AVX-512 BF16 / AMX (``grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo``) or a GPU; elsewhere bf16 is
emulated and several times slower than float32.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["task=cartpole_balance", "batch_size=64", "monitor=off", "progress=false", "save_video=false",
        "eval_every_frames=5000", "num_eval_episodes=5",
        "replay_buffer_size=100000"]  # a 30k-frame run stores 15k steps; 1M would not fit 2 runs in 24 GiB  # fmt: skip


def eval_returns(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "scalars.csv", newline="") as f:
        return {int(r["frame"]): float(r["value"]) for r in csv.DictReader(f) if r["tag"] == "eval/episode_reward"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=30000)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores // jobs threads)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "bf16")
    parser.add_argument("--extra", nargs="*", default=[], help="more train.py overrides, e.g. obs_type=states aug=none")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--plot", type=Path, help="also draw the eval returns of every run into this PNG")
    args = parser.parse_args()
    if args.jobs < 1:
        sys.exit(f"--jobs {args.jobs}: must be >= 1")
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    threads = ["num_threads=auto"] if args.jobs == 1 else [f"num_threads={max(1, (os.cpu_count() or 1) // args.jobs)}"]
    keys = [(precision, seed) for seed in args.seeds for precision in args.precisions]

    def train_one(key: tuple[str, int]) -> dict[int, float]:
        precision, seed = key
        run_dir = args.out / precision / f"seed{seed}"
        bf16 = "true" if precision == "bf16" else "false"
        command = [sys.executable, str(ROOT / "train.py"), *BASE, *threads, *args.extra,
                   f"num_train_frames={args.frames}", f"seed={seed}", f"bf16={bf16}", f"run_dir={run_dir}"]  # fmt: skip
        # Output to a file, not a pipe: a run outlives a stopped bench (and checkpoints on SIGTERM) instead of
        # dying at its next print, and its log stays beside it.
        log = run_dir.parent / f"seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"{precision} seed {seed} failed (rc {done.returncode}; log {log}):\n{tail}")
        returns = eval_returns(run_dir)
        print(f"{precision} seed {seed}: " + "  ".join(f"{v:.0f}" for _, v in sorted(returns.items())), flush=True)
        return returns

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        try:
            results = dict(zip(keys, pool.map(train_one, keys), strict=True))
        except RuntimeError as error:
            sys.exit(str(error))
    frames = sorted(next(iter(results.values())))
    order = [(p, s) for p in args.precisions for s in args.seeds]
    means = "   ".join(f"{p} mean±sd" for p in args.precisions)
    print("\nframe    " + "  ".join(f"{p}/s{s}" for p, s in order) + "   " + means)
    for frame in frames:
        cells = "  ".join(f"{results[key].get(frame, float('nan')):>7.0f}" for key in order)
        stats = "  ".join(mean_sd([results[p, s][frame] for s in args.seeds if frame in results[p, s]])
                          for p in args.precisions)  # fmt: skip
        print(f"{frame:<8} {cells}   {stats}")
    for precision in args.precisions:
        finals = [results[precision, s][frames[-1]] for s in args.seeds]
        print(f"{precision}: final return {mean_sd(finals).strip()} over seeds {args.seeds} ({finals})")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


def plot(results: dict[tuple[str, int], dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    seeds = sorted({seed for _, seed in results})
    for (precision, seed), returns in sorted(results.items()):
        frames = sorted(returns)
        style = {"color": "tab:blue" if precision == "fp32" else "tab:orange", "marker": "o", "markersize": 3}
        ax.plot(frames, [returns[f] for f in frames], label=f"{precision} seed {seed}",
                linestyle=["-", "--", ":", "-."][seeds.index(seed) % 4], **style)  # fmt: skip
    ax.set_xlabel("frames")
    ax.set_ylabel("eval return")
    ax.set_title("bf16 vs fp32 (bench/bf16_learning.py)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def mean_sd(values: list[float]) -> str:
    if not values:
        return f"{'—':>6} {'':<5}"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):>6.0f}±{sd:<5.0f}"


if __name__ == "__main__":
    main()
