"""Training throughput: frames/s and where the time goes, for any train.py configuration.

    python bench/throughput.py                                  # cheetah_run pixels, DrQ-v2 sizes, batch 256
    python bench/throughput.py batch_size=32
    python bench/throughput.py --measure-steps 400 device=cuda  # on a GPU machine

Runs the real training loop (rlplastic.trainer.Trainer built by train.py) for the seed frames plus
``--measure-steps`` agent steps, with evaluation, checkpoints and TensorBoard off, and prints the split
of the post-seed wall time into env step, replay sample, update, acting, replay add and the rest, plus
the replay's bytes per stored transition next to the reference's (whole 9×84×84 stacks).

With ``compile=true`` the update is compiled before the timing starts (one update on a synthetic batch of
the training shapes, after which the agent's parameters, optimizer states and the RNG are restored), so
frames/s is the steady state; the compile seconds are printed on their own line.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import train  # noqa: E402
from rlplastic.replay import Batch  # noqa: E402
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
        if cfg.compile:
            print(f"compile: {compile_update(trainer.agent, trainer.train_env, cfg.batch_size):.1f} s before timing")
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


def compile_update(agent, env, batch_size: int) -> float:
    """Run one update on a synthetic batch of the training shapes (compiling it); restore the agent and RNG.

    :return: wall seconds of that update (compilation included, device work completed).
    """
    state = copy.deepcopy(agent.state_dict())
    device = agent.device
    obs_shape, action_shape = env.observation_space.shape, env.action_space.shape
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if env.observation_space.dtype == "uint8":
            obs = torch.randint(0, 256, (batch_size, *obs_shape), dtype=torch.uint8, device=device)
        else:
            obs = torch.randn(batch_size, *obs_shape, device=device)
        batch = Batch(obs, torch.rand(batch_size, *action_shape, device=device) * 2 - 1,
                      torch.rand(batch_size, 1, device=device), torch.full((batch_size, 1), 0.99, device=device),
                      obs.clone())  # fmt: skip
        start = time.perf_counter()
        agent.update(batch, 0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    agent.load_state_dict(state)
    return seconds


if __name__ == "__main__":
    main()
