"""What interventions cost: per-update time of the regularizers and SAM, and the one-off time of a firing.

    python bench/intervention_cost.py                      # DrQ-v2 sizes, batch 64, CPU (~3 min)
    python bench/intervention_cost.py --batch-size 256 --device cuda

At DrQ-v2 sizes (9×84×84 pixels, cheetah_run's 6-d actions, feature 50, hidden 1024) on random batches:

* per update: ``agent.update`` with no intervention, then with each of ``l2_init``, ``w2_init``, ``nc_reg``,
  ``weight_decay`` and ``sam``, each on its own identically seeded agent; blocks of updates are interleaved
  (plain, variant, plain, variant, ...) so machine drift hits both alike; the ratio is variant / plain;
* per firing: ``reset``, ``heads_reset``, ``shrink_perturb``, ``inject`` and ``redo`` (with its statistics
  forward on a batch of 256), timed once each on a trained agent.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.drqv2 import DrQV2Agent  # noqa: E402
from bench.pixel_batches import random_batch  # noqa: E402
from rlplastic.augment import RandomShift  # noqa: E402
from rlplastic.interventions.intervention_set import InterventionSet  # noqa: E402
from rlplastic.replay import Batch  # noqa: E402
from rlplastic.system import tune_malloc  # noqa: E402

PER_UPDATE = {
    "l2_init": {"targets": ["encoder", "actor", "critic"]},
    "w2_init": {"targets": ["encoder", "actor", "critic"]},
    "nc_reg": {},
    "weight_decay": {"targets": ["encoder", "actor", "critic"]},
    "sam": {"rho": 0.05},
}
SCHEDULE = {"kind": "schedule", "at_frames": [0]}
FIRINGS = {
    "reset": {"trigger": SCHEDULE},
    "heads_reset": {"trigger": SCHEDULE},
    "shrink_perturb": {"trigger": SCHEDULE},
    "inject": {"trigger": SCHEDULE},
    "redo": {"period": None, "trigger": SCHEDULE, "batch_size": 256},
}


def make_agent(args: argparse.Namespace) -> DrQV2Agent:
    torch.manual_seed(args.seed)
    return DrQV2Agent((9, 84, 84), (6,), device=args.device, augmentation=RandomShift(4), num_expl_steps=0)


class RandomReplay:
    """What ReDo samples its statistics batch from: one batch drawn up front, so drawing it is not timed."""

    def __init__(self, batch_size: int, device: str) -> None:
        self.batch = random_batch(batch_size, device, seed=12345)

    def sample(self, batch_size: int, device: Any = "cpu", rng: Any = None) -> Batch:
        return self.batch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_updates(agent: DrQV2Agent, batches: list[Batch], step: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        agent.update(batch, step + i)
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def per_update(args: argparse.Namespace) -> None:
    batches = [random_batch(args.batch_size, args.device, seed=i) for i in range(args.updates)]
    print(f"per update, batch {args.batch_size}, {args.blocks} interleaved blocks of {args.updates} updates:")
    for name, settings in PER_UPDATE.items():
        plain, variant = make_agent(args), make_agent(args)
        InterventionSet(variant, {name: settings})
        for agent in (plain, variant):  # warm-up: allocator, autograd graph caches
            time_updates(agent, batches[:2], 0, args.device)
        times: dict[str, list[float]] = {"plain": [], "variant": []}
        for block in range(args.blocks):
            times["plain"].append(time_updates(plain, batches, block * args.updates, args.device))
            times["variant"].append(time_updates(variant, batches, block * args.updates, args.device))
        base, with_it = statistics.median(times["plain"]), statistics.median(times["variant"])
        print(f"  {name:13s} {with_it * 1e3:8.1f} ms vs {base * 1e3:8.1f} ms plain: x{with_it / base:.3f}")


def per_firing(args: argparse.Namespace) -> None:
    print("per firing (one-off, on an agent after 3 updates):")
    batches = [random_batch(args.batch_size, args.device, seed=i) for i in range(3)]
    replay = RandomReplay(FIRINGS["redo"]["batch_size"], args.device)
    for name, settings in FIRINGS.items():
        agent = make_agent(args)
        interventions = InterventionSet(agent, {name: settings})
        time_updates(agent, batches, 0, args.device)
        sync(args.device)
        start = time.perf_counter()
        fired = interventions.at_episode_end({}, 0, replay, args.device)
        sync(args.device)
        seconds = time.perf_counter() - start
        report = fired[name]
        detail = ", ".join(f"{k}={v:g}" for k, v in report.items() if k in ("params", "recycled", "fraction"))
        print(f"  {name:15s} {seconds * 1e3:8.1f} ms  {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--updates", type=int, default=5, help="updates per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="interleaved blocks per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tune_malloc()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    per_update(args)
    per_firing(args)


if __name__ == "__main__":
    main()
