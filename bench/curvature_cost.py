"""What the critic-curvature metrics cost, and how precise the Hessian trace estimators are, at DrQ-v2 sizes.

    python bench/curvature_cost.py                          # DrQ-v2 sizes, probe batch 256, CPU (~1 min)
    python bench/curvature_cost.py --probes 30 --lanczos-iters 40
    python bench/curvature_cost.py --train-updates 40     # off the initial point first (~5 min more on a CPU)

Builds the real DrQ-v2 agent (``agents.drqv2.DrQV2Agent`` at its default sizes: 9×84×84 pixels, cheetah_run's
6-d actions, feature 50, hidden 1024), freezes a random batch of 256 through ``agent.critic_probe`` (as the
monitor does) and times, on the frozen critic loss w.r.t. all critic parameters:

* one Hessian-vector product (the unit of cost) and the double-backward graph it needs;
* Lanczos (``hessian_lanczos``, ``--lanczos-iters`` steps): ``hessian_max``, ``hessian_min`` and
  ``hessian_directions`` (top ``--k``, ε = ``--eps``) come from this one run, with the residual of each end;
* the trace estimators at ``--probes`` Rademacher probes each: plain Hutchinson, Hutch++ with the same number
  of products in all, and Hutchinson on the residual after deflating the Lanczos basis (the monitor's
  ``hessian_trace``; its exact part ``Tr T`` costs nothing beyond the Lanczos run); for each the estimate, its
  standard error, the per-probe standard deviation SE·√n, SE/|trace| and the probes it would need for SE <= 10%
  of |trace| (SE scales as 1/√n); |trace| is the inverse-variance weighted mean of the three independent
  estimates, steadier than each estimator's own (for Hutch++ the count is of its residual probes, sketch fixed);
* sharpness (two forwards and a backward).

The defaults of ``--lanczos-iters``, ``--probes``, ``--k`` and ``--eps`` are read from
``configs/monitor/default.yaml``. The agent is at initialisation unless ``--train-updates`` > 0 (updates on
random batches of ``--train-batch-size``, to move the critic off its initial point, where the trace nearly
cancels). Figures are printed, never asserted.
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
from rlplastic.monitor.curvature import (  # noqa: E402
    HessianOperator,
    curvature_directions,
    deflated_trace,
    hessian_lanczos,
    hutchpp_trace,
    sharpness,
)
from rlplastic.replay import Batch  # noqa: E402
from rlplastic.system import tune_malloc  # noqa: E402

DEFAULTS = OmegaConf.load(ROOT / "configs" / "monitor" / "default.yaml")


def random_batch(batch_size: int, device: str, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch_size, 9, 84, 84), generator=g, dtype=torch.uint8)
    next_obs = torch.randint(0, 256, (batch_size, 9, 84, 84), generator=g, dtype=torch.uint8)
    action = torch.rand(batch_size, 6, generator=g) * 2 - 1
    reward, discount = torch.rand(batch_size, 1, generator=g), torch.full((batch_size, 1), 0.99)
    return Batch(*(t.to(device) for t in (obs, action, reward, discount, next_obs)))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lanczos-iters", type=int, default=int(DEFAULTS.hessian_iters))
    parser.add_argument("--probes", type=int, default=int(DEFAULTS.hutchinson_probes))
    parser.add_argument("--k", type=int, default=int(DEFAULTS.hessian_directions_k))
    parser.add_argument("--eps", type=float, default=float(DEFAULTS.hessian_directions_eps))
    parser.add_argument("--hvp-repeats", type=int, default=5, help="Hessian-vector products timed (median)")
    parser.add_argument("--train-updates", type=int, default=0, help="agent updates on random batches first")
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tune_malloc()
    device = args.device

    torch.manual_seed(args.seed)
    agent = DrQV2Agent((9, 84, 84), (6,), device=device, augmentation=RandomShift(4), num_expl_steps=0)
    for i in range(args.train_updates):
        agent.update(random_batch(args.train_batch_size, device, seed=1000 + i), step=i)
    with torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
        torch.manual_seed(args.seed)
        probe = agent.critic_probe(random_batch(args.batch_size, device, seed=12345), step=args.train_updates)
    n_params = sum(p.numel() for p in probe.params)

    def generator(offset: int) -> torch.Generator:
        return torch.Generator(device=probe.params[0].device).manual_seed(args.seed + offset)

    with torch.enable_grad():
        hessian, t_graph = timed(lambda: HessianOperator(probe.loss_fn, probe.params), device)
        vec = hessian.random(generator(0), rademacher=False)
        t_hvp = statistics.median(timed(lambda: hessian(vec), device)[1] for _ in range(args.hvp_repeats))

        lanczos, t_lanczos = timed(lambda: hessian_lanczos(hessian, args.lanczos_iters, 0.0, 1, generator(1)), device)
        directions = curvature_directions(lanczos.ritz_values, args.k, args.eps)
        (plain, se_plain), t_plain = timed(lambda: deflated_trace(hessian, args.probes, generator=generator(2)), device)
        (hpp, se_hpp), t_hpp = timed(lambda: hutchpp_trace(hessian, args.probes, generator(3)), device)
        (defl, se_defl), t_defl = timed(
            lambda: deflated_trace(hessian, args.probes, lanczos.basis, lanczos.basis_trace, generator(4)), device
        )
        _, t_sharp = timed(lambda: sharpness(probe.loss_fn, probe.params, float(DEFAULTS.sharpness_rho)), device)

    cpu = device if not device.startswith("cuda") else torch.cuda.get_device_name()
    print(f"device {cpu} | {torch.get_num_threads()} threads | probe batch {args.batch_size} | critic parameters "
          f"{n_params:,} | trained {args.train_updates} updates")  # fmt: skip
    print(f"double-backward graph {t_graph * 1e3:.0f} ms; one Hessian-vector product {t_hvp * 1e3:.0f} ms "
          f"(median of {args.hvp_repeats})")  # fmt: skip
    top = lanczos.ritz_values.flip(0)[: args.k]
    scale = float(lanczos.ritz_values.abs().max())
    print(f"Lanczos, {lanczos.steps} steps: {t_lanczos:.2f} s ({t_lanczos / lanczos.steps * 1e3:.0f} ms per step); "
          f"basis {lanczos.basis.numel() * lanczos.basis.element_size() / 2**20:.0f} MiB")  # fmt: skip
    print(f"  hessian_max {lanczos.lambda_max:.4g} (residual {float(lanczos.residuals[-1]) / scale:.1e} of |λ|max), "
          f"hessian_min {lanczos.lambda_min:.4g} (residual {float(lanczos.residuals[0]) / scale:.1e})")  # fmt: skip
    print(f"  hessian_directions {directions} of top {args.k} above {args.eps:g}·λ_max; top Ritz values "
          f"{', '.join(f'{v:.3g}' for v in top.tolist())}")  # fmt: skip
    estimates = torch.tensor([plain, hpp, defl], dtype=torch.float64)
    weights = 1 / torch.tensor([se_plain, se_hpp, se_defl], dtype=torch.float64).clamp_min(1e-300).square()
    reference = abs(float((weights * estimates).sum() / weights.sum()))
    print(f"trace (inverse-variance weighted mean of the three) {reference:.4g}")
    print(f"{'trace estimator':<34} {'HVPs':>5} {'time s':>7} {'estimate':>10} {'SE':>9} {'std/probe':>10} "
          f"{'SE/|tr|':>8} {'probes for 10%':>15}")  # fmt: skip
    rows = (
        ("Hutchinson", args.probes, 0, t_plain, plain, se_plain, args.probes),
        ("Hutch++ (same HVPs in all)", args.probes, 0, t_hpp, hpp, se_hpp, args.probes - 2 * (args.probes // 3)),
        (f"Lanczos-deflated (+{lanczos.steps} Lanczos)", args.probes, lanczos.steps, t_defl, defl, se_defl,
         args.probes),
    )  # fmt: skip
    for name, hvps, extra, seconds, estimate, se, residual_probes in rows:
        ratio = se / reference if reference else float("inf")
        needed = residual_probes * (ratio / 0.1) ** 2
        print(f"{name:<34} {hvps + extra:>5} {seconds:>7.2f} {estimate:>10.4g} {se:>9.3g} "
              f"{se * residual_probes**0.5:>10.3g} {ratio:>8.1%} {needed:>15.0f}")  # fmt: skip
    print(f"sharpness {t_sharp * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
