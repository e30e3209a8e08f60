"""PrefetchingSampler: the same batches as direct replay.sample calls, whatever is prefetched when."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from rlplastic.replay import Batch, ReplayBuffer
from rlplastic.replay_device import DeviceReplayBuffer
from rlplastic.replay_prefetch import PrefetchingSampler
from tests.factories import checkpoint_round_trip

FRAME_SHAPE = (3, 4, 4)
ACTION_SHAPE = (2,)
BATCH = 16

# (replay constructor, sampler options): every path of the sampler on the CPU.
VARIANTS: dict[str, tuple[Callable[..., ReplayBuffer], dict]] = {
    "host-background": (ReplayBuffer, {}),
    "host-staging": (ReplayBuffer, {"staging": True}),
    "host-inline": (ReplayBuffer, {"background": False}),
    "device-cpu": (functools.partial(DeviceReplayBuffer, storage_device="cpu"), {}),
    "device-cpu-background": (functools.partial(DeviceReplayBuffer, storage_device="cpu"), {"background": True}),
}


def make_buffer(cls: Callable[..., ReplayBuffer] = ReplayBuffer, capacity: int = 60) -> ReplayBuffer:
    return cls(FRAME_SHAPE, ACTION_SHAPE, capacity=capacity, frame_stack=3, nstep=3, seed=11)


class Writer:
    """Writes the same random episodes into any buffer: ``step()`` is one ``env.step -> replay.add``."""

    def __init__(self, buffer: ReplayBuffer, seed: int = 0) -> None:
        self.buffer, self.rng = buffer, np.random.default_rng(seed)
        self.left = 0

    def frame(self) -> np.ndarray:
        return self.rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8)

    def step(self) -> None:
        if self.left == 0:  # episodes of 1..15 steps, some terminal
            self.buffer.add_first(self.frame())
            self.left = int(self.rng.integers(1, 16))
        self.left -= 1
        last = self.left == 0
        discount = 0.0 if last and self.rng.random() < 0.5 else 1.0
        action = self.rng.uniform(-1, 1, ACTION_SHAPE).astype(np.float32)
        self.buffer.add(action, float(self.rng.normal()), discount, self.frame(), last=last)


def assert_same(a: Batch, b: Batch) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.device == y.device
        assert torch.equal(x, y)


def updates_at(step: int) -> int:
    """A burst schedule with 0, 1, 2 and 3 updates per step."""
    return (0, 1, 2, 0, 3, 1)[step % 6]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trainer_loop_gives_the_direct_stream(variant: str) -> None:
    """act -> k updates (with side samples between) -> add, over episode ends and many evictions."""
    cls, options = VARIANTS[variant]
    direct, prefetched = make_buffer(cls), make_buffer(cls)
    writers = Writer(direct), Writer(prefetched)
    side_direct, side_prefetched = np.random.default_rng(5), np.random.default_rng(5)
    sampler = PrefetchingSampler(prefetched, BATCH, "cpu", **options)
    for _ in range(12):  # enough steps for a first transition
        for w in writers:
            w.step()
    compared = 0
    for step in range(400):  # capacity 60: the ring wraps ~7 times
        k = updates_at(step)
        if k:
            sampler.prefetch()  # overlaps act
        # act: a side sample (like a monitor probe) while the prefetch may be running
        assert_same(direct.sample(4, rng=side_direct), prefetched.sample(4, rng=side_prefetched))
        for i, batch in enumerate(sampler.burst(k)):
            assert_same(direct.sample(BATCH), batch)
            compared += 1
            if i % 2 == 0:
                assert_same(direct.sample(8, rng=side_direct), prefetched.sample(8, rng=side_prefetched))
        for w in writers:
            w.step()
    sampler.close()
    assert compared == sum(updates_at(s) for s in range(400))
    assert direct._rng.bit_generator.state == prefetched._rng.bit_generator.state


@pytest.mark.parametrize("variant", ["host-background", "host-staging"])
def test_prefetch_overtaken_by_writes_and_checkpoints_is_discarded(variant: str) -> None:
    """Prefetches at the wrong time (before add, before state_dict) change neither batches nor checkpoints."""
    cls, options = VARIANTS[variant]
    direct, prefetched = make_buffer(cls), make_buffer(cls)
    writers = Writer(direct), Writer(prefetched)
    sampler = PrefetchingSampler(prefetched, BATCH, "cpu", **options)
    for step in range(150):
        for w in writers:
            w.step()
        if direct.num_transitions == 0:
            continue
        sampler.prefetch()  # right after add: discarded by the next add unless a batch is due first
        if step % 5 == 0:
            state_direct, state_prefetched = direct.state_dict(), prefetched.state_dict()
            assert not sampler.pending  # the guard ran
            assert state_direct["rng_state"] == state_prefetched["rng_state"]
            for name in ("frames", "actions", "rewards", "discounts", "episode_start"):
                assert torch.equal(state_direct[name], state_prefetched[name])
        if step % 3 == 0:
            assert_same(direct.sample(BATCH), sampler.next())
        if step % 7 == 0:  # a direct main-stream sample while a prefetch is pending: same stream too
            sampler.prefetch()
            assert_same(direct.sample(BATCH), prefetched.sample(BATCH))
            assert not sampler.pending

    # A checkpoint taken with a prefetch pending restores into a buffer that continues the direct stream.
    sampler.prefetch()
    restored = make_buffer(cls)
    restored.load_state_dict(checkpoint_round_trip(prefetched.state_dict()))
    with PrefetchingSampler(restored, BATCH, "cpu", **options) as again:
        for batch in again.burst(3):
            assert_same(direct.sample(BATCH), batch)
    sampler.close()


def test_errors_surface_at_next_and_keep_the_stream() -> None:
    direct, prefetched = make_buffer(), make_buffer()
    sampler = PrefetchingSampler(prefetched, BATCH, "cpu")
    for buffer in (direct, prefetched):
        buffer.add_first(np.zeros(FRAME_SHAPE, np.uint8))
    sampler.prefetch()
    with pytest.raises(ValueError, match="no sampleable transition"):
        direct.sample(BATCH)
    with pytest.raises(ValueError, match="no sampleable transition"):
        sampler.next()
    writers = Writer(direct, seed=1), Writer(prefetched, seed=1)
    for _ in range(10):
        for w in writers:
            w.step()
    sampler.prefetch()
    assert_same(direct.sample(BATCH), sampler.next())
    sampler.close()


def test_burst_prefetches_the_next_batch_while_the_current_is_used() -> None:
    buffer = make_buffer()
    writer = Writer(buffer)
    for _ in range(20):
        writer.step()
    sampler = PrefetchingSampler(buffer, BATCH, "cpu")
    pending = [sampler.pending for _ in sampler.burst(3)]
    assert pending == [True, True, False]
    inline = PrefetchingSampler(make_buffer(), BATCH, "cpu", background=False)
    inline.prefetch()
    assert not inline.pending  # nothing runs ahead without a worker
    sampler.close()
    inline.close()


class ObservedBuffer(ReplayBuffer):
    """Records whether a write ever happened while the sampler's worker was reading the buffer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.readers = 0
        self.lock = threading.Lock()
        self.overlaps = 0

    def _assemble(self, t, frames_out=None):
        with self.lock:
            self.readers += 1
        try:
            time.sleep(0.002)  # widen the window a missing guard would leave open
            return super()._assemble(t, frames_out)
        finally:
            with self.lock:
                self.readers -= 1

    def _write(self, *args) -> None:
        with self.lock:
            self.overlaps += self.readers
        super()._write(*args)


