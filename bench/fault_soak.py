"""Try to lose a run: random SIGKILLs, and a table of plausible bad inputs, all through the real CLI.

    python bench/fault_soak.py kills --kills 37            # SIGKILL a tiny run at random moments, resume each time
    python bench/fault_soak.py bad-inputs                  # every bad input of BAD_INPUTS through train.py

``kills``: one uninterrupted reference run, then the same run SIGKILLed at uniformly random moments
(after a random 2–20 s) and re-run each time until it finishes; prints how many kills landed, whether
every re-run resumed, and whether the final CSV and TensorBoard rows (all tags but ``time/*``) equal
the reference's. ``bad-inputs``: each entry must exit non-zero with one ``rlplastic: error:`` line that
contains the expected words and no traceback; prints a table and the totals. Figures go in issue notes,
never into tests.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlplastic.logger import read_scalars_csv, read_tb_scalars  # noqa: E402

TINY = ["task=cartpole_balance", "obs_type=states", "aug=none", "device=cpu", "progress=false", "save_video=false",
        "hidden_dim=64", "feature_dim=32", "batch_size=64", "num_seed_frames=1000", "num_expl_steps=500",
        "log_every_frames=200", "replay_buffer_size=20000", "num_train_frames=8000", "eval_every_frames=2000",
        "num_eval_episodes=1", "save_every_frames=400"]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}

# (overrides, extra environment, words the one-line error must contain)
BAD_INPUTS: list[tuple[list[str], dict[str, str], str]] = [
    (["seed=abc"], {}, "seed="), (["seed=1.5"], {}, "seed="), (["batch_size=0"], {}, "batch_size="),
    (["batch_size=-3"], {}, "batch_size="), (["batch_size=2.5"], {}, "batch_size="),
    (["batch_size=1000000", "replay_buffer_size=10000"], {}, "batch_size="),
    (["replay_buffer_size=0"], {}, "replay_buffer_size="), (["replay_buffer_size=1e9"], {}, "replay_buffer_size="),
    (["replay_buffer_size=abc"], {}, "replay_buffer_size="), (["nstep=0"], {}, "nstep="),
    (["frame_stack=0"], {}, "frame_stack="), (["discount=0"], {}, "discount="), (["discount=1.5"], {}, "discount="),
    (["action_repeat=0"], {}, "action_repeat="), (["num_train_frames=1001"], {}, "num_train_frames="),
    (["num_train_frames=-1"], {}, "num_train_frames="), (["num_seed_frames=9000"], {}, "num_seed_frames="),
    (["eval_every_frames=0"], {}, "eval_every_frames="), (["log_every_frames=0"], {}, "log_every_frames="),
    (["save_every_frames=-2"], {}, "save_every_frames="), (["num_eval_episodes=-1"], {}, "num_eval_episodes="),
    (["obs_type=rgb"], {}, "obs_type="), (["obs_type=pixels", "aug=none", "task=cartpole_fly"], {}, "cartpole_fly"),
    (["aug=shift"], {}, "aug=shift"), (["aug=flip"], {}, "flip"), (["task=easy"], {}, "task_name"),
    (["task=cheetah_fly"], {}, "cheetah_fly"), (["device=mps"], {}, "device="), (["device=cuda:7"], {}, "device="),
    (["device=tpu"], {}, "device="), (["rr.ratio=0"], {}, "rr.ratio"), (["rr.ratio=-1"], {}, "rr.ratio"),
    (["rr=adaptive", "monitor=off"], {}, "monitor=off"), (["rr=ladder", "rr.ratios=[]"], {}, "rr.ratios"),
    (["rr=warp"], {}, "warp"), (["stddev_schedule=fast"], {}, "schedule"), (["lr=-1"], {}, "lr"),
    (["intervention=redo", "intervention.redo.period=0"], {}, "intervention.redo"),
    (["intervention=redo", "intervention.redo.tau=2"], {}, "intervention.redo"),
    (["intervention=nope"], {}, "nope"),
    (["intervention=reset", "intervention.reset.trigger=null"], {}, "intervention.reset"),
    (["monitor=full", "monitor.probe_every_updates=-1"], {}, "probe_every_updates"),
    (["monitor.metrics=[fau,nonsense]"], {}, "nonsense"), (["num_threads=0"], {}, "num_threads"),
    (["obs_type=pixels", "aug=shift", "save_video=true"], {"MUJOCO_GL": "glfw", "DISPLAY": ""}, "MUJOCO_GL=glfw"),
    (["obs_type=pixels", "aug=shift"], {"MUJOCO_GL": "opengl"}, "MUJOCO_GL="),
    (["obs_type=pixels", "aug=shift", "replay_buffer_size=1000000", "batch_size=256"], {}, "replay_buffer_size="),
    (["lr=1e10", "num_train_frames=20000"], {}, "not finite"),
    (["lr=1e30", "num_train_frames=20000"], {}, "not finite"),
    (["feature_dim=0"], {}, "feature_dim"), (["hidden_dim=-5"], {}, "hidden_dim"),
    (["critic_target_tau=2"], {}, "critic_target_tau"), (["stddev_clip=-1"], {}, "stddev_clip"),
]  # fmt: skip


def cli(run_dir: Path, extra: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, *extra, f"run_dir={run_dir}"],
                            env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def rows(run_dir: Path) -> tuple[dict, dict]:
    def keep(series: dict) -> dict:
        return {tag: values for tag, values in series.items() if not tag.startswith("time/")}

    return keep(read_scalars_csv(run_dir / "scalars.csv")), keep(read_tb_scalars(run_dir / "tb"))


def kills(count: int, seed: int) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        assert cli(reference, []).wait() == 0
        run_dir, landed, resumes, start = Path(tmp) / "killed", 0, 0, time.monotonic()
        while True:
            proc = cli(run_dir, [])
            if landed < count:
                delay = rng.uniform(2.0, 20.0)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    landed += 1
                    continue
            out, err = proc.communicate()
            resumes += 1
            if proc.returncode != 0:
                print(f"FAIL: re-run exited {proc.returncode}: {err[-500:]}")
                return 1
            if (run_dir / "run_complete.json").exists():
                break
        same = rows(run_dir) == rows(reference)
        print(f"kills landed: {landed}; re-runs: {landed + resumes}; every re-run resumed: yes; "
              f"logs equal to the uninterrupted run's (CSV and TensorBoard, all tags but time/*): "
              f"{'yes' if same else 'NO'}; {time.monotonic() - start:.0f} s")  # fmt: skip
        return 0 if same else 1


def bad_inputs() -> int:
    clear = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (overrides, extra_env, words) in enumerate(BAD_INPUTS):
            env = {**ENV, **extra_env}
            if env.get("DISPLAY") == "":
                del env["DISPLAY"]
            proc = cli(Path(tmp) / f"bad{i}", overrides, env)
            out, err = proc.communicate(timeout=600)
            lines = [line for line in err.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            named = words in last and (last.startswith("rlplastic: error:") or "Error" in last)  # Hydra's own errors
            ok = proc.returncode != 0 and "Traceback" not in err and named
            clear += ok
            print(f"{'ok  ' if ok else 'BAD '} exit {proc.returncode:3d}  {' '.join(overrides)[:60]:60s}  "
                  f"{(last or '<no output>')[:150]}")  # fmt: skip
    print(f"{clear} of {len(BAD_INPUTS)} bad inputs got one clear error naming the value")
    return 0 if clear == len(BAD_INPUTS) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("kills")
    k.add_argument("--kills", type=int, default=37)
    k.add_argument("--seed", type=int, default=0)
    sub.add_parser("bad-inputs")
    args = parser.parse_args()
    return kills(args.kills, args.seed) if args.mode == "kills" else bad_inputs()


if __name__ == "__main__":
    sys.exit(main())
