"""Replay buffer that stores single frames and stacks them at sample time.

DrQ-v2 stores every observation as a whole ``frame_stack x C x H x W`` stack, so each frame is kept
``frame_stack`` times. Storing each frame once and rebuilding the stack from neighbouring slots when
sampling cuts pixel memory to ``1 / frame_stack`` of that (1/3 at the default stack of 3), which is what
makes a 1e6-transition buffer fit in ordinary host memory.

Conventions follow ``dm_env`` / DrQ-v2: an episode is a sequence of stored steps ``0..T``; step 0 holds
the first frame only (written by :meth:`ReplayBuffer.add_first`); step ``j >= 1`` holds the action,
reward and environment discount that led to frame ``j`` (written by :meth:`ReplayBuffer.add`).

This module's :class:`ReplayBuffer` stores everything in host NumPy arrays. Two companions keep its sample
stream (same seed, same batches): ``rlplastic.replay_device.DeviceReplayBuffer`` stores the steps on a
torch device and assembles batches there, and ``rlplastic.replay_prefetch.PrefetchingSampler`` assembles
a host buffer's next batch in the background. Every index draw is made here, on the host, with the
buffer's NumPy generator (or the caller's, for side samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["Batch", "ReplayBuffer", "estimated_bytes"]

# Rejection rounds before falling back to enumerating every sampleable transition. With realistic
# episodes (hundreds of steps) almost every candidate is accepted on the first round; the fallback only
# matters for degenerate buffers (e.g. many episodes shorter than ``nstep``).
_MAX_REJECTION_ROUNDS = 8

_ALLOWED_FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))


class Batch(NamedTuple):
    """A minibatch of n-step transitions.

    :param obs: Stacked observation at ``t``, shape ``(B, frame_stack * frame_shape[0], *frame_shape[1:])``;
        uint8 for pixel frames, float32 for state frames.
    :param action: Action taken at ``t`` (stored with step ``t + 1``), float32, ``(B, *action_shape)``.
    :param reward: n-step discounted return, float32, ``(B, 1)``.
    :param discount: Bootstrap discount ``prod_i gamma * d_{t+1+i}``, float32, ``(B, 1)``.
    :param next_obs: Stacked observation at ``t + nstep``, same shape and dtype as ``obs``.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_frame_dtype(frame_dtype: Any) -> np.dtype:
    try:
        dtype = np.dtype(frame_dtype)
    except TypeError:
        dtype = None
    if dtype not in _ALLOWED_FRAME_DTYPES:
        raise ValueError(f"frame_dtype must be np.uint8 (pixels) or np.float32 (states), got {frame_dtype!r}")
    return dtype


def _slot_bytes(frame_shape: tuple[int, ...], action_shape: tuple[int, ...], frame_dtype: np.dtype) -> int:
    """Storage bytes of one slot: frame, float32 action, float32 reward and discount, int64 episode start."""
    return math.prod(frame_shape) * frame_dtype.itemsize + math.prod(action_shape) * 4 + 4 + 4 + 8


def estimated_bytes(
    capacity: int, frame_shape: tuple[int, ...], action_shape: tuple[int, ...], frame_dtype: type | np.dtype = np.uint8
) -> int:
    """Bytes a replay of ``capacity`` slots allocates for storage, without allocating it.

    Equals :attr:`ReplayBuffer.nbytes` of a buffer built with the same arguments (and
    ``DeviceReplayBuffer.nbytes``, of which all but the 8-byte episode start per slot live on the storage
    device). E.g. 1e6 slots of 3x84x84 uint8 frames with 6-d actions: 21.2 GB.

    :param capacity: Number of slots (stored steps), > 0.
    :param frame_shape: Shape of one frame, e.g. ``(3, 84, 84)``.
    :param action_shape: Shape of one action, e.g. ``(6,)``.
    :param frame_dtype: ``np.uint8`` (pixels) or ``np.float32`` (states).
    :return: Total storage bytes.
    """
    if not _is_int(capacity) or capacity <= 0:
        raise ValueError(f"capacity must be an int > 0, got {capacity!r}")
    frame_shape = _check_shape("frame_shape", frame_shape, allow_empty=False)
    action_shape = _check_shape("action_shape", action_shape, allow_empty=True)
    return int(capacity) * _slot_bytes(frame_shape, action_shape, _check_frame_dtype(frame_dtype))


def _check_shape(name: str, shape: Any, allow_empty: bool) -> tuple[int, ...]:
    try:
        out = tuple(shape)
    except TypeError:
        out = None
    if out is None or not all(_is_int(d) and d > 0 for d in out) or (not out and not allow_empty):
        what = "a tuple of positive ints" + ("" if allow_empty else " with at least one entry")
        raise ValueError(f"{name} must be {what}, got {shape!r}")
    return tuple(int(d) for d in out)


