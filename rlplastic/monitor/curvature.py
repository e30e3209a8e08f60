"""Curvature of the loss landscape on a frozen batch: Hessian spectrum, trace, sharpness.

All estimators take ``loss_fn``, a zero-argument closure returning a scalar loss of one **fixed**
function: the batch, its augmentation draw and the (detached) TD targets must be captured in the
closure, and anything stochastic in the network (dropout, noise) must be off, so that every call
returns the same value for the same parameters. Otherwise the "Hessian" is of a different function
at every call and power iteration does not converge.

These are probe-time tools: they sync with the host and return Python floats.

The last-layer helpers use an exact identity instead of autograd: for an MSE head
``L = mean_b (w·φ_b + b − y_b)²`` with detached targets, the Hessian w.r.t. ``[w, b]`` is
``(2/B) Φ̃ᵀΦ̃`` with ``Φ̃ = [φ, 1]``, independent of ``w``, ``b`` and ``y``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rlplastic.monitor.rank import _check_delta, _check_matrix, singular_values, srank

__all__ = [
    "hessian_top_eigenvalue",
    "hutchinson_trace",
    "last_layer_curvature",
    "last_layer_hessian",
    "last_layer_spectrum",
    "sharpness",
    "spectrum_srank",
    "spectrum_top",
]

LossFn = Callable[[], Tensor]


def _check_params(params: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError("params must be a non-empty sequence of tensors requiring grad")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise ValueError(
                f"params[{i}] must be a tensor with requires_grad=True, got "
                f"{type(p).__name__}{'' if not isinstance(p, Tensor) else ' without grad'}"
            )
    return params


def _scalar_loss(loss_fn: LossFn) -> Tensor:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a zero-argument callable, got {type(loss_fn).__name__}")
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return loss.reshape(())


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _gradients(loss: Tensor, params: list[Tensor], create_graph: bool) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    # a parameter the loss does not touch has zero gradient and zero curvature
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _hvp(grads: list[Tensor], params: list[Tensor], vec: list[Tensor]) -> list[Tensor]:
    dot = sum((g * v).sum() for g, v in zip(grads, vec, strict=True))
    if not isinstance(dot, Tensor) or not dot.requires_grad:
        # gradients that do not depend on the parameters: the loss is linear, H = 0
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv, strict=True)]


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _random_like(params: list[Tensor], generator: torch.Generator | None, rademacher: bool) -> list[Tensor]:
    out = []
    for p in params:
        # draw on the generator's device so a CPU generator also works for CUDA parameters
        device = generator.device if generator is not None else p.device
        if rademacher:
            r = torch.randint(0, 2, p.shape, generator=generator, device=device)
            r = r.to(p.dtype) * 2 - 1
        else:
            r = torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype)
        out.append(r.to(p.device))
    return out


def hessian_top_eigenvalue(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    iters: int = 20,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> tuple[float, int]:
    """Eigenvalue of largest **magnitude** of the Hessian, by power iteration on Hessian-vector
    products.

    The loss is differentiated once with ``create_graph=True``; each iteration is then one
    double-backward Hessian-vector product. Power iteration converges to the eigenvalue of
    largest ``|λ|``, which is the top (positive) eigenvalue near a minimum but can be a negative
    one elsewhere; the returned value keeps its sign (Rayleigh quotient ``vᵀHv``). Convergence is
    geometric in ``|λ₂/λ₁|``, so a small spectral gap needs more iterations.

    :param loss_fn: Zero-argument closure returning the scalar loss on a frozen batch.
    :param params: Parameters (requires_grad) spanning the Hessian.
    :param iters: Maximum number of power iterations (>= 1).
    :param tol: Stop when ``|λ_t − λ_{t−1}| <= tol · |λ_t|`` (relative change).
    :param generator: RNG for the random start vector.
    :return: ``(eigenvalue, iterations used)``.
    """
    params = _check_params(params)
    iters = _check_int(iters, "iters", 1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    grads = _gradients(_scalar_loss(loss_fn), params, create_graph=True)
    vec = _random_like(params, generator, rademacher=False)
    norm = _dot(vec, vec).sqrt()
    vec = [v / norm for v in vec]
    eigenvalue = math.nan
    for it in range(1, iters + 1):
        hv = _hvp(grads, params, vec)
        new_eigenvalue = float(_dot(vec, hv))
        hv_norm = float(_dot(hv, hv).sqrt())
        if hv_norm == 0.0:
            return 0.0, it
        converged = abs(new_eigenvalue - eigenvalue) <= tol * abs(new_eigenvalue)
        eigenvalue = new_eigenvalue
        if converged:
            return eigenvalue, it
        vec = [h / hv_norm for h in hv]
    return eigenvalue, iters


def hutchinson_trace(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    n_probes: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Hutchinson estimate of the Hessian trace with Rademacher probes, ``E[zᵀHz] = Tr H``.

    :param loss_fn: Zero-argument closure returning the scalar loss on a frozen batch.
    :param params: Parameters (requires_grad) spanning the Hessian.
    :param n_probes: Number of probe vectors (>= 2, for the standard error).
    :param generator: RNG for the probes.
    :return: ``(mean of zᵀHz, standard error of that mean)``.
    """
    params = _check_params(params)
    n_probes = _check_int(n_probes, "n_probes", 2)
    grads = _gradients(_scalar_loss(loss_fn), params, create_graph=True)
    samples = []
    for _ in range(n_probes):
        z = _random_like(params, generator, rademacher=True)
        samples.append(_dot(z, _hvp(grads, params, z)).detach().to(torch.float64))
    values = torch.stack(samples)
    return float(values.mean()), float(values.std(correction=1) / math.sqrt(n_probes))


