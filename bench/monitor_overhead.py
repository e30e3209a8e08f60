"""Plasticity-monitor overhead: wall time per 1k agent steps with the monitor off, FAU alone, default, full;
and the cost per probe of each probe measure.

    python bench/monitor_overhead.py                         # DrQ-v2 sizes, batch 64, CPU (~30 min: full probes)
    python bench/monitor_overhead.py --updates 20 --probes 1 --no-warmup-probe  # fewer repetitions (~12 min)
    python bench/monitor_overhead.py --probe-set fit_steps=10  # a smaller measure (cost ~ linear in fit_steps)
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
* Cost of each measure: every entry of the probe table (:data:`rlplastic.monitor.probe_metrics.PROBE_TABLE`)
  is timed inside the probes above, so the per-measure table adds up to the probe's wall time (the rest,
  "probe batch + critic_probe", is the replay sample, the frozen critic loss and the first-call captures).
  The default config's probes are timed with ``collapse_recent`` and ``fit_encoder`` on as well (the two
  measures only ``full`` has), so that every measure is priced at the default probe batch; the entries are
  independent (each draws from its own seed), and the default row of the overhead table leaves those two
  out. ``hessian_directions`` has no entry of its own: it is the extra Lanczos steps its top-k
  convergence test costs, timed as the difference to a second Lanczos run without it (one timing-only run
  per probe, excluded from the probe's wall time).

With ``u`` updates per 1k agent steps (``1000 · rr``; DrQ-v2's RR 0.5 gives 500)::

    per_1k = u · (t_update + t_hooks) + u / probe_every_updates · t_probe
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
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
from rlplastic.monitor import PlasticityMonitor, make_monitor, probe_metrics  # noqa: E402
from rlplastic.replay import ReplayBuffer  # noqa: E402
from rlplastic.system import tune_malloc  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "monitor"

# the table entries by their function, as the per-measure table names them
MEASURES = {
    "dormant": "dormant",
    "features": "srank / erank / feature_norm",
    "parameters": "weight_norm / drift",
    "critic_grad_norm": "grad_norm",
    "hessian": "Lanczos: hessian_max/min/directions, trace",
    "critic_sharpness": "sharpness",
    "last_layer": "last_layer_lambda_max / srank",
    "collapse": "collapse (nc1 ... nrc1)",
    "fitting": "target fitting: critic",
    "recent_collapse": "collapse on recent data",
    "fitting_encoder": "target fitting: encoder+critic",
}
# the entries the default config does not run (timed in its probes all the same, then left out of its total)
NOT_IN_DEFAULT = ("recent_collapse", "fitting_encoder")
DIRECTIONS = "hessian_directions"


class EntryClock:
    """Times every entry of the probe table inside each probe: :meth:`begin` before a probe, then :attr:`seconds`.

    ``hessian_directions`` is priced as the Lanczos entry's time minus that of a second Lanczos run without it
    (timing only: its seconds are in :attr:`extra`, to be taken off the probe's wall time).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.extra = 0.0
        probe_metrics.PROBE_TABLE = tuple(
            dataclasses.replace(entry, compute=self._timed(entry.compute)) for entry in probe_metrics.PROBE_TABLE
        )

    def begin(self) -> None:
        self.seconds, self.extra = {}, 0.0

    def _timed(self, compute: Callable[[probe_metrics.ProbeContext], dict[str, float]]) -> Callable:
        name = compute.__name__

        def run(ctx: probe_metrics.ProbeContext) -> dict[str, float]:
            start = time.perf_counter()
            out = compute(ctx)  # every entry returns floats: synchronous
            self.seconds[name] = time.perf_counter() - start
            if compute is probe_metrics.hessian and DIRECTIONS in ctx.metrics:
                layout = dataclasses.replace(ctx.layout, metrics=ctx.metrics - {DIRECTIONS})
                start = time.perf_counter()
                compute(dataclasses.replace(ctx, layout=layout))  # its own generator: no other draw moves
                top_1 = time.perf_counter() - start
                self.seconds[DIRECTIONS], self.extra = self.seconds[name] - top_1, self.extra + top_1
            return out

        return run


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


def time_probes(
    agent, monitor: PlasticityMonitor, replay, count: int, clock: EntryClock
) -> tuple[list[float], list[float], int, list[dict[str, float]]]:
    """Wall seconds of ``count`` probes, the figure-drawing seconds of each, the figures per probe and the
    seconds of each table entry in each probe."""
    monitor.pop_probe_records()  # the start probe's record, drawn before the timing
    times, figure_times, figures, entries = [], [], 0, []
    for _ in range(count):
        clock.begin()
        start = time.perf_counter()
        monitor.probe(agent, replay, 10_000)  # reads its values back as floats: synchronous
        times.append(time.perf_counter() - start - clock.extra)
        entries.append(dict(clock.seconds))
        (record,) = monitor.pop_probe_records()
        figure_times.append(record.scalars.get("time/figures_s", 0.0))
        figures = len(record.images)
    return times, figure_times, figures, entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch per update")
    parser.add_argument("--updates", type=int, default=60, help="timed updates per agent (monitored and not)")
    parser.add_argument("--block", type=int, default=5, help="updates per interleaved block")
    parser.add_argument("--probes", type=int, default=2, help="probes timed per config (default, full)")
    parser.add_argument("--no-warmup-probe", action="store_true",
                        help="no untimed start probe (probe_at_start) before the timed ones: one probe less per "
                             "config; the first timed probe then also builds the fitting targets")  # fmt: skip
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

    clock = EntryClock()
    probes: dict[str, tuple[dict[str, Any], float]] = {}
    drawing: dict[str, tuple[float, int]] = {}  # mean figure seconds per probe, figures per probe
    measures: dict[str, dict[str, float]] = {}  # config → measure → mean seconds per probe (curvature cycle)
    counts: dict[str, int] = {}  # config → timed probes
    for name in ("default", "full"):
        cfg = load_monitor_config(name, args.seed, **probe_overrides)
        # every measure priced at the default probe batch: the default's probes run full's extra two as well
        extras = {"collapse_recent": True, "fit_encoder": True} if name == "default" else {}
        warmup = {"probe_at_start": False} if args.no_warmup_probe else {}
        monitor = make_monitor(**{**cfg, **extras, **warmup})
        agent = make_agent(args, device)
        monitor.attach(agent)
        time_updates(agent, monitor, replay, args, device, 1)  # the first update may probe (probe_at_start)
        cycle = max(args.probes, cfg["curvature_every_probes"])  # cover a curvature cycle
        times, figure_times, figures, entries = time_probes(agent, monitor, replay, cycle, clock)
        per_entry = {key: statistics.mean(e.get(key, 0.0) for e in entries) for key in [*MEASURES, DIRECTIONS]}
        per_entry["figures"], per_entry["total"] = statistics.mean(figure_times), statistics.mean(times)
        per_entry["rest"] = per_entry["total"] - per_entry["figures"] - sum(per_entry[k] for k in MEASURES)
        measures[name], counts[name] = per_entry, len(entries)
        # the default config's own probe: without full's two measures
        own = per_entry["total"] - sum(per_entry[k] for k in NOT_IN_DEFAULT) if extras else per_entry["total"]
        probes[name] = (cfg, own)
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
    batches = {name: cfg["probe_batch_size"] for name, (cfg, _) in probes.items()}
    timed = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"\ncost per probe in s (mean over the timed probes: {timed}; pixels 9x84x84, DrQ-v2 sizes)")
    heads = [f"default+ @{batches['default']}", f"full @{batches['full']}"]
    print(f"{'measure':<46} {heads[0]:>15} {heads[1]:>12}")
    labels = {"rest": "probe batch + critic_probe", **MEASURES, DIRECTIONS: "  of which hessian_directions (vs top-1)",
              "figures": "figures", "total": "total probe"}  # fmt: skip
    order = ["rest", *list(MEASURES)[:5], DIRECTIONS, *list(MEASURES)[5:], "figures", "total"]
    for key in order:
        cells = [f"{measures[name][key]:.3f}" for name in ("default", "full")]
        print(f"{labels[key]:<46} {cells[0]:>15} {cells[1]:>12}")
    print("default+ = monitor=default with collapse_recent and fit_encoder on as well (as in full); the default "
          "rows below leave those two out\n")  # fmt: skip
    print(f"{'monitor':<12} {'s / 1k agent steps':>20} {'overhead':>9} {'share':>7} {'probe s':>8} "
          f"{'every N updates':>16}")  # fmt: skip
    base = rows[0][1]
    for name, seconds, t_probe, every in rows:
        probe = "" if t_probe is None else f"{t_probe:.2f}"
        share = 1 - base / seconds  # the monitor's share of the (monitored) training wall time
        print(f"{name:<12} {seconds:>20.1f} {seconds / base - 1:>9.1%} {share:>7.1%} {probe:>8} {every or '':>16}")
    for name, (seconds, figures) in drawing.items():
        if figures:
            print(f"figures ({name}): {seconds * 1e3:.0f} ms per probe, {seconds / figures * 1e3:.0f} ms per figure "
                  f"({figures} figures), included in its probe s")  # fmt: skip


if __name__ == "__main__":
    main()
