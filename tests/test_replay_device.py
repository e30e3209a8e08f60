"""DeviceReplayBuffer against ReplayBuffer (same batches, same checkpoints), sizing and device choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from rlplastic.replay import Batch, ReplayBuffer, estimated_bytes
from rlplastic.replay_device import DeviceReplayBuffer, ReplayPlacement, make_replay, resolve_replay_device
from tests.factories import checkpoint_round_trip

STORAGE = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
STATE_NAMES = ("frames", "actions", "rewards", "discounts", "episode_start")


def fill(buffer: ReplayBuffer, steps: int, seed: int = 0) -> None:
    """Random episodes of 1..20 steps (some terminal), random frames, actions and rewards."""
    rng = np.random.default_rng(seed)
    uint8 = buffer.frame_dtype == np.uint8

    def frame() -> np.ndarray:
        if uint8:
            return rng.integers(0, 256, buffer.frame_shape, dtype=np.uint8)
        return rng.normal(size=buffer.frame_shape).astype(np.float32)

    written = 0
    while written < steps:
        buffer.add_first(frame())
        length = int(rng.integers(1, 21))
        for j in range(length):
            discount = 0.0 if j == length - 1 and rng.random() < 0.5 else 1.0
            action = rng.uniform(-1, 1, buffer.action_shape).astype(np.float32)
            buffer.add(action, float(rng.normal()), discount, frame(), last=j == length - 1)
        written += length + 1


def assert_same(a: Batch, b: Batch) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and x.is_contiguous() == y.is_contiguous()
        assert torch.equal(x.cpu(), y.cpu())


@pytest.mark.parametrize(
    ("frame_shape", "action_shape", "frame_dtype", "frame_stack", "nstep", "discount"),
    [
        ((3, 5, 5), (2,), np.uint8, 3, 3, 0.99),
        ((1, 3, 3), (2, 3), np.uint8, 4, 1, 0.9),
        ((7,), (), np.float32, 1, 5, 0.97),
        ((4,), (1,), np.float32, 2, 2, 1.0),
    ],
)
def test_same_batches_as_the_host_buffer_bit_for_bit(frame_shape, action_shape, frame_dtype, frame_stack, nstep,
                                                     discount) -> None:  # fmt: skip
    """Main and rng= side streams, while filling, after wrapping, in several configurations."""
    kwargs = dict(frame_shape=frame_shape, action_shape=action_shape, capacity=80, frame_stack=frame_stack,
                  nstep=nstep, discount=discount, frame_dtype=frame_dtype, seed=7)  # fmt: skip
    host, device = ReplayBuffer(**kwargs), DeviceReplayBuffer(**kwargs, storage_device="cpu")
    side_host, side_device = np.random.default_rng(3), np.random.default_rng(3)
    for round_ in range(8):  # 8 x 60 steps into 80 slots: partly filled first, then wrapped
        fill(host, 60, seed=round_)
        fill(device, 60, seed=round_)
        assert len(host) == len(device) and host.num_transitions == device.num_transitions
        assert_same(host.sample(33), device.sample(33))
        assert_same(host.sample(5, rng=side_host), device.sample(5, rng=side_device))
        assert_same(host.sample(64), device.sample(64))
    assert host._rng.bit_generator.state == device._rng.bit_generator.state


@pytest.mark.parametrize("storage", STORAGE)
@pytest.mark.parametrize("steps", [50, 300])  # partly filled, and wrapped
def test_checkpoints_load_across_implementations(storage: str, steps: int) -> None:
    kwargs = dict(frame_shape=(3, 4, 4), action_shape=(2,), capacity=100, seed=1)
    host, device = ReplayBuffer(**kwargs), DeviceReplayBuffer(**kwargs, storage_device=storage)
    for buffer in (host, device):
        fill(buffer, steps)
        buffer.add_first(np.full((3, 4, 4), 7, np.uint8))  # a running episode must continue after loading
        buffer.sample(8)

    host_state, device_state = host.state_dict(), device.state_dict()
    assert host_state.keys() == device_state.keys()
    assert host_state["config"] == device_state["config"]
    for name in STATE_NAMES:
        a, b = host_state[name], device_state[name]
        assert b.device.type == "cpu" and a.dtype == b.dtype and torch.equal(a, b)
        # Only the filled slots are saved: each tensor's storage is no larger than the tensor itself.
        assert b.untyped_storage().nbytes() == b.nbytes
    sizes = []
    for state in (host_state, device_state):
        file = io.BytesIO()
        torch.save(state, file)
        sizes.append(len(file.getvalue()))
    assert sizes[1] <= sizes[0] + 2048  # serialisation overhead only (per-tensor headers)

    host_from_device, device_from_host = ReplayBuffer(**kwargs), DeviceReplayBuffer(**kwargs, storage_device=storage)
    host_from_device.load_state_dict(checkpoint_round_trip(device_state))
    device_from_host.load_state_dict(checkpoint_round_trip(host_state))
    buffers = (host, device, host_from_device, device_from_host)
    for round_ in range(3):
        if round_ == 1:
            for buffer in buffers:
                buffer.add(np.ones(2, np.float32), 0.5, 1.0, np.full((3, 4, 4), 8, np.uint8), last=False)
        reference = host.sample(32)
        for buffer in buffers[1:]:
            assert_same(reference, buffer.sample(32))


@pytest.mark.parametrize(
    ("frame_shape", "action_shape", "frame_dtype"),
    [((3, 84, 84), (6,), np.uint8), ((9,), (), np.float32), ((1, 2, 2), (2, 2), np.uint8)],
)
def test_estimated_bytes_is_what_both_implementations_allocate(frame_shape, action_shape, frame_dtype) -> None:
    expected = estimated_bytes(50, frame_shape, action_shape, frame_dtype)
    assert ReplayBuffer(frame_shape, action_shape, capacity=50, frame_dtype=frame_dtype).nbytes == expected
    assert DeviceReplayBuffer(frame_shape, action_shape, capacity=50, frame_dtype=frame_dtype).nbytes == expected


def test_estimated_bytes_of_drqv2_pixels() -> None:
    # 1e6 slots of 3x84x84 uint8 with 6-d actions: frame 21168 + action 24 + reward 4 + discount 4 + start 8.
    assert estimated_bytes(1_000_000, (3, 84, 84), (6,)) == 1_000_000 * 21_208
    with pytest.raises(ValueError, match="capacity"):
        estimated_bytes(0, (3, 84, 84), (6,))
    with pytest.raises(ValueError, match="frame_dtype"):
        estimated_bytes(10, (3, 84, 84), (6,), np.float64)


def fake_memory(free: int, total: int = 85 * 10**9):
    calls = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        calls.append(device)
        return free, total

    return mem_get_info, calls


def test_resolve_replay_device() -> None:
    gb = 10**9
    cuda0 = torch.device("cuda", 0)
    info, calls = fake_memory(80 * gb)
    assert resolve_replay_device("auto", cuda0, int(21.2 * gb), mem_get_info=info) == ReplayPlacement(
        cuda0, "replay on cuda:0: 21.2 GB, within 50% of the 80.0 GB free (of 85.0 GB) on cuda:0"
    )
    assert calls == [cuda0]
    placement = resolve_replay_device("auto", cuda0, int(63.5 * gb), mem_get_info=info)
    assert placement == ReplayPlacement(
        torch.device("cpu"), "replay on cpu: 63.5 GB exceeds 50% of the 80.0 GB free (of 85.0 GB) on cuda:0"
    )
    assert resolve_replay_device("auto", cuda0, 63 * gb, share=0.8, mem_get_info=info).device == cuda0
    assert resolve_replay_device("cuda", cuda0, 63 * gb, mem_get_info=info) == ReplayPlacement(
        cuda0, "replay on cuda:0: 63.0 GB of the 80.0 GB free (of 85.0 GB) on cuda:0, replay_device=cuda"
    )
    with pytest.raises(ValueError, match="needs 90.0 GB but cuda:0 has only 80.0 GB free"):
        resolve_replay_device("cuda", cuda0, 90 * gb, mem_get_info=info)
    assert resolve_replay_device("cpu", cuda0, gb, mem_get_info=info) == ReplayPlacement(
        torch.device("cpu"), "replay on cpu: 1.0 GB, replay_device=cpu"
    )
    assert resolve_replay_device("auto", "cpu", gb) == ReplayPlacement(
        torch.device("cpu"), "replay on cpu: 1.0 GB, the agent trains on cpu"
    )
    with pytest.raises(ValueError, match="needs a CUDA training device"):
        resolve_replay_device("cuda", "cpu", gb)
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_replay_device("gpu", cuda0, gb, mem_get_info=info)
    with pytest.raises(ValueError, match="share"):
        resolve_replay_device("auto", cuda0, gb, share=0.0, mem_get_info=info)


@pytest.mark.parametrize("storage", STORAGE)
def test_make_replay_builds_the_implementation_of_the_storage_device(storage: str) -> None:
    host = make_replay((3, 4, 4), (2,), capacity=10, storage_device="cpu")
    assert type(host) is ReplayBuffer and host.storage_device == torch.device("cpu")
    if storage == "cuda":
        device = make_replay((3, 4, 4), (2,), capacity=10, storage_device="cuda")
        assert isinstance(device, DeviceReplayBuffer) and device.storage_device.type == "cuda"
        assert device._frames.device.type == "cuda"


@pytest.mark.parametrize("cls", [ReplayBuffer, DeviceReplayBuffer])
def test_guard_runs_before_writes_main_samples_and_checkpoints_only(cls) -> None:
    buffer = cls((3, 4, 4), (2,), capacity=50)
    calls = []
    buffer.attach_guard(lambda: calls.append(len(buffer)))
    fill(buffer, 10)
    assert calls == list(range(len(calls))) and len(calls) == len(buffer)  # before each write, not after
    calls.clear()
    buffer.sample(4, rng=np.random.default_rng(0))
    _ = buffer.num_transitions, len(buffer), buffer.nbytes
    assert calls == []  # side samples and reads only
    buffer.sample(4)
    state = buffer.state_dict()
    buffer.load_state_dict(state)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="already has a guard"):
        buffer.attach_guard(lambda: None)
    buffer.attach_guard(None)
    buffer.sample(4)
    assert len(calls) == 3
