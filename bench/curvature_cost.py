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
* the trace estimators at ``--probes`` Rademacher probes each, each run ``--repeats`` times with fresh probes:
  plain Hutchinson, Hutch++ with the same number of products in all, and Hutchinson on the residual after
  deflating the Lanczos basis (the monitor's ``hessian_trace``; its exact part ``Tr T`` costs nothing beyond the
  Lanczos run). For each: the mean estimate, the RMS of its reported standard error beside the spread of the
  runs, the per-probe standard deviation SE·√n, SE/|trace| and the probes it would need for SE <= 10% of |trace|
  (SE scales as 1/√n; for Hutch++ the count is of its residual probes, sketch fixed); |trace| is the
  inverse-variance weighted mean of all the estimates, steadier than any one;
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
from bench.pixel_batches import random_batch  # noqa: E402
from rlplastic.augment import RandomShift  # noqa: E402
from rlplastic.monitor.curvature import (  # noqa: E402
    HessianOperator,
    curvature_directions,
    deflated_trace,
    hessian_lanczos,
    hutchpp_trace,
    sharpness,
)
from rlplastic.system import tune_malloc  # noqa: E402

DEFAULTS = OmegaConf.load(ROOT / "configs" / "monitor" / "default.yaml")


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
    parser.add_argument("--repeats", type=int, default=3, help="runs of each trace estimator, fresh probes each")
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
        estimators: dict[str, tuple[Callable[[torch.Generator], tuple[float, float]], int, int]] = {
            "Hutchinson": (lambda g: deflated_trace(hessian, args.probes, generator=g), 0, args.probes),
            "Hutch++ (same HVPs in all)": (lambda g: hutchpp_trace(hessian, args.probes, g), 0,
                                           args.probes - 2 * (args.probes // 3)),
            f"Lanczos-deflated (+{lanczos.steps} Lanczos)": (
                lambda g: deflated_trace(hessian, args.probes, lanczos.basis, lanczos.basis_trace, g),
                lanczos.steps, args.probes),
        }  # fmt: skip
        runs = {
            name: [timed(lambda fn=fn, s=100 * (i + 2) + r: fn(generator(s)), device) for r in range(args.repeats)]
            for i, (name, (fn, _, _)) in enumerate(estimators.items())
        }
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
    values = torch.tensor([v for r in runs.values() for (v, _), _ in r], dtype=torch.float64)
    ses = torch.tensor([se for r in runs.values() for (_, se), _ in r], dtype=torch.float64)
    weights = 1 / ses.clamp_min(1e-300).square()
    reference = abs(float((weights * values).sum() / weights.sum()))
    print(f"trace {reference:.4g} (inverse-variance weighted mean of all {len(values)} estimates); each estimator "
          f"run {args.repeats} times with fresh probes (the Lanczos basis kept): mean, RMS of its SE, spread of "
          "runs")  # fmt: skip
    print(f"{'trace estimator':<34} {'HVPs':>5} {'time s':>7} {'estimate':>10} {'SE':>9} {'spread':>9} "
          f"{'std/probe':>10} {'SE/|tr|':>8} {'probes for 10%':>15}")  # fmt: skip
    for name, (_, extra, residual_probes) in estimators.items():
        est = torch.tensor([v for (v, _), _ in runs[name]], dtype=torch.float64)
        se = float(torch.tensor([e for (_, e), _ in runs[name]], dtype=torch.float64).square().mean().sqrt())
        spread = float(est.std()) if len(est) > 1 else float("nan")
        seconds = statistics.mean(t for _, t in runs[name])
        ratio = se / reference if reference else float("inf")
        needed = residual_probes * (ratio / 0.1) ** 2
        print(f"{name:<34} {args.probes + extra:>5} {seconds:>7.2f} {float(est.mean()):>10.4g} {se:>9.3g} "
              f"{spread:>9.3g} {se * residual_probes**0.5:>10.3g} {ratio:>8.1%} {needed:>15.0f}")  # fmt: skip
    print(f"sharpness {t_sharp * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
