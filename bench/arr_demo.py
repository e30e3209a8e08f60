"""A short CPU Adaptive-RR experiment: static RR 0.5, static RR 2 and adaptive, over seeds.

    python bench/arr_demo.py                        # cartpole_swingup states, 2 seeds, ~15 min on 2 cores
    python bench/arr_demo.py --seeds 1 2 3 --frames 60000 --task walker_walk
    tensorboard --logdir runs/arr_demo             # rr/value, events/rr_switch, plasticity/critic/fau

Each run is an ordinary train.py run (states observations, small networks, so it fits a CPU), with
the adaptive controller's check interval scaled down with the budget. Prints, per variant, the final
evaluation return per seed, the switch frame of the adaptive runs and the critic FAU at the start and
at the end. The run dirs stay under ``--root`` for TensorBoard; re-running resumes/skips them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlplastic.logger import read_scalars_csv  # noqa: E402

VARIANTS = {
    "static_0.5": ["rr=static", "rr.ratio=0.5"],
    "static_2": ["rr=static", "rr.ratio=2"],
    "adaptive": ["rr=adaptive"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole_swingup")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=40_000, help="training frames per run")
    parser.add_argument("--check-every-frames", type=int, default=5_000, help="adaptive check interval")
    parser.add_argument("--root", default=str(ROOT / "runs" / "arr_demo"))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    args = parser.parse_args()

    common = [
        f"task={args.task}", "obs_type=states", "aug=none", "device=cpu", "progress=false", "save_video=false",
        "hidden_dim=256", "batch_size=128", f"num_train_frames={args.frames}", "num_seed_frames=2000",
        "num_expl_steps=1000", f"stddev_schedule='linear(1.0,0.1,{args.frames // 4})'",
        f"eval_every_frames={args.frames // 8}", "num_eval_episodes=5",
        f"rr.check_every_frames={args.check_every_frames}",
    ]  # fmt: skip
    jobs = []
    for variant, overrides in VARIANTS.items():
        for seed in args.seeds:
            run_dir = Path(args.root) / variant / f"seed{seed}"
            extra = [o for o in common if not (o.startswith("rr.check") and variant != "adaptive")]
            cmd = [sys.executable, str(ROOT / "train.py"), *extra, *overrides, f"seed={seed}", f"run_dir={run_dir}"]
            jobs.append((variant, seed, run_dir, cmd))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    for _, _, _, cmd in jobs:
        while len(running) >= args.jobs:
            running.pop(0).wait()
        running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    for proc in running:
        proc.wait()

    print(f"task={args.task} frames={args.frames} seeds={args.seeds} (states, hidden 256, batch 128)")
    print(f"{'variant':<12}{'seed':>5}{'final return':>14}{'switch frame':>14}{'critic FAU first':>18}{'last':>8}")
    for variant, seed, run_dir, _ in jobs:
        series = read_scalars_csv(run_dir / "scalars.csv")
        final = series["eval/episode_reward"][-1][1]
        switch = series.get("events/rr_switch", [(None, None)])[0][0]
        fau = series.get("plasticity/critic/fau", [(0, float("nan"))])
        print(f"{variant:<12}{seed:>5}{final:>14.1f}{switch if switch is not None else '-':>14}"
              f"{fau[0][1]:>18.3f}{fau[-1][1]:>8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
