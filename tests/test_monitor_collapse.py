"""Neural-collapse statistics against direct (NumPy) formulas and collapsed constructions."""

import numpy as np
import pytest
import torch

from rlplastic.monitor import bin_values, collapse_geometry, neural_collapse, quantile_bins


def _direct(h: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, k: int) -> dict[str, float]:
    """The textbook formulas with d×d scatter matrices, independent of the implementation."""
    n, _ = h.shape
    order = np.argsort(y, kind="stable")
    labels = np.empty(n, dtype=int)
    labels[order] = np.arange(n) * k // n
    means = np.stack([h[labels == c].mean(0) for c in range(k)])
    mu_g = h.mean(0)
    m = (means - mu_g).T  # d × K
    e = h - means[labels]
    sigma_w = e.T @ e / n
    sigma_b = m @ m.T / k
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / k
    norms = np.linalg.norm(m, axis=0)
    cos = (m.T @ m) / np.outer(norms, norms)
    iu = np.triu_indices(k, 1)
    u1 = np.linalg.svd(m)[0][:, 0]
    cov = np.cov(h.T, bias=True)
    lam = np.linalg.eigvalsh(cov)
    return {
        "nc1": nc1,
        "nc2_equinorm": norms.std() / norms.mean(),
        "nc2_equiangular": cos[iu].std(),
        "nc3": abs(w @ u1) / np.linalg.norm(w),
        "nrc1": 1 - lam.max() / lam.sum(),
        "labels": labels,
        "means": means,
    }


@pytest.mark.parametrize("n,d,k", [(200, 20, 10), (203, 15, 7), (60, 4, 10)])
def test_statistics_equal_direct_formulas(n, d, k):
    rng = np.random.default_rng(n + d)
    h = rng.standard_normal((n, d)) + rng.standard_normal(d)
    y = rng.standard_normal(n)
    w = rng.standard_normal(d)
    b = 0.3
    direct = _direct(h, y, w, b, k)
    got = neural_collapse(torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(w), b, num_bins=k)
    assert set(got) == {"nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "nrc1"}
    assert got["nc1"] == pytest.approx(direct["nc1"], rel=1e-6)
    for key in ("nc2_equinorm", "nc2_equiangular", "nc3", "nrc1"):
        assert got[key] == pytest.approx(direct[key], rel=1e-8), key
    # NC4 by explicit loops: nearest centre vs bin of the prediction under the target edges
    ys = np.sort(y)
    first = [(c * n + k - 1) // k for c in range(1, k)]
    edges = [(ys[r - 1] + ys[r]) / 2 for r in first]
    agree = 0
    for i in range(n):
        nearest = int(np.argmin(((direct["means"] - h[i]) ** 2).sum(1)))
        pred_bin = sum(e <= h[i] @ w + b for e in edges)
        agree += nearest == pred_bin
    assert got["nc4"] == pytest.approx(agree / n)


def test_float32_and_weight_shapes_accepted():
    torch.manual_seed(0)
    h, y = torch.randn(50, 6), torch.randn(50)
    w = torch.randn(1, 6)
    a = neural_collapse(h, y, w, torch.tensor([0.1]), num_bins=5)
    b = neural_collapse(h.double(), y.double(), w.reshape(-1).double(), 0.1, num_bins=5)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_perfect_collapse():
    k, per_bin, d = 5, 8, 12
    n = k * per_bin
    rng = np.random.default_rng(7)
    class_means = rng.standard_normal((k, d))
    # targets: bin c holds the values c + [0.1 .. 0.8], shuffled
    y = np.concatenate([c + np.linspace(0.1, 0.8, per_bin) for c in range(k)])
    perm = rng.permutation(n)
    y = y[perm]
    labels = np.floor(y).astype(int)
    h = class_means[labels]
    # head that predicts the middle of each bin exactly from the class mean
    b = 0.25
    w = np.linalg.pinv(class_means) @ (np.arange(k) + 0.45 - b)
    got = neural_collapse(torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(w), b, num_bins=k)
    assert got["nc1"] == pytest.approx(0.0, abs=1e-20)
    assert got["nc4"] == 1.0


def test_nrc1_zero_on_rank_one_features():
    rng = np.random.default_rng(8)
    u = rng.standard_normal(10)
    offset = rng.standard_normal(10)
    h = rng.standard_normal((64, 1)) * u + offset
    got = neural_collapse(torch.from_numpy(h), torch.randn(64, dtype=torch.float64), torch.from_numpy(u), None)
    assert got["nrc1"] == pytest.approx(0.0, abs=1e-12)
    assert got["nc3"] == pytest.approx(1.0)  # class means lie on u, and so does the head


@pytest.mark.parametrize("n,k", [(100, 10), (103, 10), (10, 10), (7, 2)])
def test_bins_are_equal_count_and_edges_reproduce_them(n, k):
    torch.manual_seed(n)
    y = torch.randn(n, dtype=torch.float64)
    labels, edges = quantile_bins(y, k)
    counts = torch.bincount(labels, minlength=k)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert edges.shape == (k - 1,)
    assert torch.equal(bin_values(y, edges), labels)
    # bins are ordered: every target of bin c is below every target of bin c+1
    for c in range(k - 1):
        assert y[labels == c].max() < y[labels == c + 1].min()


def test_ties_still_give_equal_count_bins():
    y = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 2.0])
    labels, _ = quantile_bins(y, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]  # stable order among ties