class ReplayBuffer:
    """FIFO ring buffer of single frames with n-step returns and frame stacking at sample time.

    Every stored step occupies one slot (its frame plus the action, reward and discount that led to it),
    so ``capacity`` counts frames, not stacks. A transition at step ``t`` of an episode is sampleable when
    step ``t + nstep`` of the same episode has been written and every frame its two stacks need is still
    stored. Stack indices are clamped to the episode's first frame, so a stack never mixes episodes and
    the first stacks repeat frame 0, exactly as the environment's frame stack does after a reset.
    Episodes are never crossed: there is no n-step sum over an episode end.

    Sampling is uniform over the sampleable transitions, drawn from the buffer's own
    ``np.random.Generator``; its state is part of :meth:`state_dict`, so a restored buffer yields the same
    future batches.

    :param frame_shape: Shape of one frame, e.g. ``(3, 84, 84)`` for RGB pixels or ``(D,)`` for states.
        Stacks are concatenated along the first axis.
    :param action_shape: Shape of one action, e.g. ``(6,)``.
    :param capacity: Number of stored steps (frames) kept before the oldest is overwritten;
        must exceed ``nstep`` so that at least one transition can fit.
    :param frame_stack: Frames per observation (1 disables stacking).
    :param nstep: Steps summed into the return (1 gives one-step TD transitions).
    :param discount: Agent discount ``gamma`` in ``[0, 1]`` used in the n-step sum.
    :param frame_dtype: ``np.uint8`` for pixels or ``np.float32`` for state observations.
    :param seed: Seed of the sampling generator.
    """

    def __init__(
        self,
        frame_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        capacity: int,
        frame_stack: int = 3,
        nstep: int = 3,
        discount: float = 0.99,
        frame_dtype: type | np.dtype = np.uint8,
        seed: int = 0,
    ) -> None:
        self.frame_shape = _check_shape("frame_shape", frame_shape, allow_empty=False)
        self.action_shape = _check_shape("action_shape", action_shape, allow_empty=True)
        if not _is_int(nstep) or nstep < 1:
            raise ValueError(f"nstep must be an int >= 1, got {nstep!r}")
        if not _is_int(frame_stack) or frame_stack < 1:
            raise ValueError(f"frame_stack must be an int >= 1, got {frame_stack!r}")
        if not _is_int(capacity) or capacity <= nstep:
            raise ValueError(f"capacity must be an int > nstep ({nstep}), got {capacity!r}")
        if (
            isinstance(discount, bool)
            or not isinstance(discount, (int, float, np.floating))
            or not 0.0 <= discount <= 1.0
        ):
            raise ValueError(f"discount must be a float in [0, 1], got {discount!r}")
        dtype = _check_frame_dtype(frame_dtype)
        if not _is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")

        self.capacity = int(capacity)
        self.frame_stack = int(frame_stack)
        self.nstep = int(nstep)
        self.discount = float(discount)
        self.frame_dtype = dtype

        # Global step index of the episode start of each slot: two steps belong to the same episode iff
        # their starts agree, and the start is where stack indices are clamped. Always a host array: the
        # sampleable set, and so every index draw, is decided on the host in every implementation.
        self._episode_start = np.zeros(self.capacity, dtype=np.int64)
        self._allocate()
        self._num_written = 0  # global write counter: steps ever written; slot of step g is g % capacity
        self._current_start = -1  # global start of the running episode, -1 when none is running
        self._rng = np.random.default_rng(seed)
        self._guard: Callable[[], None] | None = None

    @property
    def storage_device(self) -> torch.device:
        """Where frames, actions, rewards and discounts are stored (the host for this class)."""
        return torch.device("cpu")

    def _allocate(self) -> None:
        """Allocate the per-slot storage of frames, actions, rewards and discounts."""
        self._frames = np.zeros((self.capacity, *self.frame_shape), dtype=self.frame_dtype)
        self._actions = np.zeros((self.capacity, *self.action_shape), dtype=np.float32)
        self._rewards = np.zeros(self.capacity, dtype=np.float32)
        self._discounts = np.ones(self.capacity, dtype=np.float32)

    def attach_guard(self, guard: Callable[[], None] | None) -> None:
        """Install (or, with ``None``, remove) a callable run before every state change or main-stream read.

        It runs at the start of :meth:`add_first`, :meth:`add`, :meth:`sample` without ``rng``,
        :meth:`state_dict` and :meth:`load_state_dict`: whatever touches the stored steps or the buffer's own
        generator. :class:`rlplastic.replay_prefetch.PrefetchingSampler` uses it to finish its background
        work and rewind the generator before any of these happen. Side samples (``sample(rng=...)``) and
        read-only properties do not run it. One guard at a time.

        :param guard: The callable, or ``None`` to remove the current one.
        """
        if guard is not None and self._guard is not None:
            raise ValueError("this replay buffer already has a guard (one PrefetchingSampler per buffer)")
        self._guard = guard

    def _run_guard(self) -> None:
        if self._guard is not None:
            self._guard()

    # ------------------------------------------------------------------ writing

    def add_first(self, frame: np.ndarray) -> None:
        """Start a new episode with its first frame (the observation returned by ``reset``).

        A running episode that never received ``last=True`` (e.g. abandoned on resume) is closed as it is;
        its transitions stay sampleable.

        :param frame: First frame, shape ``frame_shape`` and dtype ``frame_dtype``.
        """
        self._check_frame(frame)
        self._run_guard()
        self._current_start = self._num_written
        self._write(frame, None, 0.0, 1.0)

    def add(self, action: np.ndarray, reward: float, discount: float, frame: np.ndarray, last: bool) -> None:
        """Append one agent step to the running episode.

        :param action: Action taken, shape ``action_shape`` (stored as float32).
        :param reward: Reward received for the action (summed over action repeats).
        :param discount: Environment discount: 1.0, or 0.0 when the episode terminated.
        :param frame: Frame observed after the action, shape ``frame_shape`` and dtype ``frame_dtype``.
        :param last: Whether the episode ended here (terminated or truncated); the next step must then be
            written with :meth:`add_first`.
        """
        if self._current_start < 0:
            raise ValueError("add() called with no running episode: call add_first(frame) after reset first")
        action_arr = np.asarray(action, dtype=np.float32)
        if action_arr.shape != self.action_shape:
            raise ValueError(f"action shape must be {self.action_shape}, got {action_arr.shape}")
        self._check_frame(frame)
        self._run_guard()
        self._write(frame, action_arr, reward, discount)
        if last:
            self._current_start = -1

    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.shape != self.frame_shape or frame.dtype != self.frame_dtype:
            got = (
                f"{type(frame).__name__} with shape {frame.shape} and dtype {frame.dtype}"
                if isinstance(frame, np.ndarray)
                else type(frame).__name__
            )
            raise ValueError(
                f"frame must be an np.ndarray with shape {self.frame_shape} and dtype {self.frame_dtype}, got {got}"
            )

    def _write(self, frame: np.ndarray, action: np.ndarray | None, reward: float, discount: float) -> None:
        slot = self._num_written % self.capacity
        self._frames[slot] = frame
        if action is None:
            self._actions[slot] = 0.0
        else:
            self._actions[slot] = action
        self._rewards[slot] = reward
        self._discounts[slot] = discount
        self._episode_start[slot] = self._current_start
        self._num_written += 1

    # ------------------------------------------------------------------ sampling

    def __len__(self) -> int:
        """Number of stored steps (frames)."""
        return min(self._num_written, self.capacity)

    def _candidate_range(self) -> tuple[int, int]:
        """Inclusive global range of transition steps whose ``t + nstep`` has been written and stored."""
        low = max(0, self._num_written - self.capacity)
        high = self._num_written - 1 - self.nstep
        return low, high

    def _is_sampleable(self, t: np.ndarray) -> np.ndarray:
        """Vectorised validity of global transition indices ``t`` taken from the candidate range."""
        start = self._episode_start[t % self.capacity]
        same_episode = self._episode_start[(t + self.nstep) % self.capacity] == start
        # The oldest frame the obs stack reads (clamped at the episode start) must not be evicted.
        oldest_needed = np.maximum(start, t - (self.frame_stack - 1))
        return same_episode & (oldest_needed >= self._num_written - self.capacity)

    @property
    def num_transitions(self) -> int:
        """Number of transitions that :meth:`sample` can currently return (O(capacity) to compute)."""
        low, high = self._candidate_range()
        if high < low:
            return 0
        return int(np.count_nonzero(self._is_sampleable(np.arange(low, high + 1, dtype=np.int64))))

    @property
    def nbytes(self) -> int:
        """Bytes allocated for storage (all slots, whether filled or not)."""
        return int(sum(a.nbytes for a in self._storage().values()))

    @property
    def bytes_per_transition(self) -> float:
        """Storage bytes per slot, i.e. per stored transition once the buffer is full."""
        return self.nbytes / self.capacity

    def _draw_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        low, high = self._candidate_range()
        if high < low:
            raise ValueError(
                f"no sampleable transition: {self._num_written} steps written, a transition needs nstep + 1 = "
                f"{self.nstep + 1} steps of one episode"
            )
        # Rejection sampling keeps draws uniform over the sampleable set without maintaining it.
        out = np.empty(batch_size, dtype=np.int64)
        filled = 0
        for _ in range(_MAX_REJECTION_ROUNDS):
            candidates = rng.integers(low, high + 1, size=batch_size - filled, dtype=np.int64)
            accepted = candidates[self._is_sampleable(candidates)]
            out[filled : filled + accepted.size] = accepted
            filled += accepted.size
            if filled == batch_size:
                return out
        valid = np.arange(low, high + 1, dtype=np.int64)
        valid = valid[self._is_sampleable(valid)]
        if valid.size == 0:
            raise ValueError(
                "no sampleable transition: no stored episode has nstep + 1 = "
                f"{self.nstep + 1} consecutive steps with all needed frames still stored"
            )
        out[filled:] = valid[rng.integers(0, valid.size, size=batch_size - filled)]
        return out

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", rng: np.random.Generator | None = None
    ) -> Batch:
        """Sample a batch of n-step transitions uniformly from the sampleable ones.

        :param batch_size: Number of transitions (> 0); drawn with replacement.
        :param device: Device of the returned tensors.
        :param rng: Draw with this generator instead of the buffer's own, so that side samples (e.g. the
            plasticity monitor's probe batches) leave the training sample stream untouched.
        :return: A :class:`Batch`; observations keep the frame dtype (the agent converts pixels to float).
        """
        if not _is_int(batch_size) or batch_size <= 0:
            raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
        if rng is None:
            self._run_guard()
        return self._batch(self._draw_indices(int(batch_size), self._rng if rng is None else rng), device)

    def recent(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """The newest ``batch_size`` sampleable transitions, oldest first (all of them when fewer exist).

        Read-only and deterministic: no generator is drawn from, so the training sample stream is untouched.
        For measurements on the data the agent has trained on least (e.g. the plasticity monitor's
        collapse on recent data).

        :param batch_size: The most transitions to return (> 0).
        :param device: Device of the returned tensors.
        :raises ValueError: when no transition is sampleable yet.
        """
        if not _is_int(batch_size) or batch_size <= 0:
            raise ValueError(f"batch_size must be an int > 0, got {batch_size!r}")
        low, high = self._candidate_range()
        window, t = int(batch_size), np.empty(0, dtype=np.int64)
        while high >= low:  # widen the window back from the newest until it holds enough valid ones
            start = max(low, high - window + 1)
            t = np.arange(start, high + 1, dtype=np.int64)
            t = t[self._is_sampleable(t)]
            if t.size >= batch_size or start == low:
                break
            window *= 2
        if t.size == 0:
            raise ValueError(f"no sampleable transition: {self._num_written} steps written")
        return self._batch(t[-int(batch_size):], device)

    def _slot_indices(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Storage slots a batch of transitions ``t`` reads, computed on the host.

        :return: ``frame_idx`` of shape ``(2, B, frame_stack)``: the frames of the obs and next_obs stacks,
            oldest first, clamped to the episode start so stacks never reach into the previous episode;
            ``step_idx`` of shape ``(nstep, B)``: the steps ``t + 1 + i`` whose action (``i = 0``), rewards
            and discounts enter the transition.
        """
        cap = self.capacity
        start = self._episode_start[t % cap]
        # One gather for obs and next_obs: stack ends (2, B) -> frame indices (2, B, frame_stack).
        ends = np.stack([t, t + self.nstep])
        offsets = np.arange(1 - self.frame_stack, 1, dtype=np.int64)
        frame_idx = np.maximum(ends[:, :, None] + offsets, start[None, :, None]) % cap
        step_idx = (t[None, :] + 1 + np.arange(self.nstep, dtype=np.int64)[:, None]) % cap
        return frame_idx, step_idx

    def _assemble(
        self, t: np.ndarray, frames_out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gather transitions ``t`` into host arrays.

        :param t: Global transition indices from :meth:`_draw_indices`.
        :param frames_out: Optional ``(2, B, frame_stack, *frame_shape)`` array to gather the frames into
            (e.g. pinned staging memory); a new array otherwise.
        :return: ``frames`` ``(2, B, frame_stack, *frame_shape)`` (obs stacks, then next_obs stacks),
            ``action`` ``(B, *action_shape)``, ``reward`` ``(B,)`` and ``discount`` ``(B,)``.
        """
        frame_idx, step_idx = self._slot_indices(t)
        # n-step return in the same order of operations as DrQ-v2's loop, vectorised over the batch.
        reward = np.zeros(t.shape[0], dtype=np.float32)
        discount = np.ones(t.shape[0], dtype=np.float32)
        gamma = np.float32(self.discount)
        for i in range(self.nstep):
            reward += discount * self._rewards[step_idx[i]]
            discount *= self._discounts[step_idx[i]] * gamma
        action = self._actions[step_idx[0]]
        if frames_out is None:
            frames = np.take(self._frames, frame_idx, axis=0)
        else:  # indices are in range: "clip" only spares np.take its buffered copy into ``out``
            frames = np.take(self._frames, frame_idx, axis=0, out=frames_out, mode="clip")
        return frames, action, reward, discount

    def _stacked_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.frame_stack * self.frame_shape[0], *self.frame_shape[1:])

    def _batch(self, t: np.ndarray, device: torch.device | str) -> Batch:
        """The batch of transitions ``t`` on ``device``."""
        frames, action, reward, discount = self._assemble(t)
        stacked_shape = self._stacked_shape(t.shape[0])

        def to_device(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(device, non_blocking=True)

        return Batch(
            obs=to_device(frames[0].reshape(stacked_shape)),
            action=to_device(action),
            reward=to_device(reward[:, None]),
            discount=to_device(discount[:, None]),
            next_obs=to_device(frames[1].reshape(stacked_shape)),
        )

    # ------------------------------------------------------------------ checkpointing

    def _config(self) -> dict[str, Any]:
        return {
            "frame_shape": list(self.frame_shape),
            "action_shape": list(self.action_shape),
            "capacity": self.capacity,
            "frame_stack": self.frame_stack,
            "nstep": self.nstep,
            "discount": self.discount,
            "frame_dtype": self.frame_dtype.name,
        }

    def _layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-slot shape and dtype of each stored array, by its state_dict name (all implementations)."""
        f32 = np.dtype(np.float32)
        return {
            "frames": (self.frame_shape, self.frame_dtype),
            "actions": (self.action_shape, f32),
            "rewards": ((), f32),
            "discounts": ((), f32),
            "episode_start": ((), np.dtype(np.int64)),
        }

    def _storage(self) -> dict[str, np.ndarray]:
        """The per-slot arrays, by their state_dict names."""
        return {
            "frames": self._frames,
            "actions": self._actions,
            "rewards": self._rewards,
            "discounts": self._discounts,
            "episode_start": self._episode_start,
        }

    def _export(self, filled: int) -> dict[str, torch.Tensor]:
        """The first ``filled`` slots of every stored array as CPU tensors, by state_dict name."""
        return {name: torch.from_numpy(array[:filled]) for name, array in self._storage().items()}

    def _import(self, arrays: dict[str, np.ndarray], filled: int) -> None:
        """Write validated host arrays (by state_dict name) into the first ``filled`` slots."""
        for name, target in self._storage().items():
            target[:filled] = arrays[name]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: stored steps, counters and the sampling RNG state.

        Arrays are returned as CPU torch tensors (so ``torch.load(weights_only=True)`` accepts the saved
        file) that may **share memory** with the buffer, like ``nn.Module.state_dict``: save them before
        adding more steps. Only filled slots are included, so a partly filled buffer saves only what it
        holds. The content does not depend on the implementation: a state saved by a
        :class:`ReplayBuffer` loads into a ``DeviceReplayBuffer`` of the same configuration and back.

        :return: A dict of tensors and plain Python values.
        """
        self._run_guard()
        return {
            "config": self._config(),
            **self._export(len(self)),
            "num_written": self._num_written,
            "current_start": self._current_start,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` of a buffer with the same configuration.

        :param state: The dict from :meth:`state_dict` (tensors or numpy arrays).
        """
        self._run_guard()
        expected = self._config()
        if state.get("config") != expected:
            raise ValueError(f"replay state config {state.get('config')!r} does not match this buffer's {expected!r}")
        filled = min(int(state["num_written"]), self.capacity)
        arrays = {}
        for name, (slot_shape, dtype) in self._layout().items():
            value = state[name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if array.shape != (filled, *slot_shape) or array.dtype != dtype:
                raise ValueError(
                    f"replay state '{name}' has shape {array.shape} and dtype {array.dtype}, "
                    f"expected {(filled, *slot_shape)} and {dtype}"
                )
            arrays[name] = array
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        # Validation is complete: mutate only now so a bad state leaves the buffer untouched.
        self._import(arrays, filled)
        self._num_written = int(state["num_written"])
        self._current_start = int(state["current_start"])
        self._rng = rng
