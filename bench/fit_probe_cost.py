"""What the target-fitting probe (``fit_loss``, ``fit_auc``) costs per probe, at DrQ-v2 sizes.

    python bench/fit_probe_cost.py                       # DrQ-v2 sizes, probe batch 256, k from the default config
    python bench/fit_probe_cost.py --steps 200 --fit-batch 64 --target random_projection

Builds the real DrQ-v2 agent (``agents.drqv2.DrQV2Agent`` at its default sizes: 9×84×84 pixels, cheetah_run's
6-d actions, feature 50, hidden 1024), freezes a random batch of ``--batch`` transitions through
``agent.critic_probe`` (as the monitor does; its cost is shared with every other probe metric and printed
apart) and times what the fitting adds: the targets (a fresh critic built and run once, or a random
projection) and the k Adam steps of :func:`rlplastic.monitor.fitting.fit_targets` on a copy of the critic.
The defaults of ``--steps`` and ``--target`` are read from ``configs/monitor/default.yaml``. Each part is
timed ``--repeats`` times (the first run, which imports and warms up, is dropped); the median is printed.
One training update (``agent.update`` on the same batch) is timed too, to give the cost in updates.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.drqv2 import DrQV2Agent  # noqa: E402
from rlplastic.augment import RandomShift  # noqa: E402
from rlplastic.monitor.fitting import (  # noqa: E402
    fit_targets,
    flat_outputs,
    fresh_network_targets,
    random_projection_targets,
)
from rlplastic.replay import Batch  # noqa: E402


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    defaults = OmegaConf.load(ROOT / "configs/monitor/default.yaml")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="probe batch size")
    parser.add_argument("--steps", type=int, default=int(defaults.fit_steps), help="k, Adam steps of the fit")
    parser.add_argument("--fit-batch", type=int, default=None, help="samples per step (default: the whole batch)")
    parser.add_argument("--target", default=str(defaults.fit_target), choices=("fresh_network", "random_projection"))
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam lr (DrQ-v2's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    agent = DrQV2Agent((9, 84, 84), (6,), device=device, augmentation=RandomShift(pad=4), lr=args.lr)
    g = torch.Generator().manual_seed(0)
    n = args.batch
    batch = Batch(
        torch.randint(0, 256, (n, 9, 84, 84), generator=g, dtype=torch.uint8).to(device),
        (torch.rand(n, 6, generator=g) * 2 - 1).to(device),
        torch.rand(n, 1, generator=g).to(device),
        torch.full((n, 1), 0.99**3).to(device),
        torch.randint(0, 256, (n, 9, 84, 84), generator=g, dtype=torch.uint8).to(device),
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            out = fn()
            sync()
            return out

        return run

    probe_s, probe = median_time(timed(lambda: agent.critic_probe(batch, step=0)), args.repeats)
    inputs = probe.critic_inputs
    generator = torch.Generator(device=device).manual_seed(0)
    if args.target == "fresh_network":
        target_fn = lambda: fresh_network_targets(agent.fresh_module("critic"), inputs)  # noqa: E731
    else:
        m = flat_outputs(agent.critic, inputs).shape[1]
        target_fn = lambda: random_projection_targets(inputs, m, generator)  # noqa: E731
    target_s, targets = median_time(timed(target_fn), args.repeats)
    fit_s, result = median_time(
        timed(lambda: fit_targets(agent.critic, inputs, targets, args.steps, args.lr, args.fit_batch, generator)),
        args.repeats,
    )
    # one training update on the same batch, for scale (last: it moves the agent off its initial point)
    update_s, _ = median_time(timed(lambda: agent.update(batch, step=0)), args.repeats)
    params = sum(p.numel() for p in agent.critic.parameters())
    print(f"device {device}, torch threads {torch.get_num_threads()}, critic {params / 1e6:.2f} M parameters "
          f"(trunk input {agent.encoder.repr_dim}), probe batch {n}, fit batch {args.fit_batch or n}")  # fmt: skip
    print(f"critic_probe (shared with the other probe metrics): {probe_s:.3f} s")
    print(f"targets ({args.target}): {target_s:.3f} s")
    print(f"fit, k = {args.steps} Adam steps: {fit_s:.3f} s ({fit_s / max(args.steps, 1) * 1e3:.1f} ms per step)")
    print(f"fitting adds per probe: {target_s + fit_s:.3f} s = {(target_s + fit_s) / update_s:.1f} DrQ-v2 updates "
          f"(one update on this batch: {update_s:.3f} s)")  # fmt: skip
    print(f"fit_loss {result.loss:.4f}, fit_auc {result.auc:.4f} (fresh agent)")


if __name__ == "__main__":
    main()