@pytest.mark.parametrize("k", [1, 0, 51, True, 2.5])
def test_bad_num_bins_raises(k):
    h, y, w = torch.randn(50, 3), torch.randn(50), torch.randn(3)
    with pytest.raises(ValueError, match=f"num_bins.*{k}"):
        neural_collapse(h, y, w, None, num_bins=k)
    with pytest.raises(ValueError, match="num_bins"):
        quantile_bins(y, k)


def test_bad_shapes_raise():
    h, y, w = torch.randn(50, 3), torch.randn(50), torch.randn(3)
    with pytest.raises(ValueError, match="features"):
        neural_collapse(torch.randn(50), y, w)
    with pytest.raises(ValueError, match="targets.*49"):
        neural_collapse(h, torch.randn(49), w)
    with pytest.raises(ValueError, match="head_weight"):
        neural_collapse(h, y, torch.randn(4))
    with pytest.raises(ValueError, match="head_bias"):
        neural_collapse(h, y, w, torch.randn(2))


def test_collapse_geometry_projects_on_the_class_means_plane():
    rng = np.random.default_rng(3)
    n, d, k = 60, 7, 3
    h, y, w = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)
    direct = _direct(h, y, w, 0.0, k)
    g = collapse_geometry(torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(w), num_bins=k)
    labels = g["labels"].numpy()
    assert np.array_equal(np.bincount(labels), [20, 20, 20])
    # each projected class mean is the mean of its projected samples
    for c in range(k):
        np.testing.assert_allclose(g["sample_xy"][labels == c].mean(0).numpy(), g["mean_xy"][c].numpy(), atol=1e-12)
    # K = 3 centred means span a plane: the projection keeps their geometry exactly
    means = np.stack([h[labels == c].mean(0) for c in range(k)]) - h.mean(0)
    xy = g["mean_xy"].numpy()
    np.testing.assert_allclose(xy @ xy.T, means @ means.T, atol=1e-12)
    np.testing.assert_allclose(g["explained"].sum().item(), 1.0, atol=1e-12)
    cos = (means @ means.T) / np.outer(np.linalg.norm(means, axis=1), np.linalg.norm(means, axis=1))
    np.testing.assert_allclose(g["cosines"].numpy(), cos, atol=1e-12)
    # |head · u_1| / |w| is NC3
    assert abs(g["head_xy"][0].item()) == pytest.approx(direct["nc3"], abs=1e-12)


