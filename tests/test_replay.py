"""Tests for rlplastic.replay: n-step returns, frame stacking, eviction, seeding, checkpointing, memory.

Every test runs against each implementation: the host ``ReplayBuffer`` and ``DeviceReplayBuffer`` with CPU
storage (and CUDA storage where a GPU is present).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from rlplastic.replay import Batch, ReplayBuffer
from rlplastic.replay_device import DeviceReplayBuffer
from tests.factories import checkpoint_round_trip

# Test frames encode (episode id, step) in their pixels so every sampled stack can be decoded and
# checked against an independent, loop-based reference: channel 0 = episode // 256,
# channel 1 = episode % 256, channel 2 = step within the episode.
FRAME_SHAPE = (3, 2, 2)
ACTION_SHAPE = (2,)


def encode(episode: int, step: int) -> np.ndarray:
    assert step < 256
    frame = np.empty(FRAME_SHAPE, dtype=np.uint8)
    frame[0], frame[1], frame[2] = episode // 256, episode % 256, step
    return frame


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3, 2, 2) frames -> (episode, step) arrays of shape (...)."""
    frames = frames.astype(np.int64)
    return frames[..., 0, 0, 0] * 256 + frames[..., 1, 0, 0], frames[..., 2, 0, 0]


@dataclass
class Episode:
    id: int
    start: int  # global index of its first stored step
    rewards: list[float] = field(default_factory=lambda: [0.0])  # index j: reward stored with step j
    discounts: list[float] = field(default_factory=lambda: [1.0])

    @property
    def last_step(self) -> int:
        return len(self.rewards) - 1


