"""Curvature estimators against exact autograd Hessians on small float64 problems, and the monitor's
curvature tags against the dense Hessian of a tiny critic's frozen probe loss."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from agents.drqv2 import DrQV2Agent
from rlplastic.monitor import (
    HessianOperator,
    MonitorConfig,
    PlasticityMonitor,
    curvature_directions,
    deflated_trace,
    hessian_lanczos,
    hutchinson_trace,
    hutchpp_trace,
    last_layer_curvature,
    last_layer_hessian,
    last_layer_spectrum,
    sharpness,
    spectrum_srank,
    spectrum_top,
    srank,
)
from rlplastic.replay import ReplayBuffer


def _problem(seed: int = 0):
    """Small tanh MLP with a frozen batch and detached targets, in float64."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, 1, dtype=torch.float64)
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in params]

    def loss_fn() -> torch.Tensor:
        return (net(x) - y).square().mean()

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        chunks, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = shape.numel()
            chunks[name] = flat[i : i + size].reshape(shape)
            i += size
        return (functional_call(net, chunks, (x,)) - y).square().mean()

    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    hessian = torch.autograd.functional.hessian(flat_loss, flat0)
    return net, params, loss_fn, flat_loss, flat0, hessian


def _quadratic(matrix: torch.Tensor):
    """``L(θ) = ½ θᵀAθ`` at a random θ: its Hessian is exactly ``A`` (cheap products for many-seed tests)."""
    theta = torch.randn(matrix.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    theta.requires_grad_()
    return HessianOperator(lambda: 0.5 * theta @ (matrix @ theta), [theta])


def _saddle(seed: int = 0):
    """The tanh MLP loss minus ``c‖θ‖²``: every eigenvalue shifted by −2c, so that the negative end
    dominates in magnitude while some curvature stays positive (a saddle)."""
    net, params, loss_fn, _, _, hessian = _problem(seed)
    eig = torch.linalg.eigvalsh(hessian)
    shift = 0.6 * eig[-1].item()

    def saddle_loss() -> torch.Tensor:
        return loss_fn() - 0.5 * shift * sum(p.square().sum() for p in params)

    return params, saddle_loss, hessian - shift * torch.eye(hessian.shape[0], dtype=torch.float64)


def _regression(seed: int = 0):
    """Least squares through an nn.Linear: a positive definite Hessian ``(2/B) X̃ᵀX̃``."""
    torch.manual_seed(seed)
    head = nn.Linear(5, 1).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randn(40, 1, dtype=torch.float64)
    return list(head.parameters()), lambda: (head(x) - y).square().mean(), last_layer_hessian(x)


def test_lanczos_ends_match_dense_hessian_definite_and_indefinite():
    params, loss_fn, dense = _regression()
    eig = torch.linalg.eigvalsh(dense)
    assert eig[0] > 0  # definite
    result = hessian_lanczos(HessianOperator(loss_fn, params), iters=20, tol=0.0,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.steps == 6  # capped at the dimension
    assert result.lambda_max == pytest.approx(eig[-1].item(), rel=1e-9)
    assert result.lambda_min == pytest.approx(eig[0].item(), rel=1e-9)
    torch.testing.assert_close(result.ritz_values, eig, rtol=1e-9, atol=1e-12)
    assert result.basis_trace == pytest.approx(torch.trace(dense).item(), rel=1e-9)

    _, params, loss_fn, _, _, dense = _problem()  # 31 parameters, indefinite
    eig = torch.linalg.eigvalsh(dense)
    assert eig[0] < 0 < eig[-1]
    result = hessian_lanczos(HessianOperator(loss_fn, params), iters=22, tol=0.0,
                             generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert result.steps == 22 and result.basis.shape == (22, 31)
    assert result.lambda_max == pytest.approx(eig[-1].item(), rel=1e-6)
    assert result.lambda_min == pytest.approx(eig[0].item(), rel=1e-6)
    # the basis is orthonormal and every residual bound is honest: an eigenvalue lies within it
    torch.testing.assert_close(result.basis @ result.basis.T, torch.eye(22, dtype=torch.float64), atol=1e-10, rtol=0)
    distance = (result.ritz_values[:, None] - eig[None, :]).abs().min(dim=1).values
    assert bool((distance <= result.residuals + 1e-10).all())


def test_lanczos_separates_the_ends_of_a_saddle():
    params, loss_fn, dense = _saddle()
    eig = torch.linalg.eigvalsh(dense)
    largest_magnitude = eig[eig.abs().argmax()].item()
    assert largest_magnitude < 0 < eig[-1].item()  # what power iteration would converge to is the negative end
    result = hessian_lanczos(HessianOperator(loss_fn, params), iters=31, tol=0.0,
                             generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert result.lambda_max == pytest.approx(eig[-1].item(), rel=1e-8)
    assert result.lambda_min == pytest.approx(largest_magnitude, rel=1e-8)


def test_lanczos_stops_at_tol_and_watches_top_k():
    _, params, loss_fn, _, _, dense = _problem()
    hessian = HessianOperator(loss_fn, params)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    loose = hessian_lanczos(hessian, iters=31, tol=1e-3, top_k=1, generator=gen())
    wider = hessian_lanczos(hessian, iters=31, tol=1e-3, top_k=8, generator=gen())
    assert loose.steps < wider.steps <= 31
    scale = loose.ritz_values.abs().max()
    assert loose.residuals[-1] <= 1e-3 * scale and loose.residuals[0] <= 1e-3 * scale
    assert bool((wider.residuals[-8:] <= 1e-3 * wider.ritz_values.abs().max()).all())
    assert hessian_lanczos(hessian, iters=5, tol=0.0, generator=gen()).steps == 5
    assert hessian.hvps == loose.steps + wider.steps + 5


def test_curvature_directions_counts_top_k_above_eps_lambda_max():
    eig = torch.tensor([-50.0, 0.05, 0.2, 3.0, 10.0])
    assert curvature_directions(eig, k=5, eps=0.01) == 3  # 10, 3, 0.2 > 0.1
    assert curvature_directions(eig, k=2, eps=0.01) == 2  # capped at k
    assert curvature_directions(eig, k=5, eps=0.0) == 4  # every positive one
    assert curvature_directions(torch.tensor([-2.0, -1.0]), k=2) == 0  # no positive curvature
    with pytest.raises(ValueError, match="eps.*1.5"):
        curvature_directions(eig, eps=1.5)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.3])
def test_hessian_directions_match_dense_eigendecomposition(eps):
    _, params, loss_fn, _, _, dense = _problem()
    eig = torch.linalg.eigvalsh(dense).flip(0)
    k = 14
    expected = int((eig[:k] > eps * eig[0]).sum())
    assert 0 < expected < k  # the threshold falls inside the top-k: the count is informative
    result = hessian_lanczos(HessianOperator(loss_fn, params), iters=25, tol=0.0,
                             generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert curvature_directions(result.ritz_values, k, eps) == expected


def _seed_spread(estimate, seeds: int):
    """Estimates and reported SEs over independent seeds: (mean, empirical variance, mean SE²)."""
    values, ses = zip(*(estimate(torch.Generator().manual_seed(s)) for s in range(seeds)), strict=True)
    values, ses = torch.tensor(values, dtype=torch.float64), torch.tensor(ses, dtype=torch.float64)
    return values.mean().item(), values.var().item(), ses.square().mean().item()


@pytest.mark.parametrize("estimator", ["hutchinson", "lanczos_deflated", "hutchpp"])
def test_trace_standard_error_matches_spread_over_seeds(estimator):
    *_, dense = _problem()
    hessian = _quadratic(dense)
    exact = torch.trace(dense).item()

    def estimate(gen):
        if estimator == "hutchinson":
            return deflated_trace(hessian, 8, generator=gen)
        if estimator == "hutchpp":
            return hutchpp_trace(hessian, 12, generator=gen)
        lanczos = hessian_lanczos(hessian, iters=4, tol=0.0, generator=gen)
        return deflated_trace(hessian, 8, lanczos.basis, lanczos.basis_trace, generator=gen)

    seeds = 200
    mean, variance, mean_se2 = _seed_spread(estimate, seeds)
    assert abs(mean - exact) < 4 * (variance / seeds) ** 0.5  # unbiased
    # the reported SE is the estimator's real spread (a wrong √n or a Hutch++ SE over all n would be off 2x+)
    assert 0.7 < mean_se2 / variance < 1.4


def test_deflation_reduces_the_trace_variance():
    *_, dense = _problem()
    hessian = _quadratic(dense)
    plain = _seed_spread(lambda g: deflated_trace(hessian, 8, generator=g), 50)[1]

    def deflated(gen):
        lanczos = hessian_lanczos(hessian, iters=12, tol=0.0, generator=gen)
        return deflated_trace(hessian, 8, lanczos.basis, lanczos.basis_trace, generator=gen)

    assert _seed_spread(deflated, 50)[1] < 0.25 * plain


def test_deflated_trace_is_exact_on_a_complete_basis():
    *_, dense = _problem()
    hessian = _quadratic(dense)
    basis = torch.eye(31, dtype=torch.float64)
    trace, se = deflated_trace(hessian, 2, basis, generator=torch.Generator().manual_seed(0))
    assert trace == pytest.approx(torch.trace(dense).item(), rel=1e-12) and se == pytest.approx(0.0, abs=1e-9)


def test_hutchinson_trace_within_four_standard_errors():
    _, params, loss_fn, _, _, hessian = _problem()
    gen = torch.Generator().manual_seed(2)
    mean, stderr = hutchinson_trace(loss_fn, params, n_probes=300, generator=gen)
    exact = torch.trace(hessian).item()
    assert stderr > 0
    assert abs(mean - exact) < 4 * stderr


def test_curvature_of_linear_loss_is_zero():
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    hessian = HessianOperator(lambda: (w * 3.0).sum(), [w])
    result = hessian_lanczos(hessian)
    assert result.lambda_max == result.lambda_min == 0.0 and result.steps == 1
    assert curvature_directions(result.ritz_values) == 0
    mean, stderr = hutchinson_trace(lambda: (w * 3.0).sum(), [w], n_probes=4)
    assert mean == 0.0 and stderr == 0.0


def test_last_layer_hessian_equals_autograd():
    torch.manual_seed(3)
    features = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randn(12, dtype=torch.float64)

    def mse(wb: torch.Tensor) -> torch.Tensor:
        return (features @ wb[:5] + wb[5] - y).square().mean()

    expected = torch.autograd.functional.hessian(mse, torch.randn(6, dtype=torch.float64))
    torch.testing.assert_close(last_layer_hessian(features), expected)

    # the same through an nn.Linear's [weight, bias] flattening order
    head = nn.Linear(5, 1).double()

    def head_loss(flat: torch.Tensor) -> torch.Tensor:
        params = {"weight": flat[:5].reshape(1, 5), "bias": flat[5:]}
        return (functional_call(head, params, (features,)).squeeze(1) - y).square().mean()

    flat = torch.cat([head.weight.detach().reshape(-1), head.bias.detach()])
    torch.testing.assert_close(last_layer_hessian(features), torch.autograd.functional.hessian(head_loss, flat))
    no_bias = last_layer_hessian(features, with_bias=False)
    torch.testing.assert_close(no_bias, expected[:5, :5])


@pytest.mark.parametrize("batch", [30, 4])
def test_last_layer_spectrum_and_summary(batch):
    torch.manual_seed(4)
    features = torch.randn(batch, 8, dtype=torch.float64)
    eig = last_layer_spectrum(features)
    assert eig.shape == (9,)
    exact = torch.linalg.eigvalsh(last_layer_hessian(features)).flip(0).clamp_min(0)
    torch.testing.assert_close(eig, exact, atol=1e-10, rtol=1e-8)
    assert spectrum_top(eig).item() == pytest.approx(exact[0].item())
    assert spectrum_srank(eig, 0.01).item() == srank(exact, 0.01).item()
    summary = last_layer_curvature(features)
    assert summary["lambda_max"] == pytest.approx(exact[0].item())
    assert summary["trace"] == pytest.approx(torch.trace(last_layer_hessian(features)).item())
    assert summary["srank"] == spectrum_srank(eig).item()


def test_sharpness_matches_direct_and_restores_exactly():
    net, params, loss_fn, flat_loss, flat0, _ = _problem()
    before = [p.detach().clone() for p in params]
    rho = 0.05
    value = sharpness(loss_fn, params, rho=rho)
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
        assert p.grad is None
    flat = flat0.clone().requires_grad_()
    (g,) = torch.autograd.grad(flat_loss(flat), flat)
    expected = (flat_loss(flat0 + rho * g / g.norm()) - flat_loss(flat0)).item()
    assert value == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert value > 0


def test_sharpness_restores_params_when_loss_fn_raises():
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    before = w.detach().clone()
    calls = []

    def loss_fn():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return (w**2).sum()

    with pytest.raises(RuntimeError, match="boom"):
        sharpness(loss_fn, [w])
    assert torch.equal(w.detach(), before)


def test_bad_curvature_inputs_raise():
    w = torch.randn(3, requires_grad=True)
    hessian = HessianOperator(lambda: (w**2).sum(), [w])
    with pytest.raises(ValueError, match="iters.*0"):
        hessian_lanczos(hessian, iters=0)
    with pytest.raises(ValueError, match="top_k.*0"):
        hessian_lanczos(hessian, top_k=0)
    with pytest.raises(ValueError, match="HessianOperator"):
        hessian_lanczos(lambda: (w**2).sum())
    with pytest.raises(ValueError, match="n_hvps.*5"):
        hutchpp_trace(hessian, n_hvps=5)
    with pytest.raises(ValueError, match="basis must have shape"):
        deflated_trace(hessian, 4, basis=torch.eye(2))
    with pytest.raises(ValueError, match="vec must have shape"):
        hessian(torch.ones(2))
    with pytest.raises(ValueError, match="one dtype and device"):
        HessianOperator(lambda: (w**2).sum(), [w, torch.ones(2, dtype=torch.float64, requires_grad=True)])
    with pytest.raises(ValueError, match="n_probes.*1"):
        hutchinson_trace(lambda: (w**2).sum(), [w], n_probes=1)
    with pytest.raises(ValueError, match="rho.*-0.1"):
        sharpness(lambda: (w**2).sum(), [w], rho=-0.1)
    with pytest.raises(ValueError, match="scalar"):
        sharpness(lambda: w**2, [w])
    with pytest.raises(ValueError, match="requires_grad"):
        sharpness(lambda: (w**2).sum(), [w.detach()])
    with pytest.raises(ValueError, match="delta.*1.5"):
        last_layer_curvature(torch.randn(4, 2), delta=1.5)


def _states_agent_and_replay():
    """A tiny states-mode DrQ-v2 agent (306 critic parameters) and a replay of 40 random steps."""
    torch.manual_seed(0)
    agent = DrQV2Agent((5,), (2,), obs_type="states", feature_dim=4, hidden_dim=8, num_expl_steps=0)
    rng = np.random.default_rng(0)
    replay = ReplayBuffer((5,), (2,), capacity=64, frame_stack=1, nstep=3, frame_dtype=np.float32, seed=0)
    replay.add_first(rng.standard_normal(5).astype(np.float32))
    for _ in range(40):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        replay.add(action, float(rng.random()), 1.0, rng.standard_normal(5).astype(np.float32), last=False)
    return agent, replay


def test_monitor_probe_curvature_tags_match_the_dense_critic_hessian(monkeypatch):
    agent, replay = _states_agent_and_replay()
    probes = []
    critic_probe = agent.critic_probe
    monkeypatch.setattr(agent, "critic_probe", lambda *a: probes.append(critic_probe(*a)) or probes[-1])
    config = MonitorConfig(metrics=["curvature"], probe_every_updates=0, probe_at_start=False, probe_batch_size=16,
                           hessian_iters=40, hessian_tol=0.0, hessian_directions_k=10,
                           hutchinson_probes=20)  # fmt: skip
    monitor = PlasticityMonitor(config)
    monitor.attach(agent)
    values = monitor.probe(agent, replay, step=0)
    assert {"critic/hessian_max", "critic/hessian_min", "critic/hessian_directions", "critic/hessian_trace",
            "critic/hessian_trace_se"} <= set(values) and "critic/hessian_top" not in values  # fmt: skip

    # the dense Hessian of the very loss the probe froze, column by column
    hessian = HessianOperator(probes[0].loss_fn, probes[0].params)
    dense = torch.stack([hessian(e) for e in torch.eye(hessian.size)]).double()
    eig = torch.linalg.eigvalsh((dense + dense.T) / 2)
    scale = eig.abs().max().item()
    assert eig[0] < 0 < eig[-1]  # the critic loss Hessian is indefinite
    assert values["critic/hessian_max"] == pytest.approx(eig[-1].item(), abs=1e-4 * scale)
    assert values["critic/hessian_min"] == pytest.approx(eig[0].item(), abs=1e-4 * scale)
    top = eig.flip(0)[:10]
    assert values["critic/hessian_directions"] == float((top > 0.01 * top[0]).sum())
    assert values["critic/hessian_trace_se"] > 0
    assert abs(values["critic/hessian_trace"] - eig.sum().item()) < 4 * values["critic/hessian_trace_se"]

    # a subset of the Lanczos metrics writes only its own tags
    only = PlasticityMonitor(MonitorConfig(metrics=["hessian_trace"], probe_every_updates=0, probe_at_start=False,
                                           probe_batch_size=16, hessian_iters=5))  # fmt: skip
    only.attach(agent)
    assert set(only.probe(agent, replay, step=0)) == {"critic/hessian_trace"}


def test_monitor_config_checks_the_directions_k_against_the_lanczos_steps():
    with pytest.raises(ValueError, match="hessian_directions_k=40 is larger than monitor.hessian_iters=30"):
        MonitorConfig(hessian_iters=30, hessian_directions_k=40)
    MonitorConfig(metrics=["hessian_max"], hessian_iters=30, hessian_directions_k=40)  # no directions: no constraint
    with pytest.raises(ValueError, match="hessian_directions_eps=1.5 must be a number in"):
        MonitorConfig(hessian_directions_eps=1.5)
