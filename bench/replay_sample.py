"""Replay batch assembly: ms per batch for each way of feeding the learner.

    python bench/replay_sample.py                          # 100k slots of random 3x84x84 frames, batch 256
    python bench/replay_sample.py --capacity 20000 --iters 30
    python bench/replay_sample.py --device cuda            # adds the CUDA rows (on a GPU machine)

Rows (``device`` = where the batch is consumed):

* ``host sync``: ``ReplayBuffer.sample(batch, device)``, today's path: NumPy gather on the host, then a
  copy to ``device`` from pageable memory (timed to completion on CUDA).
* ``host prefetch``: ``PrefetchingSampler.burst``; the figure is the time the caller *waits* for each
  batch while a stand-in update of ``--update-ms`` runs between batches, once as a sleep (the update
  runs elsewhere, e.g. on a GPU) and once as a busy torch matmul loop on the CPU (contends for the cores
  with the worker). On CUDA the batch comes through pinned staging memory on a side stream.
* ``device-resident``: ``DeviceReplayBuffer.sample`` with storage on ``device``: index draws on the host,
  gather on the device (timed to completion on CUDA).

The replay holds ``--episode-len``-step episodes of frames copied from a pool of random frames (each slot
is its own copy, so memory traffic is that of distinct frames). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlplastic.replay import ReplayBuffer, estimated_bytes  # noqa: E402
from rlplastic.replay_device import DeviceReplayBuffer  # noqa: E402
from rlplastic.replay_prefetch import PrefetchingSampler  # noqa: E402

FRAME_SHAPE = (3, 84, 84)
ACTION_SHAPE = (6,)


def filled_replay(args: argparse.Namespace) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (64, *FRAME_SHAPE), dtype=np.uint8)
    replay = ReplayBuffer(FRAME_SHAPE, ACTION_SHAPE, capacity=args.capacity, seed=1)
    action = np.zeros(ACTION_SHAPE, np.float32)
    for i in range(args.capacity):
        frame = pool[i % len(pool)]
        if i % (args.episode_len + 1) == 0:
            replay.add_first(frame)
        else:
            last = i % (args.episode_len + 1) == args.episode_len
            replay.add(action, float(rng.random()), 1.0, frame, last=last)
    return replay


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, iters: int) -> list[float]:
    """Milliseconds per call, each to completion on ``device``."""
    fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def busy(ms: float) -> None:
    """A CPU-bound stand-in for an update: torch matmuls for about ``ms`` milliseconds."""
    a = torch.randn(256, 256)
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


def time_prefetch(replay: ReplayBuffer, args: argparse.Namespace, device: torch.device, update: str) -> list[float]:
    """Milliseconds the caller waits per batch of a burst, with a stand-in update between batches."""
    waits = []
    with PrefetchingSampler(replay, args.batch_size, device) as sampler:
        batches = sampler.burst(args.iters + 1)
        next(batches)
        for _ in range(args.iters):
            if update == "sleep":
                time.sleep(args.update_ms / 1e3)
            else:
                busy(args.update_ms)
            start = time.perf_counter()
            next(batches)
            waits.append((time.perf_counter() - start) * 1e3)
    return waits


def report(name: str, times: list[float]) -> None:
    print(f"  {name:<44} {statistics.median(times):8.2f} ms  (mean {statistics.mean(times):.2f}, "
          f"min {min(times):.2f}, max {max(times):.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=100_000, help="replay slots, all filled")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--episode-len", type=int, default=500, help="agent steps per episode (DMC: 500)")
    parser.add_argument("--iters", type=int, default=50, help="timed batches per row")
    parser.add_argument("--update-ms", type=float, default=20.0, help="stand-in update between prefetched batches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device(args.device)] if args.device != "cpu" else [])

    print(f"replay_sample: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, capacity {args.capacity}, batch {args.batch_size}, "
          f"{estimated_bytes(args.capacity, FRAME_SHAPE, ACTION_SHAPE) / 1e9:.2f} GB per replay")  # fmt: skip
    start = time.perf_counter()
    host = filled_replay(args)
    print(f"  filled in {time.perf_counter() - start:.1f} s; {host.num_transitions} sampleable transitions")
    batch_bytes = 2 * args.batch_size * 9 * 84 * 84
    print(f"  one batch: {batch_bytes / 1e6:.1f} MB of stacked pixels")
    state = host.state_dict()
    for device in devices:
        print(f"device {device}:")
        report("host sync (ReplayBuffer.sample)", time_calls(lambda d=device: host.sample(args.batch_size, d),
                                                                device, args.iters))  # fmt: skip
        for update in ("sleep", "busy"):
            waits = time_prefetch(host, args, device, update)
            report(f"host prefetch, wait per batch ({args.update_ms:g} ms {update})", waits)
        resident = DeviceReplayBuffer(FRAME_SHAPE, ACTION_SHAPE, capacity=args.capacity, seed=1, storage_device=device)
        resident.load_state_dict(state)
        report("device-resident (DeviceReplayBuffer.sample)",
               time_calls(lambda r=resident, d=device: r.sample(args.batch_size, d), device, args.iters))  # fmt: skip
        del resident
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
