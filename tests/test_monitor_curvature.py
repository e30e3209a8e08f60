"""Curvature estimators against exact autograd Hessians on small float64 problems."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from rlplastic.monitor import (
    hessian_top_eigenvalue,
    hutchinson_trace,
    last_layer_curvature,
    last_layer_hessian,
    last_layer_spectrum,
    sharpness,
    spectrum_srank,
    spectrum_top,
    srank,
)


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


def test_top_eigenvalue_matches_exact_hessian():
    _, params, loss_fn, _, _, hessian = _problem()
    eig = torch.linalg.eigvalsh(hessian)
    expected = eig[eig.abs().argmax()].item()
    gen = torch.Generator().manual_seed(0)
    value, used = hessian_top_eigenvalue(loss_fn, params, iters=2000, tol=1e-12, generator=gen)
    assert abs(value - expected) / abs(expected) < 1e-3
    assert 1 <= used <= 2000


def test_top_eigenvalue_reports_iterations_and_stops_at_tol():
    _, params, loss_fn, _, _, _ = _problem()
    gen = torch.Generator().manual_seed(1)
    _, used = hessian_top_eigenvalue(loss_fn, params, iters=3, tol=0.0, generator=gen)
    assert used == 3
    _, used_loose = hessian_top_eigenvalue(loss_fn, params, iters=500, tol=0.5, generator=gen)
    assert used_loose < 500


def test_hutchinson_trace_within_four_standard_errors():
    _, params, loss_fn, _, _, hessian = _problem()
    gen = torch.Generator().manual_seed(2)
    mean, stderr = hutchinson_trace(loss_fn, params, n_probes=300, generator=gen)
    exact = torch.trace(hessian).item()
    assert stderr > 0
    assert abs(mean - exact) < 4 * stderr


def test_curvature_of_linear_loss_is_zero():
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    value, _ = hessian_top_eigenvalue(lambda: (w * 3.0).sum(), [w])
    assert value == 0.0
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
    with pytest.raises(ValueError, match="iters.*0"):
        hessian_top_eigenvalue(lambda: (w**2).sum(), [w], iters=0)
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
