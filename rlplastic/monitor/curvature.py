"""Curvature of the loss landscape on a frozen batch: Hessian spectrum, trace, sharpness.

* :class:`HessianOperator`: ``v ↦ Hv`` by double backward, on flat parameter vectors.
* :func:`hessian_lanczos`: Lanczos with full reorthogonalisation; its Ritz values give ``λ_max``
  and ``λ_min`` separately (the critic-loss Hessian is indefinite, so the eigenvalue of largest
  magnitude that power iteration finds can be the negative end) and the top-k, from which
  :func:`curvature_directions` counts the directions of curvature (Lewandowski et al. 2023).
* :func:`deflated_trace`: ``Tr H`` exactly on the Lanczos (or any orthonormal) basis plus
  Hutchinson on the deflated rest, with a standard error; :func:`hutchpp_trace` (Meyer et al.
  2021) and plain :func:`hutchinson_trace` for comparison.

All estimators take (directly or through :class:`HessianOperator`) ``loss_fn``, a zero-argument
closure returning a scalar loss of one **fixed** function: the batch, its augmentation draw and the
(detached) TD targets must be captured in the closure, and anything stochastic in the network
(dropout, noise) must be off, so that every call returns the same value for the same parameters.
Otherwise the "Hessian" is of a different function at every call and Lanczos does not converge.

These are probe-time tools: they sync with the host and return Python floats.

The last-layer helpers use an exact identity instead of autograd: for an MSE head
``L = mean_b (w·φ_b + b − y_b)²`` with detached targets, the Hessian w.r.t. ``[w, b]`` is
``(2/B) Φ̃ᵀΦ̃`` with ``Φ̃ = [φ, 1]``, independent of ``w``, ``b`` and ``y``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlplastic.monitor.rank import _check_delta, _check_matrix, singular_values, srank

__all__ = [
    "HessianOperator",
    "LanczosResult",
    "curvature_directions",
    "deflated_trace",
    "hessian_lanczos",
    "hutchinson_trace",
    "hutchpp_trace",
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


class HessianOperator:
    """The Hessian ``H = ∇²L(θ)`` of a frozen loss as a linear operator on flat parameter vectors.

    The loss is differentiated once with ``create_graph=True`` at construction; every call
    ``H @ v`` is then one double-backward Hessian-vector product (Pearlmutter's trick,
    ``Hv = ∇_θ (∇_θ L · v)``), so one operator serves a Lanczos run and the trace probes after it
    without a second forward pass. Vectors are 1-D, of length :attr:`size`, laid out as the
    concatenation of ``p.reshape(-1)`` over ``params``, in the parameters' dtype and device.

    :param loss_fn: Zero-argument closure returning the scalar loss on a frozen batch.
    :param params: Parameters (requires_grad) spanning the Hessian; one dtype and device.
    """

    def __init__(self, loss_fn: LossFn, params: Sequence[Tensor]) -> None:
        self.params = _check_params(params)
        first = self.params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in self.params):
            raise ValueError("params must share one dtype and device")
        self.dtype, self.device = first.dtype, first.device
        self.size = sum(p.numel() for p in self.params)
        #: Hessian-vector products done so far (the unit of cost of every estimator).
        self.hvps = 0
        self._grads = _gradients(_scalar_loss(loss_fn), self.params, create_graph=True)

    def __call__(self, vec: Tensor) -> Tensor:
        """``H @ vec`` for a flat vector ``vec`` of length :attr:`size`."""
        if vec.shape != (self.size,):
            raise ValueError(f"vec must have shape ({self.size},), got {tuple(vec.shape)}")
        chunks = vec.to(self.dtype).split([p.numel() for p in self.params])
        self.hvps += 1
        hv = _hvp(self._grads, self.params, [c.view_as(p) for c, p in zip(chunks, self.params, strict=True)])
        return torch.cat([h.reshape(-1) for h in hv])

    def random(self, generator: torch.Generator | None, rademacher: bool) -> Tensor:
        """A flat Rademacher (±1) or standard-normal vector drawn from ``generator``."""
        device = generator.device if generator is not None else self.device
        if rademacher:
            r = torch.randint(0, 2, (self.size,), generator=generator, device=device).to(self.dtype) * 2 - 1
        else:
            r = torch.randn(self.size, generator=generator, device=device, dtype=self.dtype)
        return r.to(self.device)


@dataclass(frozen=True)
class LanczosResult:
    """What :func:`hessian_lanczos` returns.

    Attributes:
        ritz_values: eigenvalues of the tridiagonal ``T = QᵀHQ``, float64 on the CPU, ascending.
        residuals: ``‖H y_i − θ_i y_i‖`` of each Ritz pair (same order), ``β_{m+1}·|s_{m,i}|``: some
            eigenvalue of ``H`` lies within this distance of ``θ_i``.
        basis: the orthonormal Lanczos vectors ``Q`` as rows, ``(steps, size)``, in the operator's
            dtype and device; they span the Krylov space, which holds the extreme eigenvectors.
        steps: Lanczos steps done (= Hessian-vector products).
    """

    ritz_values: Tensor
    residuals: Tensor
    basis: Tensor
    steps: int

    @property
    def lambda_max(self) -> float:
        """Largest Ritz value: a lower bound of ``λ_max(H)`` that converges to it from below."""
        return float(self.ritz_values[-1])

    @property
    def lambda_min(self) -> float:
        """Smallest Ritz value: an upper bound of ``λ_min(H)`` that converges to it from above."""
        return float(self.ritz_values[0])

    @property
    def basis_trace(self) -> float:
        """``Tr(Q H Qᵀ) = Tr T = Σ θ_i`` (Q: the rows of :attr:`basis`), the part of ``Tr H`` inside the
        Krylov space, exact and without further products."""
        return float(self.ritz_values.sum())


def hessian_lanczos(
    hessian: HessianOperator,
    iters: int = 30,
    tol: float = 1e-3,
    top_k: int = 1,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """Extreme eigenvalues of the Hessian by Lanczos with full reorthogonalisation.

    From a random unit ``q₁``, step j computes ``w = H q_j − α_j q_j − β_j q_{j−1}`` with
    ``α_j = q_jᵀ H q_j``, removes its components along all earlier ``q`` (once more if that
    cancelled much of w: "twice is enough"), and sets ``β_{j+1} = ‖w‖``, ``q_{j+1} = w/β_{j+1}``.
    The eigenvalues θ of the tridiagonal ``T_m = tridiag(β, α, β) = QᵀHQ`` (Ritz values) converge
    to **both** ends of the spectrum at once, the extremes first: unlike power iteration, which
    returns the eigenvalue of largest ``|λ|`` (the negative end of an indefinite Hessian if that one
    is larger), Lanczos gives ``λ_max`` and ``λ_min`` separately, and the top-k after a few more
    steps. Reorthogonalisation
    keeps Q orthonormal in floating point, which prevents spurious copies of converged Ritz values
    ("ghosts") at the cost of storing all m vectors (``m · size`` elements).

    By Cauchy interlacing the i-th largest Ritz value is ≤ the i-th largest eigenvalue (and the
    i-th smallest ≥ the i-th smallest), so unconverged values err towards the inside of the
    spectrum. An eigenvalue of multiplicity > 1 is found once (one start vector).

    :param hessian: The Hessian operator of the frozen loss.
    :param iters: Maximum Lanczos steps m (>= 1); capped at the dimension.
    :param tol: Stop early once the residual of λ_min and of the ``top_k`` largest Ritz values is
        ``<= tol · max |θ|``; 0 runs all ``iters`` steps (or until the Krylov space is invariant).
    :param top_k: How many of the largest Ritz values must meet ``tol`` before stopping early (>= 1).
    :param generator: RNG for the start vector.
    :return: A :class:`LanczosResult`.
    """
    if not isinstance(hessian, HessianOperator):
        raise ValueError(f"hessian must be a HessianOperator, got {type(hessian).__name__}")
    iters = min(_check_int(iters, "iters", 1), hessian.size)
    top_k = _check_int(top_k, "top_k", 1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    breakdown = 100 * torch.finfo(hessian.dtype).eps
    basis = torch.empty(iters, hessian.size, dtype=hessian.dtype, device=hessian.device)
    q = hessian.random(generator, rademacher=False)
    q = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(iters):
        basis[j] = q
        w = hessian(q)
        alpha = float(w @ q)
        w = w - alpha * q
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        # classical Gram-Schmidt against all earlier vectors; a second pass only when the first one
        # cancelled much of w (Kahan-Parlett's "twice is enough" test), as then rounding is left behind
        done = basis[: j + 1]
        before = float(w.norm())
        w = w - done.T @ (done @ w)
        beta = float(w.norm())
        if beta < 0.7 * before:
            w = w - done.T @ (done @ w)
            beta = float(w.norm())
        alphas.append(alpha)
        theta, vectors = _tridiagonal_eigh(alphas, betas)
        residuals = beta * vectors[-1].abs()
        scale = float(theta.abs().max())
        watched = torch.cat([residuals[:1], residuals[-top_k:]])
        if scale == 0.0 or beta <= breakdown * scale or bool((watched <= tol * scale).all()):
            break
        betas.append(beta)
        q = w / beta
    steps = len(alphas)
    # an early stop keeps only the vectors it made, not the storage reserved for all ``iters``
    basis = basis if steps == iters else basis[:steps].clone()
    return LanczosResult(ritz_values=theta, residuals=residuals, basis=basis, steps=steps)


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of ``tridiag(β, α, β)``, float64."""
    diag = torch.tensor(alphas, dtype=torch.float64)
    off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
    return torch.linalg.eigh(torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1))


