"""Plasticity-monitor overhead: wall time per 1k agent steps with the monitor off, FAU alone, default, full.

    python bench/monitor_overhead.py                         # DrQ-v2 sizes, batch 64, CPU (~10 min)
    python bench/monitor_overhead.py --updates 10 --probes 1 # a quick look
    python bench/monitor_overhead.py --device cuda --batch-size 256

What is timed is the part of the loop the monitor touches: ``replay.sample`` + ``agent.update`` +
``monitor.after_update``, at DrQ-v2 sizes (9×84×84 pixels, cheetah_run's 6-d actions, feature 50,
hidden 1024) on a replay filled with random frames. The environment is not stepped, so the
overhead ratios are upper bounds for a whole training loop (which also renders and steps physics).

* Per-update hook cost: three identically seeded agents, one without hooks, one with the FAU hooks and
  one with them but the encoder counted on every ``--encoder-every``-th update only
  (``encoder_fau_every_updates``), run interleaved blocks of updates (off, on, sparse, off, ...) so
  that machine drift hits all alike.
* Probe cost: probes of the default and full configs are timed directly and amortised over their
  cadence; a probe is one batch of ``probe_batch_size`` and, every ``curvature_every_probes`` probes,
  the Hessian-vector-product metrics. With ``figures`` on (both configs) it includes drawing the
  probe's pictures, whose share is reported on its own (``time/figures_s`` of each probe record:
  ms per probe and per figure).

With ``u`` updates per 1k agent steps (``1000 · rr``; DrQ-v2's RR 0.5 gives 500)::

    per_1k = u · (t_update + t_hooks) + u / probe_every_updates · t_probe
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.drqv2 import DrQV2Agent  # noqa: E402
from rlplastic.augment import RandomShift  # noqa: E402
from rlplastic.monitor import PlasticityMonitor, make_monitor  # noqa: E402
from rlplastic.replay import ReplayBuffer  # noqa: E402
from rlplastic.system import tune_malloc  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "monitor"


def load_monitor_config(name: str, seed: int, **overrides: Any) -> dict[str, Any]:
    """``monitor=<name>`` as Hydra composes it for a run (``full`` starts from ``default``; ``${seed}`` resolved)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR.parent), version_base="1.3"):
        root = compose(config_name="config", overrides=[f"monitor={name}", f"seed={seed}"])
    cfg = OmegaConf.to_container(root.monitor, resolve=True)
    cfg.update(overrides)
    return cfg


def filled_replay(args: argparse.Namespace) -> ReplayBuffer:
    """A replay of random 3×84×84 frames in 500-step episodes (DMC's length at action repeat 2)."""
    rng = np.random.default_rng(args.seed)
    replay = ReplayBuffer((3, 84, 84), (args.action_dim,), capacity=args.replay_size, frame_stack=3, nstep=3,
                          seed=args.seed)  # fmt: skip
    frame = lambda: rng.integers(0, 256, (3, 84, 84), dtype=np.uint8)  # noqa: E731
    replay.add_first(frame())
    for i in range(args.replay_size - 1):
        last = i % 500 == 499
        action = rng.uniform(-1, 1, args.action_dim).astype(np.float32)
        replay.add(action, float(rng.random()), 1.0, frame(), last=last)
        if last:
            replay.add_first(frame())
    return replay


def make_agent(args: argparse.Namespace, device: torch.device) -> DrQV2Agent:
    torch.manual_seed(args.seed)
    return DrQV2Agent((9, 84, 84), (args.action_dim,), device=device, feature_dim=args.feature_dim,
                      hidden_dim=args.hidden_dim, augmentation=RandomShift(pad=4), num_expl_steps=0)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(agent, monitor, replay, args, device, count: int) -> float:
    """Seconds for ``count`` sample+update(+after_update) iterations, device work included."""
    sync(device)
    start = time.perf_counter()
    for _ in range(count):
        batch = replay.sample(args.batch_size, device)
        agent.update(batch, 10_000)
        if monitor is not None:
            monitor.after_update(agent, replay, 10_000)
    sync(device)
    return time.perf_counter() - start


