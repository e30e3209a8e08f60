"""Activity, rank and norm metrics against independent (loop / NumPy) computations."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rlplastic.monitor import (
    dormant_mask,
    dormant_ratio,
    dormant_ratio_over_layers,
    dormant_scores,
    effective_rank,
    feature_norm,
    grad_norm,
    param_distance,
    singular_values,
    snapshot_params,
    srank,
    weight_rms,
)

# -- dormant units -------------------------------------------------------------------------


def _manual_scores(act: torch.Tensor) -> list[float]:
    """ReDo scores by explicit loops over units, samples and positions."""
    a = act.double()
    n, c = a.shape[0], a.shape[1]
    flat = a.reshape(n, c, -1)
    per_unit = []
    for i in range(c):
        total = 0.0
        for b in range(n):
            for x in range(flat.shape[2]):
                total += abs(flat[b, i, x].item())
        per_unit.append(total / (n * flat.shape[2]))
    layer_mean = sum(per_unit) / c
    return [s / layer_mean for s in per_unit]


@pytest.mark.parametrize("shape", [(16, 8), (4, 5, 3, 3)])
def test_dormant_matches_manual_loop(shape):
    torch.manual_seed(1)
    act = torch.relu(torch.randn(shape))
    act[:, 0] = 0.0  # a dead unit / channel
    act[:, 1] *= 0.01  # a nearly dead one
    expected = _manual_scores(act)
    got = dormant_scores(act)
    assert got.shape == (shape[1],)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5)
    tau = 0.1
    manual_mask = [s <= tau for s in expected]
    assert dormant_mask(act, tau).tolist() == manual_mask
    assert dormant_ratio(act, tau).item() == pytest.approx(sum(manual_mask) / shape[1])


def test_dormant_unit_weighted_total_over_layers():
    torch.manual_seed(2)
    conv = torch.relu(torch.randn(4, 6, 5, 5))
    conv[:, :2] = 0.0  # 2 of 6 channels dormant
    dense = torch.relu(torch.randn(4, 30))
    dense[:, :3] = 0.0  # at least 3 of 30 dormant
    tau = 0.025
    dormant = sum(sum(s <= tau for s in _manual_scores(a)) for a in (conv, dense))
    got = dormant_ratio_over_layers([conv, dense], tau)
    assert got.item() == pytest.approx(dormant / 36)
    # unit-weighted, not the mean of per-layer ratios
    mean_of_ratios = (dormant_ratio(conv, tau) + dormant_ratio(dense, tau)).item() / 2
    assert got.item() != pytest.approx(mean_of_ratios)


def test_dormant_silent_layer_is_fully_dormant_not_nan():
    act = torch.zeros(3, 4)
    assert torch.equal(dormant_scores(act), torch.zeros(4))
    assert dormant_ratio(act, 0.0).item() == 1.0


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_bad_tau_raises(tau):
    with pytest.raises(ValueError, match=f"tau.*{tau}"):
        dormant_ratio(torch.rand(4, 3), tau)
    with pytest.raises(ValueError, match="tau"):
        dormant_ratio_over_layers([torch.rand(4, 3)], tau)


def test_bad_activation_shape_raises():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        dormant_scores(torch.rand(5))


# -- rank ----------------------------------------------------------------------------------


def _with_singular_values(sigma: np.ndarray, n: int, d: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, len(sigma))))
    v, _ = np.linalg.qr(rng.standard_normal((d, len(sigma))))
    return torch.from_numpy(u @ np.diag(sigma) @ v.T)


def _srank_loop(sigma, delta):
    s = sorted(sigma, reverse=True)
    total, running = sum(s), 0.0
    for k, value in enumerate(s, start=1):
        running += value
        if running / total >= 1 - delta:
            return k
    raise AssertionError


@pytest.mark.parametrize("n,d", [(40, 10), (6, 10), (10, 10)])
def test_singular_values_known_spectrum(n, d):
    sigma = np.array([9.0, 5.0, 2.0, 1.0, 0.5, 0.05])
    phi = _with_singular_values(sigma, n, d, seed=n)
    sv = singular_values(phi)
    assert sv.dtype == torch.float64 and sv.shape == (min(n, d),)
    expected = np.concatenate([sigma, np.zeros(min(n, d) - len(sigma))])
    np.testing.assert_allclose(sv.numpy(), expected, atol=1e-7)
    for delta in (0.01, 0.1, 0.3):
        assert srank(sv, delta).item() == _srank_loop(expected, delta)
    p = sigma / sigma.sum()
    assert effective_rank(sv).item() == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_gram_path_equals_svdvals_float32_input():
    torch.manual_seed(3)
    phi = torch.randn(300, 20) @ torch.randn(20, 20)
    np.testing.assert_allclose(
        singular_values(phi).numpy(),
        torch.linalg.svdvals(phi.double()).numpy(),
        rtol=1e-9,
        atol=1e-9,
    )


def test_center_option():
    torch.manual_seed(4)
    phi = torch.randn(50, 5, dtype=torch.float64) + 10.0
    centred = phi - phi.mean(0)
    np.testing.assert_allclose(singular_values(phi, center=True).numpy(), torch.linalg.svdvals(centred).numpy())
    # uncentred by default: the common offset dominates the top singular value
    assert singular_values(phi)[0] > singular_values(phi, center=True)[0] * 5


def test_srank_edge_cases():
    assert srank(torch.tensor([1.0, 1.0, 1.0, 1.0])).item() == 4
    assert srank(torch.tensor([1.0, 0.0, 0.0])).item() == 1
    assert srank(torch.zeros(3)).item() == 0
    assert effective_rank(torch.tensor([2.0, 2.0, 0.0])).item() == pytest.approx(2.0)
    assert effective_rank(torch.zeros(3)).item() == 0.0


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.5, 2])
def test_bad_delta_raises(delta):
    with pytest.raises(ValueError, match=f"delta.*{delta}"):
        srank(torch.ones(3), delta)


def test_feature_norm():
    phi = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert feature_norm(phi).item() == pytest.approx(3.0)


# -- parameter norms -----------------------------------------------------------------------


def test_weight_rms_distance_grad_norm():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert weight_rms(net).item() == pytest.approx(flat.pow(2).mean().sqrt().item(), rel=1e-6)

    init = snapshot_params(net)
    assert param_distance(net, init).item() == 0.0
    with torch.no_grad():
        net[0].weight[0, 0] += 3.0
        net[2].bias[1] -= 4.0
    assert param_distance(net, init).item() == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="missing"):
        param_distance(net, {"0.weight": init["0.weight"]})

    assert grad_norm(p.grad for p in net.parameters()).item() == 0.0  # no gradient yet
    net(torch.randn(5, 3)).square().sum().backward()
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert grad_norm(p.grad for p in net.parameters()).item() == pytest.approx(grads.norm().item(), rel=1e-6)
    # torch.autograd.grad's gradients, unused parameters (None) skipped, as the monitor's probe passes them
    loss = net[0](torch.randn(5, 3)).square().sum()
    first = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    assert first[2] is None and first[3] is None
    expected = torch.cat([g.reshape(-1) for g in first[:2]]).norm()
    assert grad_norm(first).item() == pytest.approx(expected.item(), rel=1e-6)