def curvature_directions(eigenvalues: Tensor, k: int = 10, eps: float = 0.01) -> int:
    """Directions of curvature: ``#{i ≤ k : λ_(i) > ε · λ_max}`` among the k largest eigenvalues.

    Lewandowski et al. (2023) tie the loss of plasticity to the loss of curvature directions: a
    network that can still learn has many directions of substantial positive curvature, one that
    has lost plasticity has few. ε makes the count scale-free (relative to ``λ_max``); k caps it at
    what Lanczos resolves (the top-k of an m-step run converge for k up to about m/3). From Ritz
    values, which interlace the eigenvalues from inside, the count tends to err low until they converge.
    A Hessian without positive curvature (``λ_max <= 0``) has 0.

    :param eigenvalues: 1-D eigenvalues (e.g. :attr:`LanczosResult.ritz_values`), any order.
    :param k: How many of the largest eigenvalues to look at (>= 1).
    :param eps: Relative threshold ε, in [0, 1] (0 counts the positive eigenvalues).
    :return: The count, an int in ``[0, min(k, len(eigenvalues))]``.
    """
    if not isinstance(eigenvalues, Tensor) or eigenvalues.dim() != 1 or eigenvalues.numel() == 0:
        raise ValueError("eigenvalues must be a non-empty 1-D tensor")
    k = _check_int(k, "k", 1)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
        raise ValueError(f"eps must be a number in [0, 1], got {eps!r}")
    top = eigenvalues.detach().to(torch.float64).sort(descending=True).values[:k]
    if not top[0] > 0:
        return 0
    return int((top > eps * top[0]).sum())