def time_probes(agent, monitor: PlasticityMonitor, replay, count: int) -> tuple[list[float], list[float], int]:
    """Wall seconds of ``count`` probes, the figure-drawing seconds of each, and the figures per probe."""
    monitor.pop_probe_records()  # the start probe's record, drawn before the timing
    times, figure_times, figures = [], [], 0
    for _ in range(count):
        start = time.perf_counter()
        monitor.probe(agent, replay, 10_000)  # reads its values back as floats: synchronous
        times.append(time.perf_counter() - start)
        (record,) = monitor.pop_probe_records()
        figure_times.append(record.scalars.get("time/figures_s", 0.0))
        figures = len(record.images)
    return times, figure_times, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch per update")
    parser.add_argument("--updates", type=int, default=60, help="timed updates per agent (monitored and not)")
    parser.add_argument("--block", type=int, default=5, help="updates per interleaved block")
    parser.add_argument("--probes", type=int, default=2, help="probes timed per config (default, full)")
    parser.add_argument("--encoder-every", type=int, default=4, help="encoder_fau_every_updates of the sparse arm")
    parser.add_argument("--rr", type=float, default=0.5, help="updates per agent step, to convert to 1k steps")
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--feature-dim", type=int, default=50)
    parser.add_argument("--action-dim", type=int, default=6, help="cheetah_run has 6")
    parser.add_argument("--replay-size", type=int, default=2000, help="random frames in the replay")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--probe-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a monitor key in the probed configs (default, full), e.g. probe_batch_size=16; "
                             "repeatable; values are parsed as YAML")  # fmt: skip
    args = parser.parse_args()
    probe_overrides: dict[str, Any] = {}
    for item in args.probe_set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--probe-set {item!r}: expected KEY=VALUE")
        probe_overrides[key] = yaml.safe_load(value)

    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    replay = filled_replay(args)
    plain, hooked, sparse = make_agent(args, device), make_agent(args, device), make_agent(args, device)
    fau_only = make_monitor(**load_monitor_config("default", args.seed, metrics=["fau"], probe_every_updates=0))
    fau_only.attach(hooked)
    fau_sparse = make_monitor(**load_monitor_config("default", args.seed, metrics=["fau"], probe_every_updates=0,
                                                    encoder_fau_every_updates=args.encoder_every))  # fmt: skip
    fau_sparse.attach(sparse)
    arms = ((plain, None), (hooked, fau_only), (sparse, fau_sparse))

    # warm-up (allocator, lazy init), then interleaved blocks
    for agent, monitor in arms:
        time_updates(agent, monitor, replay, args, device, 2)
    blocks: list[list[float]] = [[], [], []]
    for _ in range(max(1, args.updates // args.block)):
        for times, (agent, monitor) in zip(blocks, arms, strict=True):
            times.append(time_updates(agent, monitor, replay, args, device, args.block) / args.block)
    t_off, t_on, t_sparse = (statistics.median(times) for times in blocks)

    probes: dict[str, tuple[dict[str, Any], float]] = {}
    drawing: dict[str, tuple[float, int]] = {}  # mean figure seconds per probe, figures per probe
    for name in ("default", "full"):
        cfg = load_monitor_config(name, args.seed, **probe_overrides)
        monitor = make_monitor(**cfg)
        agent = make_agent(args, device)
        monitor.attach(agent)
        time_updates(agent, monitor, replay, args, device, 1)  # the first update may probe (probe_at_start)
        cycle = max(args.probes, cfg["curvature_every_probes"])  # cover a curvature cycle
        times, figure_times, figures = time_probes(agent, monitor, replay, cycle)
        probes[name] = (cfg, statistics.mean(times))
        drawing[name] = (statistics.mean(figure_times), figures)

    per_1k = 1000 * args.rr
    rows = [
        ("off", per_1k * t_off, None, None),
        ("fau alone", per_1k * t_on, None, None),
        (f"fau, enc/{args.encoder_every}", per_1k * t_sparse, None, None),
    ]
    for name, (cfg, t_probe) in probes.items():
        every = cfg["probe_every_updates"]
        amortised = per_1k / every * t_probe if every else 0.0
        rows.append((name, per_1k * t_on + amortised, t_probe, every))

    print(f"device {device} | batch {args.batch_size} | hidden {args.hidden_dim} | feature {args.feature_dim} | "
          f"rr {args.rr:g} ({per_1k:g} updates per 1k agent steps) | {torch.get_num_threads()} threads")  # fmt: skip
    print(f"update (sample+update): off {t_off * 1e3:.1f} ms, with FAU hooks {t_on * 1e3:.1f} ms, encoder FAU "
          f"every {args.encoder_every} {t_sparse * 1e3:.1f} ms (median of {len(blocks[0])} interleaved blocks of "
          f"{args.block})")  # fmt: skip
    print(f"{'monitor':<12} {'s / 1k agent steps':>20} {'overhead':>9} {'probe s':>8} {'every N updates':>16}")
    base = rows[0][1]
    for name, seconds, t_probe, every in rows:
        probe = "" if t_probe is None else f"{t_probe:.2f}"
        print(f"{name:<12} {seconds:>20.1f} {seconds / base - 1:>9.1%} {probe:>8} {every or '':>16}")
    for name, (seconds, figures) in drawing.items():
        if figures:
            print(f"figures ({name}): {seconds * 1e3:.0f} ms per probe, {seconds / figures * 1e3:.0f} ms per figure "
                  f"({figures} figures), included in its probe s")  # fmt: skip


if __name__ == "__main__":
    main()
