"""Replay storage on a torch device, and the choice of where the replay lives (``replay_device``).

:class:`DeviceReplayBuffer` keeps frames, actions, rewards and discounts as torch tensors on a storage
device (a GPU in training; the CPU in the tests) and assembles batches there: one vectorised
``index_select`` per stack, no Python loop over the batch, no batch-sized host→device copy. What is
sampled is decided on the host exactly as in :class:`rlplastic.replay.ReplayBuffer`: the episode starts
stay in a host array and indices are drawn with the same NumPy generator calls, so the two classes give
the same batches for the same seed (bit for bit with CPU storage, the n-step sums being the same float32
operations in the same order), the ``rng=`` side stream included; only the slot indices (a few KB) go to
the device. Checkpoints hold the same content in both, and load into either.

:func:`resolve_replay_device` decides ``auto`` / ``cpu`` / ``cuda`` and says why, and :func:`make_replay`
builds the matching buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from rlplastic.replay import Batch, ReplayBuffer, estimated_bytes

__all__ = [
    "AUTO_DEVICE_SHARE",
    "DeviceReplayBuffer",
    "ReplayPlacement",
    "estimated_bytes",
    "make_replay",
    "resolve_replay_device",
]

# ``replay_device=auto`` puts the replay on the GPU only if it takes at most this share of the memory that
# is free when the replay is built: the rest is left to the networks, their activations and the allocator.
AUTO_DEVICE_SHARE = 0.5

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}


class DeviceReplayBuffer(ReplayBuffer):
    """:class:`~rlplastic.replay.ReplayBuffer` whose storage and batch assembly live on ``storage_device``.

    Same constructor arguments, methods, semantics and sample stream as :class:`ReplayBuffer` (see there),
    plus ``storage_device``. Per slot it stores the frame in one tensor and the action, reward and discount
    packed in one float32 row (so :meth:`add` is two small host→device copies); the episode starts stay on
    the host, where every index draw is decided. With CUDA storage, :meth:`add` copies through pinned memory
    without waiting for the GPU, and :meth:`sample` ships its slot indices the same way.

    :param storage_device: Device of the stored steps, e.g. ``"cuda"`` or ``"cpu"``.
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
        storage_device: torch.device | str = "cpu",
    ) -> None:
        self._device = torch.device(storage_device)
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self._pinned = self._device.type == "cuda"
        super().__init__(frame_shape, action_shape, capacity, frame_stack, nstep, discount, frame_dtype, seed)

    @property
    def storage_device(self) -> torch.device:
        """Where frames, actions, rewards and discounts are stored."""
        return self._device

    def _allocate(self) -> None:
        self._action_size = math.prod(self.action_shape)
        dtype = _TORCH_DTYPES[self.frame_dtype]
        self._frames = torch.zeros((self.capacity, *self.frame_shape), dtype=dtype, device=self._device)
        # Row layout: action (action_size floats), reward, discount; discounts start at 1 like the host's.
        self._steps = torch.zeros((self.capacity, self._action_size + 2), dtype=torch.float32, device=self._device)
        self._steps[:, -1] = 1.0
        self._gamma = torch.tensor(np.float32(self.discount), dtype=torch.float32, device=self._device)

    def _host(self, array: np.ndarray) -> torch.Tensor:
        """A CPU tensor of ``array`` to copy to the storage device (pinned, i.e. copied, for CUDA)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        # The pinned block comes from torch's caching host allocator, which keeps it until the asynchronous
        # copy reading it has completed; the caller's array may be reused at once.
        return tensor.pin_memory() if self._pinned else tensor

    def _write(self, frame: np.ndarray, action: np.ndarray | None, reward: float, discount: float) -> None:
        slot = self._num_written % self.capacity
        row = np.zeros(self._action_size + 2, dtype=np.float32)
        if action is not None:
            row[: self._action_size] = action.reshape(-1)
        row[-2] = reward  # the same float32 casts as the host buffer's array assignments
        row[-1] = discount
        self._frames[slot].copy_(self._host(frame), non_blocking=self._pinned)
        self._steps[slot].copy_(self._host(row), non_blocking=self._pinned)
        self._episode_start[slot] = self._current_start
        self._num_written += 1

    @property
    def nbytes(self) -> int:
        """Bytes allocated for storage: on the storage device, plus 8 bytes per slot on the host."""
        return int(self._frames.nbytes + self._steps.nbytes + self._episode_start.nbytes)

    def _batch(self, t: np.ndarray, device: torch.device | str) -> Batch:
        batch_size = t.shape[0]
        frame_idx, step_idx = self._slot_indices(t)
        # One transfer of every slot index the batch reads: obs stacks, next_obs stacks, steps.
        idx = self._host(np.concatenate([frame_idx.reshape(-1), step_idx.reshape(-1)]))
        idx = idx.to(self._device, non_blocking=self._pinned)
        per_stack = batch_size * self.frame_stack
        stacked_shape = self._stacked_shape(batch_size)
        obs = self._frames.index_select(0, idx[:per_stack]).view(stacked_shape)
        next_obs = self._frames.index_select(0, idx[per_stack : 2 * per_stack]).view(stacked_shape)
        steps = self._steps.index_select(0, idx[2 * per_stack :]).view(self.nstep, batch_size, -1)
        action = steps[0, :, : self._action_size].reshape(batch_size, *self.action_shape).contiguous()
        # n-step return: the host buffer's float32 operations in the same order (no fused multiply-add).
        reward = torch.zeros(batch_size, dtype=torch.float32, device=self._device)
        discount = torch.ones(batch_size, dtype=torch.float32, device=self._device)
        for i in range(self.nstep):
            reward = reward + discount * steps[i, :, -2]
            discount = discount * (steps[i, :, -1] * self._gamma)
        return Batch(
            obs=obs.to(device),
            action=action.to(device),
            reward=reward[:, None].to(device),
            discount=discount[:, None].to(device),
            next_obs=next_obs.to(device),
        )

    # ------------------------------------------------------------------ checkpointing

    def _export(self, filled: int) -> dict[str, torch.Tensor]:
        frames = self._frames[:filled]
        # On the CPU, re-wrap the filled slots so that torch.save writes only them, not the whole storage.
        frames = torch.from_numpy(frames.numpy()) if frames.device.type == "cpu" else frames.cpu()
        steps = self._steps[:filled].cpu()
        return {
            "frames": frames,
            "actions": steps[:, : self._action_size].reshape(filled, *self.action_shape).clone(),
            "rewards": steps[:, -2].clone(),
            "discounts": steps[:, -1].clone(),
            "episode_start": torch.from_numpy(self._episode_start[:filled]),
        }

    def _import(self, arrays: dict[str, np.ndarray], filled: int) -> None:
        steps = np.empty((filled, self._action_size + 2), dtype=np.float32)
        steps[:, : self._action_size] = arrays["actions"].reshape(filled, self._action_size)
        steps[:, -2] = arrays["rewards"]
        steps[:, -1] = arrays["discounts"]
        self._frames[:filled].copy_(torch.from_numpy(np.ascontiguousarray(arrays["frames"])))
        self._steps[:filled].copy_(torch.from_numpy(steps))
        self._episode_start[:filled] = arrays["episode_start"]


class ReplayPlacement(NamedTuple):
    """Where the replay is stored, and why (a line for the trainer to print)."""

    device: torch.device
    reason: str


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def resolve_replay_device(
    setting: str,
    device: torch.device | str,
    nbytes: int,
    share: float = AUTO_DEVICE_SHARE,
    mem_get_info: Callable[[torch.device], tuple[int, int]] | None = None,
) -> ReplayPlacement:
    """Decide the replay's storage device from ``replay_device`` and the training device.

    * ``cpu``: host storage.
    * ``cuda``: storage on the training device, which must be a CUDA device with at least ``nbytes`` free.
    * ``auto``: the training device if it is a CUDA device and ``nbytes`` is at most ``share`` of its free
      memory, the host otherwise.

    :param setting: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    :param device: The training device (where batches are consumed).
    :param nbytes: Storage the replay needs (:func:`rlplastic.replay.estimated_bytes`).
    :param share: Largest share of the free device memory that ``auto`` gives the replay, in ``(0, 1]``.
    :param mem_get_info: ``(free, total)`` bytes of a device; defaults to ``torch.cuda.mem_get_info``.
    :return: The storage device and a human-readable reason, e.g.
        ``"replay on cuda:0: 21.2 GB, 50% of the 80.0 GB free (of 85.0 GB) is allowed"``.
    """
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"replay_device must be auto, cpu or cuda, got {setting!r}")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    device = torch.device(device)
    size = _gb(nbytes)
    if setting == "cpu":
        return ReplayPlacement(torch.device("cpu"), f"replay on cpu: {size}, replay_device=cpu")
    if device.type != "cuda":
        if setting == "cuda":
            raise ValueError(f"replay_device=cuda needs a CUDA training device, but the agent trains on {device}")
        return ReplayPlacement(torch.device("cpu"), f"replay on cpu: {size}, the agent trains on {device}")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    free, total = (torch.cuda.mem_get_info if mem_get_info is None else mem_get_info)(device)
    memory = f"{_gb(free)} free (of {_gb(total)}) on {device}"
    if setting == "cuda":
        if nbytes > free:
            raise ValueError(
                f"replay_device=cuda: the replay needs {size} but {device} has only {_gb(free)} free; "
                "use replay_device=cpu or a smaller replay_buffer_size"
            )
        return ReplayPlacement(device, f"replay on {device}: {size} of the {memory}, replay_device=cuda")
    if nbytes <= share * free:
        return ReplayPlacement(device, f"replay on {device}: {size}, within {share:.0%} of the {memory}")
    return ReplayPlacement(torch.device("cpu"), f"replay on cpu: {size} exceeds {share:.0%} of the {memory}")


def make_replay(
    frame_shape: tuple[int, ...],
    action_shape: tuple[int, ...],
    capacity: int,
    frame_stack: int = 3,
    nstep: int = 3,
    discount: float = 0.99,
    frame_dtype: type | np.dtype = np.uint8,
    seed: int = 0,
    storage_device: torch.device | str = "cpu",
) -> ReplayBuffer:
    """Build the replay for a storage device: a host :class:`ReplayBuffer` for ``cpu``, else a
    :class:`DeviceReplayBuffer` on that device. Same arguments as :class:`ReplayBuffer`, plus
    ``storage_device`` (e.g. ``resolve_replay_device(...).device``).
    """
    kwargs: dict[str, Any] = {
        "frame_shape": frame_shape, "action_shape": action_shape, "capacity": capacity,
        "frame_stack": frame_stack, "nstep": nstep, "discount": discount, "frame_dtype": frame_dtype, "seed": seed,
    }  # fmt: skip
    if torch.device(storage_device).type == "cpu":
        return ReplayBuffer(**kwargs)
    return DeviceReplayBuffer(**kwargs, storage_device=storage_device)
