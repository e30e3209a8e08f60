"""Assemble the next training batch in the background without changing the sample stream.

:class:`PrefetchingSampler` hands out the replay's main-stream batches (what ``replay.sample(batch_size,
device)`` would return, call after call) and can assemble the next one on a worker thread while the
caller does something else (an update, or the agent's ``act``). For a host replay feeding a GPU it gathers
into pinned staging memory and copies to the device asynchronously on a side CUDA stream.

Why the stream cannot change. A prefetched batch is a *speculation*: it is drawn from the replay's own
generator and from the stored steps as they are when :meth:`PrefetchingSampler.prefetch` is called. The
speculation is kept only if, when :meth:`PrefetchingSampler.next` is called, nothing has happened to the
buffer or its generator in between; then the batch is exactly what ``replay.sample`` would have returned
at that moment. The sampler installs a guard on the buffer (:meth:`ReplayBuffer.attach_guard`) that runs
before every ``add_first``, ``add``, main-stream ``sample``, ``state_dict`` and ``load_state_dict``: it
waits for the worker, discards a batch that was not handed out and rewinds the generator to where it was
before the draw. So a prefetch issued at the wrong time costs the work but never changes a batch or a
checkpoint, the worker never reads the buffer while ``add`` writes it, and side samples
(``sample(..., rng=...)``, e.g. the monitor's probes) only read, so they may run alongside the worker.

When to prefetch. In the trainer's step (``act -> k updates -> env.step -> replay.add``) every batch of
the step may be assembled ahead: the first while ``act`` runs (the step's ``k`` is known before ``act``),
batch ``i + 1`` while update ``i`` runs (:meth:`PrefetchingSampler.burst` does this). A prefetch that an
``add`` overtakes is simply discarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from rlplastic.replay import Batch, ReplayBuffer
from rlplastic.replay_device import DeviceReplayBuffer

__all__ = ["PrefetchingSampler"]


class _Staging:
    """Host buffers one batch is gathered into before its copy to the device (pinned for CUDA)."""

    def __init__(self, replay: ReplayBuffer, batch_size: int, device: torch.device) -> None:
        pin = device.type == "cuda"

        def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, pin_memory=pin)

        frame_dtype = torch.from_numpy(np.empty(0, dtype=replay.frame_dtype)).dtype
        self.frames = empty((2, batch_size, replay.frame_stack, *replay.frame_shape), frame_dtype)
        self.action = empty((batch_size, *replay.action_shape), torch.float32)
        self.reward = empty((batch_size, 1), torch.float32)
        self.discount = empty((batch_size, 1), torch.float32)
        self.stacked_shape = (batch_size, replay.frame_stack * replay.frame_shape[0], *replay.frame_shape[1:])
        self.stream = torch.cuda.Stream(device) if pin else None


class PrefetchingSampler:
    """The replay's main sample stream, one batch ahead on a worker thread.

    ``sampler.next()`` returns, call after call, the batches that ``replay.sample(batch_size, device)``
    would return; :meth:`prefetch` starts assembling the next one in the background. The first guarantee
    holds whatever the caller does in between (see the module docstring).

    :param replay: The buffer (a host :class:`ReplayBuffer` or a :class:`DeviceReplayBuffer`). The sampler
        installs its guard on it; :meth:`close` removes it.
    :param batch_size: Transitions per batch.
    :param device: Device of the returned batches (the training device).
    :param background: Assemble prefetched batches on a worker thread. Default: for a host replay, yes;
        for a :class:`DeviceReplayBuffer`, no (its batches are a few kernel launches, and :meth:`prefetch`
        is then a no-op).
    :param staging: Gather into preallocated staging buffers and copy those to ``device``. Default: when
        ``device`` is CUDA and the replay is on the host; the buffers are then pinned and the copies
        asynchronous on a side stream. With a CPU ``device`` the copy is a plain one (only useful to test
        this path without a GPU).
    """

    def __init__(
        self,
        replay: ReplayBuffer,
        batch_size: int,
        device: torch.device | str,
        background: bool | None = None,
        staging: bool | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
        self.replay = replay
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        on_host = not isinstance(replay, DeviceReplayBuffer)
        self.background = on_host if background is None else bool(background)
        use_staging = (on_host and self.device.type == "cuda") if staging is None else bool(staging)
        if use_staging and not on_host:
            raise ValueError("staging applies to a host ReplayBuffer; a DeviceReplayBuffer assembles on its device")
        self._staging = _Staging(replay, self.batch_size, self.device) if use_staging else None
        self._executor: ThreadPoolExecutor | None = None
        # The batch being assembled ahead: its future, the generator state before its draw, and the write
        # counter and generator it was drawn from (checked when it is handed out).
        self._pending: tuple[Future[Batch], dict[str, Any], int, np.random.Generator] | None = None
        replay.attach_guard(self.cancel)
        self._closed = False

    # ------------------------------------------------------------------ the stream

    @property
    def pending(self) -> bool:
        """Whether a prefetched batch is waiting to be handed out."""
        return self._pending is not None

    def prefetch(self) -> None:
        """Start assembling the next batch in the background (no-op if one is pending or ``background`` is off).

        Useful only if nothing writes to the buffer before the next :meth:`next`; anything that does
        discards the batch (and rewinds the generator), so the stream never changes.
        """
        self._check_open()
        if self._pending is not None or not self.background:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-prefetch")
        rng = self.replay._rng
        state = rng.bit_generator.state
        future = self._executor.submit(self._assemble, rng)
        self._pending = (future, state, self.replay._num_written, rng)

    def next(self) -> Batch:
        """The next batch of the replay's main stream: the prefetched one if pending, else sampled now."""
        self._check_open()
        if self._pending is None:
            batch = self._assemble(self.replay._rng)
        else:
            future, _, written, rng = self._pending
            self._pending = None
            batch = future.result()  # an error of the draw (e.g. nothing sampleable) is raised here
            if written != self.replay._num_written or rng is not self.replay._rng:  # the guard prevents this
                raise RuntimeError("the replay changed under a prefetched batch without running its guard")
        if self._staging is not None and self._staging.stream is not None:
            # Allocated on the side stream, used on the caller's: keep the allocator from reusing the memory
            # before the caller's queued work is done with it.
            current = torch.cuda.current_stream(self.device)
            for tensor in batch:
                tensor.record_stream(current)
        return batch

    def burst(self, count: int) -> Iterator[Batch]:
        """Yield ``count`` batches of the stream, assembling each next one while the caller uses the current.

        For ``k`` updates at one agent step: ``for batch in sampler.burst(k): agent.update(batch, step)``.
        """
        for i in range(count):
            batch = self.next()
            if i + 1 < count:
                self.prefetch()
            yield batch

    def cancel(self) -> None:
        """Wait for a pending prefetch, discard it and rewind the replay's generator to before its draw.

        Installed as the replay's guard, so it runs before every write, main-stream sample and checkpoint
        access of the buffer; a no-op when nothing is pending.
        """
        if self._pending is None:
            return
        future, state, _, rng = self._pending
        self._pending = None
        with contextlib.suppress(Exception):  # the synchronous call will meet the same error, if any
            future.result()
        rng.bit_generator.state = state

    def close(self) -> None:
        """Discard a pending prefetch, stop the worker and remove the guard from the replay (idempotent)."""
        if self._closed:
            return
        self.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.replay.attach_guard(None)
        self._closed = True

    def __enter__(self) -> PrefetchingSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this PrefetchingSampler is closed")

    # ------------------------------------------------------------------ assembly (worker or caller thread)

    def _assemble(self, rng: np.random.Generator) -> Batch:
        """Draw and assemble one batch, exactly as ``replay.sample`` does with the buffer's generator.

        Runs on the worker (only while no write can happen: see :meth:`cancel`) or inline in :meth:`next`,
        never both at once, so the staging buffers have one user at a time.
        """
        replay = self.replay
        t = replay._draw_indices(self.batch_size, rng)
        staging = self._staging
        if staging is None:
            return replay._batch(t, self.device)
        frames, action, reward, discount = replay._assemble(t, frames_out=staging.frames.numpy())
        staging.action.numpy()[...] = action
        staging.reward.numpy()[:, 0] = reward
        staging.discount.numpy()[:, 0] = discount
        sources = (
            staging.frames[0].view(staging.stacked_shape),
            staging.action,
            staging.reward,
            staging.discount,
            staging.frames[1].view(staging.stacked_shape),
        )
        if staging.stream is None:  # CPU target: plain copies out of the (reused) staging buffers
            return Batch(*(source.to(self.device, copy=True) for source in sources))
        with torch.cuda.stream(staging.stream):
            batch = Batch(*(source.to(self.device, non_blocking=True) for source in sources))
            done = torch.cuda.Event()
            done.record(staging.stream)
        # Wait here (on the worker, usually) for the copies: then the staging buffers are free for the next
        # batch, and the batch is complete whichever stream reads it.
        done.synchronize()
        return batch
