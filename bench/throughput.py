"""Training throughput: frames/s and where the time goes, for any train.py configuration.

    python bench/throughput.py                                  # cheetah_run pixels, DrQ-v2 sizes, batch 256
    python bench/throughput.py batch_size=32
    python bench/throughput.py --measure-steps 400 device=cuda  # on a GPU machine

Runs the real training loop (rlplastic.trainer.Trainer built by train.py) for the seed frames plus
``--measure-steps`` agent steps, with evaluation, checkpoints and TensorBoard off, and prints the split
of the post-seed wall time into env step, replay sample, update, acting, replay add and the rest, plus
the replay's bytes per stored transition next to the reference's (whole 9×84×84 stacks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import train  # noqa: E402
from rlplastic.system import tune_malloc  # noqa: E402

REFERENCE_BYTES_PER_TRANSITION = 9 * 84 * 84  # drqv2 stores one whole uint8 stack per step (docs/reference.md §1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure-steps", type=int, default=200, help="post-seed agent steps to time")
    parser.add_argument("--seed-steps", type=int, default=300, help="agent steps of seed data before timing")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default mmap behaviour")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. batch_size=32 task=walker_walk")
    args = parser.parse_args()

    malloc_tuned = False if args.no_malloc_tuning else tune_malloc()
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            probe = compose(config_name="config", overrides=args.overrides)
            repeat = probe.action_repeat
            seed_frames = args.seed_steps * repeat
            total = seed_frames + args.measure_steps * repeat
            cfg = compose(config_name="config", overrides=[
                "use_tb=false", "save_video=false", "progress=false", "num_eval_episodes=0",
                f"eval_every_frames={total}", "save_every_frames=0", f"log_every_frames={total}",
                f"num_seed_frames={seed_frames}", f"num_train_frames={total}",
                f"replay_buffer_size={min(probe.replay_buffer_size, total + 1000)}",
                f"run_dir={tmp}/run", *args.overrides,
            ])  # fmt: skip
        trainer = train.build_trainer(cfg, Path(tmp) / "run")
        trainer.run()
        profile = trainer.profile()

    wall = profile["wall"]
    frames = args.measure_steps * repeat
    phases = ["env", "sample", "update", "act", "replay_add", "monitor", "checkpoint"]
    seconds = {p: profile["seconds"].get(p, 0.0) for p in phases}
    seconds["other"] = wall - sum(seconds.values())
    print(f"config: task={cfg.task_name} obs_type={cfg.obs_type} batch_size={cfg.batch_size} "
          f"rr={cfg.rr.ratio} device={trainer.device} bf16={cfg.bf16} channels_last={cfg.channels_last} "
          f"malloc_tuned={malloc_tuned}")  # fmt: skip
    print(f"measured: {args.measure_steps} agent steps = {frames} frames, "
          f"{profile['counts'].get('update', 0)} updates, {wall:.1f} s")  # fmt: skip
    print(f"throughput: {frames / wall:.1f} frames/s ({args.measure_steps / wall:.2f} agent steps/s)")
    for phase, sec in seconds.items():
        count = profile["counts"].get(phase)
        per = f"  {1000 * sec / count:8.2f} ms/call" if count else ""
        print(f"  {phase:<11}{sec:8.2f} s  {100 * sec / wall:5.1f}%{per}")
    replay = trainer.replay
    print(f"replay: {replay.bytes_per_transition:,.0f} bytes per stored transition "
          f"(reference stacks: {REFERENCE_BYTES_PER_TRANSITION:,}; ratio {replay.bytes_per_transition / REFERENCE_BYTES_PER_TRANSITION:.3f})")  # noqa: E501  fmt: skip


if __name__ == "__main__":
    main()