def sharpness(loss_fn: LossFn, params: Sequence[Tensor], rho: float = 0.05) -> float:
    """SAM-style sharpness ``L(θ + ρ g/‖g‖) − L(θ)`` on a frozen batch.

    The parameters are perturbed in place and restored bit-exactly afterwards (also if
    ``loss_fn`` raises); their ``.grad`` fields are not touched. Zero gradient gives 0.

    :param loss_fn: Zero-argument closure returning the scalar loss on a frozen batch.
    :param params: Parameters (requires_grad) to perturb; ``g`` is the gradient w.r.t. all of them.
    :param rho: Radius of the ascent step, > 0.
    :return: The sharpness (a Python float).
    """
    params = _check_params(params)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < math.inf:
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    loss = _scalar_loss(loss_fn)
    grads = _gradients(loss, params, create_graph=False)
    base = float(loss.detach())
    g_norm = float(_dot(grads, grads).sqrt())
    if g_norm == 0.0:
        return 0.0
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=rho / g_norm)
            perturbed = float(_scalar_loss(loss_fn))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return perturbed - base


def _augmented(features: Tensor, with_bias: bool) -> Tensor:
    phi = _check_matrix(features, "features")
    if with_bias:
        phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)
    return phi


def last_layer_hessian(features: Tensor, with_bias: bool = True) -> Tensor:
    """Exact Hessian of ``mean_b (w·φ_b + b − y_b)²`` w.r.t. ``[w, b]``: ``(2/B) Φ̃ᵀΦ̃``.

    ``Φ̃ = [φ, 1]`` (or ``φ`` without bias). For a head with m outputs trained with
    ``F.mse_loss`` (mean over B·m elements) the Hessian is block diagonal with m blocks
    ``(2/(B·m)) Φ̃ᵀΦ̃``; a sum of two head losses (twin critics) has one such block per head.

    :param features: Inputs of the last Linear layer (B, d), detached.
    :param with_bias: Include the bias (appends a constant-1 column).
    :return: (d+1, d+1) matrix (or (d, d)), in ``features``' dtype; ordering ``[w_1..w_d, b]``.
    """
    phi = _augmented(features, with_bias)
    return (2.0 / phi.shape[0]) * (phi.T @ phi)


def last_layer_spectrum(features: Tensor, with_bias: bool = True) -> Tensor:
    """Eigenvalues of :func:`last_layer_hessian`, float64, descending, clamped at 0.

    Computed from the singular values of Φ̃ (λ = 2σ²/B), so a wide feature matrix (B < d) costs a
    B×B problem; the missing eigenvalues are exact zeros and are appended.

    :param features: Inputs of the last Linear layer (B, d).
    :param with_bias: Include the bias.
    :return: float64 tensor of length d+1 (or d).
    """
    phi = _augmented(features, with_bias)
    batch, dim = phi.shape
    eig = (2.0 / batch) * singular_values(phi).square()
    if eig.numel() < dim:
        eig = torch.cat([eig, eig.new_zeros(dim - eig.numel())])
    return eig


def spectrum_top(eigenvalues: Tensor) -> Tensor:
    """Largest eigenvalue λ_max of a spectrum (0-d tensor)."""
    if not isinstance(eigenvalues, Tensor) or eigenvalues.dim() != 1 or eigenvalues.numel() == 0:
        raise ValueError("eigenvalues must be a non-empty 1-D tensor")
    return eigenvalues.max()


def spectrum_srank(eigenvalues: Tensor, delta: float = 0.01) -> Tensor:
    """srank_δ of a non-negative spectrum (same rule as :func:`rlplastic.monitor.rank.srank`,
    applied to eigenvalues instead of singular values, as Lewandowski et al. do for Hessians)."""
    return srank(eigenvalues, delta)


def last_layer_curvature(features: Tensor, with_bias: bool = True, delta: float = 0.01) -> dict[str, float]:
    """Summary of the exact last-layer Hessian spectrum of an MSE head.

    :param features: Inputs of the last Linear layer (B, d).
    :param with_bias: Include the bias.
    :param delta: δ of the srank.
    :return: ``{"lambda_max", "trace", "srank"}`` as Python floats.
    """
    delta = _check_delta(delta)
    eig = last_layer_spectrum(features, with_bias)
    return {
        "lambda_max": float(spectrum_top(eig)),
        "trace": float(eig.sum()),
        "srank": float(spectrum_srank(eig, delta)),
    }