def test_collapse_geometry_pads_a_missing_second_direction():
    h = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # d = 1
    g = collapse_geometry(h, torch.arange(4.0), torch.ones(1), num_bins=2)
    assert g["mean_xy"].shape == (2, 2) and torch.all(g["mean_xy"][:, 1] == 0)
    assert g["explained"].tolist() == [1.0, 0.0]


# -- collapse on recent data (monitor.collapse_recent) ---------------------------------------------


def _recent_replay(capacity: int = 100, frame_stack: int = 2):
    """Two episodes (30 and 35 steps) of random 5-d states in a ring of ``capacity`` slots, nstep 3."""
    from rlplastic.replay import ReplayBuffer

    rng = np.random.default_rng(0)
    replay = ReplayBuffer((5,), (2,), capacity=capacity, frame_stack=frame_stack, nstep=3, frame_dtype=np.float32,
                          seed=0)  # fmt: skip
    for length in (30, 35):
        replay.add_first(rng.standard_normal(5).astype(np.float32))
        for i in range(length):
            frame = rng.standard_normal(5).astype(np.float32)
            replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.random()), 1.0, frame, last=i == length - 1)
    return replay


@pytest.mark.parametrize("capacity", [100, 40])  # 40: the ring has wrapped, the oldest steps are gone
def test_replay_recent_returns_the_newest_sampleable_transitions(capacity):
    replay = _recent_replay(capacity)
    low, high = replay._candidate_range()
    valid = [t for t in range(low, high + 1) if replay._is_sampleable(np.array([t]))[0]]  # brute force, one by one
    rng_state = replay._rng.bit_generator.state
    for k in (1, 7, len(valid), len(valid) + 10):
        batch = replay.recent(k)
        expected = replay._batch(np.array(valid[-k:], dtype=np.int64), "cpu")
        assert batch.obs.shape[0] == min(k, len(valid))
        assert all(torch.equal(a, b) for a, b in zip(batch, expected, strict=True))
    assert replay._rng.bit_generator.state == rng_state  # the training stream is untouched
    with pytest.raises(ValueError, match="batch_size"):
        replay.recent(0)


def test_recent_collapse_equals_neural_collapse_on_the_same_samples():
    from rlplastic.monitor import MonitorConfig, PlasticityMonitor
    from tests.factories import tiny_agent

    # states (no augmentation) and zero policy noise: the probe's features and TD targets are deterministic
    agent = tiny_agent("states", stddev_schedule=0.0)
    replay = _recent_replay(frame_stack=1)
    config = MonitorConfig(metrics=["collapse"], collapse_recent=True, probe_every_updates=0, probe_batch_size=24,
                           nc_bins=4, figures=False)  # fmt: skip
    monitor = PlasticityMonitor(config)
    monitor.attach(agent)
    values = monitor.probe(agent, replay, step=0)
    assert set(monitor.expected_tags()) == {f"plasticity/{k}" for k in values} | {"time/probe_s"}

    batch = replay.recent(24)
    with torch.no_grad():  # the critic's penultimate features and the TD target, by hand
        critic, actor = agent.critic, agent.actor
        h = critic.Q1[:-1](torch.cat([critic.trunk(batch.obs), batch.action], dim=-1))
        next_action = torch.tanh(actor.policy(actor.trunk(batch.next_obs))).clamp(-1 + 1e-6, 1 - 1e-6)
        target = batch.reward + batch.discount * torch.min(*agent.critic_target(batch.next_obs, next_action))
    head = critic.Q1[-1]
    direct = neural_collapse(h, target.squeeze(-1), head.weight.squeeze(0), head.bias.squeeze(0), num_bins=4)
    for metric, value in direct.items():
        assert values[f"critic/{metric}_recent"] == pytest.approx(float(value), rel=1e-5, abs=1e-7)
    # the replay batch of the ordinary probe is a uniform sample, so the two sets of values differ
    assert values["critic/nc1_recent"] != values["critic/nc1"]