def test_the_worker_never_reads_while_add_writes() -> None:
    buffer = ObservedBuffer(FRAME_SHAPE, ACTION_SHAPE, capacity=60, seed=0)
    writer = Writer(buffer)
    for _ in range(12):
        writer.step()
    sampler = PrefetchingSampler(buffer, BATCH, "cpu")
    for _ in range(60):
        sampler.prefetch()
        writer.step()  # add right after submitting: the guard must wait for the worker
    assert buffer.overlaps == 0
    sampler.close()


def test_one_sampler_per_buffer_and_closed_samplers_refuse() -> None:
    buffer = make_buffer()
    sampler = PrefetchingSampler(buffer, BATCH, "cpu")
    with pytest.raises(ValueError, match="already has a guard"):
        PrefetchingSampler(buffer, BATCH, "cpu")
    sampler.close()
    sampler.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sampler.next()
    PrefetchingSampler(buffer, BATCH, "cpu").close()  # the guard was removed
    with pytest.raises(ValueError, match="staging"):
        PrefetchingSampler(DeviceReplayBuffer(FRAME_SHAPE, ACTION_SHAPE, capacity=10), BATCH, "cpu", staging=True)
    with pytest.raises(ValueError, match="batch_size"):
        PrefetchingSampler(make_buffer(), 0, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_staging_to_cuda_gives_the_direct_stream() -> None:
    direct, prefetched = make_buffer(), make_buffer()
    writers = Writer(direct), Writer(prefetched)
    sampler = PrefetchingSampler(prefetched, BATCH, "cuda")
    assert sampler._staging is not None and sampler._staging.frames.is_pinned()
    for _ in range(12):
        for w in writers:
            w.step()
    for step in range(100):
        k = updates_at(step)
        if k:
            sampler.prefetch()
        for batch in sampler.burst(k):
            assert_same(direct.sample(BATCH, "cuda"), batch)
        for w in writers:
            w.step()
    sampler.close()


def test_defaults_follow_where_the_replay_lives() -> None:
    with PrefetchingSampler(make_buffer(), BATCH, "cpu") as host:
        assert host.background and host._staging is None  # a CPU target needs no staging copy
    device_buffer = DeviceReplayBuffer(FRAME_SHAPE, ACTION_SHAPE, capacity=10, storage_device="cpu")
    with PrefetchingSampler(device_buffer, BATCH, "cpu") as device:
        assert not device.background and device._staging is None
    with PrefetchingSampler(make_buffer(), BATCH, "cpu", staging=True) as staged:
        assert staged._staging is not None and not staged._staging.frames.is_pinned()
        assert staged._staging.frames.shape == (2, BATCH, 3, *FRAME_SHAPE)