class Recorder:
    """Writes episodes into a buffer and keeps a plain-Python record of them for reference checks."""

    def __init__(self, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        self.buffer, self.rng = buffer, rng
        self.episodes: list[Episode] = []
        self.written = 0

    def episode(self, steps: int, terminal: bool = False, rewards: list[float] | None = None) -> Episode:
        ep = Episode(id=len(self.episodes), start=self.written)
        self.episodes.append(ep)
        self.buffer.add_first(encode(ep.id, 0))
        self.written += 1
        for j in range(1, steps + 1):
            reward = float(self.rng.normal()) if rewards is None else rewards[j - 1]
            discount = 0.0 if terminal and j == steps else 1.0
            action = np.array([ep.id, j], dtype=np.float32)
            self.buffer.add(action, reward, discount, encode(ep.id, j), last=j == steps)
            ep.rewards.append(reward)
            ep.discounts.append(discount)
            self.written += 1
        return ep

    def sampleable(self) -> set[tuple[int, int]]:
        """Brute-force set of (episode, t) the buffer should be able to sample."""
        b = self.buffer
        oldest = self.written - b.capacity
        out = set()
        for ep in self.episodes:
            for t in range(0, ep.last_step - b.nstep + 1):
                if ep.start + max(0, t - b.frame_stack + 1) >= oldest:
                    out.add((ep.id, t))
        return out

    def check(self, batch: Batch) -> list[tuple[int, int]]:
        """Check every transition of a batch against the record; return the (episode, t) keys seen."""
        b = self.buffer
        n, fs = b.nstep, b.frame_stack
        bsz = batch.action.shape[0]
        obs = batch.obs.numpy().reshape(bsz, fs, *FRAME_SHAPE)
        next_obs = batch.next_obs.numpy().reshape(bsz, fs, *FRAME_SHAPE)
        obs_ep, obs_step = decode(obs)
        next_ep, next_step = decode(next_obs)
        assert batch.reward.shape == (bsz, 1) and batch.discount.shape == (bsz, 1)
        assert batch.reward.dtype == batch.discount.dtype == batch.action.dtype == torch.float32
        keys = []
        for k in range(bsz):
            ep_id, t = int(obs_ep[k, -1]), int(obs_step[k, -1])
            ep = self.episodes[ep_id]
            assert (obs_ep[k] == ep_id).all() and (next_ep[k] == ep_id).all(), "stack mixes episodes"
            assert list(obs_step[k]) == [max(0, t - i) for i in reversed(range(fs))]
            assert list(next_step[k]) == [max(0, t + n - i) for i in reversed(range(fs))]
            assert t + n <= ep.last_step, "transition crosses the episode end"
            assert ep.start + max(0, t - fs + 1) >= self.written - b.capacity, "needed frame was evicted"
            assert batch.action[k].tolist() == [ep_id, t + 1]
            # DrQ-v2's loop, in float32 like the reference.
            reward, discount = np.float32(0.0), np.float32(1.0)
            for i in range(n):
                reward += discount * np.float32(ep.rewards[t + 1 + i])
                discount *= np.float32(ep.discounts[t + 1 + i]) * np.float32(b.discount)
            assert batch.reward[k, 0].item() == pytest.approx(float(reward), rel=1e-6, abs=1e-6)
            assert batch.discount[k, 0].item() == pytest.approx(float(discount), rel=1e-6, abs=1e-7)
            keys.append((ep_id, t))
        return keys


IMPLEMENTATIONS: dict[str, Callable[..., ReplayBuffer]] = {
    "host": ReplayBuffer,
    "device-cpu": functools.partial(DeviceReplayBuffer, storage_device="cpu"),
    "device-cuda": functools.partial(DeviceReplayBuffer, storage_device="cuda"),
}
no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(params=["host", "device-cpu", pytest.param("device-cuda", marks=no_cuda)])
def replay_cls(request: pytest.FixtureRequest) -> Callable[..., ReplayBuffer]:
    """A replay buffer constructor: each implementation in turn."""
    return IMPLEMENTATIONS[request.param]


def make_buffer(replay_cls: Callable[..., ReplayBuffer], **kwargs) -> ReplayBuffer:
    kwargs = {"frame_shape": FRAME_SHAPE, "action_shape": ACTION_SHAPE, "capacity": 1000, **kwargs}
    return replay_cls(**kwargs)


def test_nstep_reward_and_discount_by_hand(replay_cls) -> None:
    gamma = 0.9
    buffer = make_buffer(replay_cls, nstep=3, discount=gamma)
    rec = Recorder(buffer, np.random.default_rng(0))
    rec.episode(5, rewards=[1.0, 2.0, 3.0, 4.0, 5.0])  # truncated: discounts stay 1
    rec.episode(4, terminal=True, rewards=[10.0, 20.0, 30.0, 40.0])  # d_4 = 0
    g2, g3 = gamma**2, gamma**3
    expected = {  # (episode, t): (reward, discount, next step)
        (0, 0): (1 + gamma * 2 + g2 * 3, g3, 3),
        (0, 1): (2 + gamma * 3 + g2 * 4, g3, 4),
        (0, 2): (3 + gamma * 4 + g2 * 5, g3, 5),
        (1, 0): (10 + gamma * 20 + g2 * 30, g3, 3),
        (1, 1): (20 + gamma * 30 + g2 * 40, 0.0, 4),  # terminal inside the window: no bootstrap
    }
    assert buffer.num_transitions == len(expected) == len(rec.sampleable())
    assert len(buffer) == 11

    counts = dict.fromkeys(expected, 0)
    for _ in range(20):
        batch = buffer.sample(500)
        rec.check(batch)
        ep, step = decode(batch.obs.numpy().reshape(500, 3, *FRAME_SHAPE)[:, -1])
        for k in range(500):
            key = (int(ep[k]), int(step[k]))
            reward, discount, next_step = expected[key]  # KeyError = an unsampleable transition
            assert batch.reward[k, 0].item() == pytest.approx(reward, rel=1e-6)
            assert batch.discount[k, 0].item() == pytest.approx(discount, abs=1e-7)
            next_ep, next_t = decode(batch.next_obs.numpy()[k].reshape(3, *FRAME_SHAPE)[-1])
            assert (int(next_ep), int(next_t)) == (key[0], next_step)
            counts[key] += 1
    # Uniform over the 5 transitions: 2000 expected each, std ~40.
    assert all(1800 < c < 2200 for c in counts.values()), counts


@pytest.mark.parametrize(("frame_stack", "nstep"), [(3, 3), (1, 1), (3, 1), (1, 3), (4, 2)])
def test_stacks_never_mix_episodes(replay_cls, frame_stack: int, nstep: int) -> None:
    buffer = make_buffer(replay_cls, frame_stack=frame_stack, nstep=nstep, seed=frame_stack * 10 + nstep)
    rng = np.random.default_rng(1)
    rec = Recorder(buffer, rng)
    for _ in range(40):
        rec.episode(int(rng.integers(1, 12)), terminal=bool(rng.integers(2)))
    # A last episode, then one still running: its steps are sampleable once t + nstep is written.
    rec.episode(7)
    running = rec.episode(0)
    for j in range(1, 6):
        buffer.add(np.array([running.id, j], np.float32), 0.25 * j, 1.0, encode(running.id, j), last=False)
        running.rewards.append(0.25 * j)
        running.discounts.append(1.0)
        rec.written += 1
    assert buffer.num_transitions == len(rec.sampleable())
    seen = set()
    for _ in range(10):
        seen.update(rec.check(buffer.sample(256)))
    assert seen == rec.sampleable()


def test_running_episode_becomes_sampleable_step_by_step(replay_cls) -> None:
    buffer = make_buffer(replay_cls, nstep=3)
    buffer.add_first(encode(0, 0))
    for j in range(1, 4):
        assert buffer.num_transitions == 0
        with pytest.raises(ValueError, match="no sampleable transition"):
            buffer.sample(1)
        buffer.add(np.array([0, j], np.float32), 1.0, 1.0, encode(0, j), last=False)
    assert buffer.num_transitions == 1
    batch = buffer.sample(8)
    assert decode(batch.next_obs.numpy().reshape(8, 3, *FRAME_SHAPE)[:, -1])[1].tolist() == [3] * 8


def test_eviction_wraps_and_stays_consistent(replay_cls) -> None:
    capacity = 50
    buffer = make_buffer(replay_cls, capacity=capacity, seed=3)
    rng = np.random.default_rng(2)
    rec = Recorder(buffer, rng)
    while rec.written < 40 * capacity:
        rec.episode(int(rng.integers(1, 16)), terminal=bool(rng.integers(2)))
        assert len(buffer) == min(rec.written, capacity)
        assert buffer.num_transitions == len(rec.sampleable())
        if buffer.num_transitions:
            keys = rec.check(buffer.sample(64))
            # Old data is gone: every sampled episode started no more than capacity steps ago (or its
            # needed frames are within the window, which check() asserts precisely).
            assert min(rec.episodes[e].start + t for e, t in keys) >= rec.written - capacity
    seen = set()
    for _ in range(20):
        seen.update(rec.check(buffer.sample(128)))
    assert seen == rec.sampleable()
    # Stored frames are exactly the last `capacity` written steps.
    stored = {tuple(x) for x in zip(*decode(buffer.state_dict()["frames"].numpy()), strict=True)}
    expected = {
        (ep.id, j) for ep in rec.episodes for j in range(ep.last_step + 1) if ep.start + j >= rec.written - capacity
    }
    assert stored == expected


def test_eviction_boundary_inside_a_stack(replay_cls) -> None:
    """After eviction, transitions whose clamped stack reaches an evicted frame are not sampleable."""
    buffer = make_buffer(replay_cls, capacity=10, frame_stack=3, nstep=1)
    rec = Recorder(buffer, np.random.default_rng(0))
    rec.episode(11)  # 12 steps: steps 0 and 1 evicted
    # t=2 needs frames 0..2 (evicted), t=3 needs 1..3 (evicted), t=4 needs 2..4 (stored).
    assert rec.sampleable() == {(0, t) for t in range(4, 11)}
    assert buffer.num_transitions == 7
    seen = set()
    for _ in range(5):
        seen.update(rec.check(buffer.sample(64)))
    assert seen == rec.sampleable()


def test_degenerate_short_episodes_use_exact_fallback(replay_cls) -> None:
    buffer = make_buffer(replay_cls, capacity=1000, nstep=3)
    rec = Recorder(buffer, np.random.default_rng(0))
    for _ in range(300):
        rec.episode(1)  # too short for nstep 3: nothing sampleable
    with pytest.raises(ValueError, match="no sampleable transition"):
        buffer.sample(4)
    rec.episode(4)
    for _ in range(100):
        rec.episode(2)
    assert buffer.num_transitions == 2
    keys = rec.check(buffer.sample(256))
    assert set(keys) == {(300, 0), (300, 1)}


def test_seeded_sampling_is_reproducible(replay_cls) -> None:
    def filled(seed: int) -> ReplayBuffer:
        buffer = make_buffer(replay_cls, seed=seed)
        rec = Recorder(buffer, np.random.default_rng(7))
        for _ in range(20):
            rec.episode(10)
        return buffer

    a, b, c = filled(0), filled(0), filled(1)
    for _ in range(3):
        batch_a, batch_b, batch_c = a.sample(32), b.sample(32), c.sample(32)
        for x, y in zip(batch_a, batch_b, strict=True):
            assert torch.equal(x, y)
        assert not torch.equal(batch_a.obs, batch_c.obs)


@pytest.mark.parametrize("steps", [30, 500])  # partly filled, and wrapped several times
def test_state_dict_round_trip(replay_cls, steps: int) -> None:
    rng = np.random.default_rng(4)
    buffer = make_buffer(replay_cls, capacity=100, seed=5)
    rec = Recorder(buffer, rng)
    while rec.written < steps:
        rec.episode(int(rng.integers(3, 12)))
    buffer.add_first(encode(999, 0))  # leave an episode running: add() must work after restore
    buffer.add(np.zeros(2, np.float32), 0.5, 1.0, encode(999, 1), last=False)
    buffer.sample(16)  # advance the generator

    state = checkpoint_round_trip(buffer.state_dict())
    restored = make_buffer(replay_cls, capacity=100, seed=123)
    restored.load_state_dict(state)

    assert len(restored) == len(buffer) and restored.num_transitions == buffer.num_transitions
    for round_ in range(4):
        if round_ == 2:  # keep writing to both: the ring position and running episode must match too
            for buf in (buffer, restored):
                for j in range(2, 6):
                    buf.add(np.full(2, j, np.float32), float(j), 1.0, encode(999, j), last=j == 5)
        for x, y in zip(buffer.sample(64), restored.sample(64), strict=True):
            assert torch.equal(x, y)


def test_load_state_dict_rejects_other_config(replay_cls) -> None:
    buffer = make_buffer(replay_cls, capacity=100)
    Recorder(buffer, np.random.default_rng(0)).episode(5)
    with pytest.raises(ValueError, match="config"):
        make_buffer(replay_cls, capacity=200).load_state_dict(buffer.state_dict())
    state = buffer.state_dict()
    state["frames"] = state["frames"][:-1]
    with pytest.raises(ValueError, match="frames"):
        make_buffer(replay_cls, capacity=100).load_state_dict(state)


def test_memory_is_a_third_of_stacked_storage(replay_cls) -> None:
    buffer = replay_cls((3, 84, 84), (6,), capacity=1000)
    reference = 9 * 84 * 84  # DrQ-v2 stores the whole uint8 stack per transition
    ratio = buffer.bytes_per_transition / reference
    assert 1 / 3 <= ratio < 1 / 3 + 0.002, ratio
    assert buffer.nbytes == 1000 * (3 * 84 * 84 + 6 * 4 + 4 + 4 + 8)


def test_pixel_batch_shapes_and_dtypes(replay_cls) -> None:
    buffer = replay_cls((3, 84, 84), (6,), capacity=200)
    buffer.add_first(np.zeros((3, 84, 84), np.uint8))
    for j in range(10):
        buffer.add(np.zeros(6, np.float32), 1.0, 1.0, np.full((3, 84, 84), j, np.uint8), last=False)
    batch = buffer.sample(5)
    assert batch.obs.shape == batch.next_obs.shape == (5, 9, 84, 84)
    assert batch.obs.dtype == torch.uint8 and batch.action.shape == (5, 6)


@pytest.mark.parametrize("frame_stack", [1, 3])
def test_state_observations_are_float32(replay_cls, frame_stack: int) -> None:
    buffer = replay_cls((5,), (2,), capacity=100, frame_stack=frame_stack, frame_dtype=np.float32)
    buffer.add_first(np.zeros(5, np.float32))
    for j in range(1, 6):
        buffer.add(np.zeros(2, np.float32), 1.0, 1.0, np.full(5, j, np.float32), last=False)
    batch = buffer.sample(16)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.float32
    assert batch.obs.shape == (16, 5 * frame_stack)
    assert torch.equal(batch.next_obs[:, -1], batch.obs[:, -1] + 3)
    with pytest.raises(ValueError, match="dtype float32"):
        buffer.add(np.zeros(2, np.float32), 1.0, 1.0, np.zeros(5, np.float64), last=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 3, "nstep": 3}, "capacity"),
        ({"capacity": 10.5}, "capacity"),
        ({"nstep": 0}, "nstep"),
        ({"frame_stack": 0}, "frame_stack"),
        ({"discount": 1.5}, "discount"),
        ({"frame_shape": ()}, "frame_shape"),
        ({"frame_shape": (3, -1)}, "frame_shape"),
        ({"action_shape": (0,)}, "action_shape"),
        ({"frame_dtype": np.float64}, "frame_dtype"),
    ],
)
def test_constructor_validation(replay_cls, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_buffer(replay_cls, **kwargs)


def test_add_and_sample_validation(replay_cls) -> None:
    buffer = make_buffer(replay_cls, )
    action, frame = np.zeros(2, np.float32), encode(0, 0)
    with pytest.raises(ValueError, match="add_first"):
        buffer.add(action, 0.0, 1.0, frame, last=False)
    with pytest.raises(ValueError, match="frame must be"):
        buffer.add_first(np.zeros((3, 84, 84), np.uint8))
    with pytest.raises(ValueError, match="frame must be"):
        buffer.add_first(frame.tolist())
    buffer.add_first(frame)
    with pytest.raises(ValueError, match="action shape"):
        buffer.add(np.zeros(3, np.float32), 0.0, 1.0, frame, last=False)
    with pytest.raises(ValueError, match="no sampleable transition"):
        buffer.sample(4)
    buffer.add(action, 0.0, 1.0, frame, last=True)
    with pytest.raises(ValueError, match="add_first"):  # episode ended: next step needs a reset
        buffer.add(action, 0.0, 1.0, frame, last=False)
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)


def test_sampling_with_an_external_rng_leaves_the_buffer_stream_untouched(replay_cls):
    def filled() -> ReplayBuffer:
        buffer = replay_cls((1, 2, 2), (1,), capacity=100, frame_stack=1, nstep=1, seed=4)
        buffer.add_first(np.zeros((1, 2, 2), np.uint8))
        for i in range(1, 50):
            buffer.add(np.zeros(1, np.float32), float(i), 1.0, np.full((1, 2, 2), i, np.uint8), last=False)
        return buffer

    plain, probed = filled(), filled()
    side = probed.sample(8, rng=np.random.default_rng(123))
    assert torch.equal(side.reward, filled().sample(8, rng=np.random.default_rng(123)).reward)
    assert torch.equal(plain.sample(16).reward, probed.sample(16).reward)