def deflated_trace(
    hessian: HessianOperator,
    n_probes: int,
    basis: Tensor | None = None,
    basis_trace: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """``Tr H`` as an exact part on an orthonormal basis plus Hutchinson on the deflated rest.

    With ``Q`` orthonormal rows (``basis``) and ``P = I − QᵀQ``, ``Tr H = Tr(QHQᵀ) + Tr(PHP)``
    (the cross terms vanish since ``PQᵀ = 0``). The second term is estimated with Rademacher probes,
    ``t_i = (Pz_i)ᵀH(Pz_i)``, ``E[t_i] = Tr(PHP)``, ``Var t_i = 2 Σ_{a≠b} (PHP)_ab²``: deflating the
    large-|λ| directions removes most of Hutchinson's variance when the spectrum is dominated by its
    ends (Hutch++, Meyer et al. 2021, deflates a random sketch; the Lanczos basis, which holds both
    ends of an indefinite spectrum, is a Krylov-aware version of it and costs no extra products).

    **Standard error.** Given ``Q`` the estimate is the constant ``Tr(QHQᵀ)`` plus the mean of n
    i.i.d. ``t_i``, so ``SE = std(t)/√n`` (sample std) estimates its conditional standard deviation.
    The estimator is unbiased for every ``Q`` (the probes are drawn independently of ``Q``), so its
    conditional mean is ``Tr H`` whatever ``Q`` is, and the total variance is ``E_Q[Var(·|Q)]``: the
    reported SE² is also an unbiased estimate of the variance over independent runs (basis and
    probes redrawn), which is what the tests check.

    :param hessian: The Hessian operator of the frozen loss.
    :param n_probes: Rademacher probes for the residual (>= 2, for the standard error).
    :param basis: ``(r, size)`` orthonormal rows, or ``None`` for plain Hutchinson.
    :param basis_trace: ``Tr(QHQᵀ)`` if already known (a Lanczos run's ``Tr T``); else computed
        with r more Hessian-vector products.
    :param generator: RNG for the probes.
    :return: ``(trace estimate, standard error)``.
    """
    if not isinstance(hessian, HessianOperator):
        raise ValueError(f"hessian must be a HessianOperator, got {type(hessian).__name__}")
    n_probes = _check_int(n_probes, "n_probes", 2)
    exact = 0.0
    if basis is not None:
        if basis.dim() != 2 or basis.shape[1] != hessian.size:
            raise ValueError(f"basis must have shape (r, {hessian.size}), got {tuple(basis.shape)}")
        if basis_trace is None:
            basis_trace = sum(float(q @ hessian(q)) for q in basis)
        exact = float(basis_trace)
    samples = []
    for _ in range(n_probes):
        z = hessian.random(generator, rademacher=True)
        if basis is not None:
            z = z - basis.T @ (basis @ z)
        samples.append(float(z @ hessian(z)))
    values = torch.tensor(samples, dtype=torch.float64)
    return exact + float(values.mean()), float(values.std(correction=1) / math.sqrt(n_probes))


def hutchpp_trace(
    hessian: HessianOperator, n_hvps: int = 30, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """Hutch++ (Meyer et al. 2021): ``Tr H`` from a randomized low-rank sketch plus Hutchinson.

    A third of the budget sketches the range of H, ``Q = orth(H S)`` with S of s = n/3 Rademacher
    columns (s products); ``Tr(QᵀHQ)`` is then exact (s products) and the remaining third are
    Rademacher probes of the deflated ``PHP`` (:func:`deflated_trace`, whose standard error, the
    sample SE of the residual probes, applies unchanged since the probes are independent of S).

    :param hessian: The Hessian operator of the frozen loss.
    :param n_hvps: Hessian-vector products in all (>= 6: s = n // 3 >= 2, residual probes n − 2s).
    :param generator: RNG for the sketch and the probes.
    :return: ``(trace estimate, standard error)``.
    """
    n_hvps = _check_int(n_hvps, "n_hvps", 6)
    sketch = n_hvps // 3
    images = torch.stack([hessian(hessian.random(generator, rademacher=True)) for _ in range(sketch)])
    basis = torch.linalg.qr(images.T.to(torch.float64)).Q.T.to(hessian.dtype)
    return deflated_trace(hessian, n_hvps - 2 * sketch, basis, None, generator)


def hutchinson_trace(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    n_probes: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Hutchinson estimate of the Hessian trace with Rademacher probes, ``E[zᵀHz] = Tr H``.

    Its per-probe variance is ``2 Σ_{i≠j} H_ij²``, large for an indefinite Hessian whose trace
    partly cancels: report the standard error beside it (or deflate, :func:`deflated_trace`).

    :param loss_fn: Zero-argument closure returning the scalar loss on a frozen batch.
    :param params: Parameters (requires_grad) spanning the Hessian.
    :param n_probes: Number of probe vectors (>= 2, for the standard error).
    :param generator: RNG for the probes.
    :return: ``(mean of zᵀHz, standard error of that mean)``.
    """
    n_probes = _check_int(n_probes, "n_probes", 2)
    return deflated_trace(HessianOperator(loss_fn, params), n_probes, generator=generator)


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
