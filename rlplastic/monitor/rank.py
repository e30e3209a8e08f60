"""Feature-rank and parameter-norm metrics.

Rank metrics work on a feature matrix Φ (n samples × d units). Features are **not centred** by
default, as in the reference RL code (Kumar et al. 2021 and followers); pass ``center=True`` to
subtract the column means first. ``srank`` uses the definition of Kumar et al. 2021, the smallest k
with ``Σ_{i≤k} σ_i / Σ σ_i ≥ 1 − δ`` (their public code returns one less).

:func:`singular_values` may sync with the host (LAPACK error checks); the other rank functions and
the parameter utilities return device tensors without syncing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "effective_rank",
    "feature_norm",
    "grad_norm",
    "param_distance",
    "singular_values",
    "snapshot_params",
    "srank",
    "weight_rms",
]


def _check_matrix(phi: object, what: str = "phi") -> Tensor:
    if not isinstance(phi, Tensor) or phi.dim() != 2 or phi.numel() == 0:
        shape = tuple(phi.shape) if isinstance(phi, Tensor) else type(phi).__name__
        raise ValueError(f"{what} must be a non-empty 2-D tensor (n, d), got {shape}")
    return phi


def _check_spectrum(sv: object) -> Tensor:
    if not isinstance(sv, Tensor) or sv.dim() != 1 or sv.numel() == 0:
        shape = tuple(sv.shape) if isinstance(sv, Tensor) else type(sv).__name__
        raise ValueError(f"sv must be a non-empty 1-D tensor of singular values, got {shape}")
    return sv


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be a number in the open interval (0, 1), got {delta!r}")
    return float(delta)


def singular_values(phi: Tensor, center: bool = False) -> Tensor:
    """Singular values of a feature matrix, in float64, sorted in descending order.

    For a tall Φ (n > d) they come from the eigenvalues of the d×d Gram matrix ΦᵀΦ (clamped at 0,
    square-rooted), which is much cheaper than an SVD of Φ. Squaring the condition number loses
    singular values below ≈1e-7·σ_max (eigenvalues at rounding level are set to 0), which does not
    matter for srank or effective rank. Otherwise ``torch.linalg.svdvals`` is used.

    :param phi: Feature matrix (n, d).
    :param center: Subtract the column (per-unit) means before decomposing.
    :return: float64 tensor of length min(n, d) on ``phi``'s device.
    """
    phi = _check_matrix(phi).to(torch.float64)
    if center:
        phi = phi - phi.mean(dim=0, keepdim=True)
    n, d = phi.shape
    if n > d:
        eig = torch.linalg.eigvalsh(phi.T @ phi)
        # eigenvalues at rounding level are zeros of a rank-deficient Φ; their square roots
        # (≈1e-8·σ_max) would otherwise inflate the effective rank
        noise = eig[-1].abs() * (max(n, d) * torch.finfo(torch.float64).eps)
        eig = torch.where(eig > noise, eig, torch.zeros_like(eig))
        return eig.sqrt().flip(0)
    return torch.linalg.svdvals(phi)


def srank(sv: Tensor, delta: float = 0.01) -> Tensor:
    """Effective feature rank of Kumar et al. 2021.

    ``srank_δ = min{k : Σ_{i≤k} σ_i / Σ_i σ_i ≥ 1 − δ}`` with σ sorted in descending order.

    :param sv: Non-negative singular values (any order; sorted here).
    :param delta: Threshold δ in (0, 1).
    :return: 0-d int64 tensor; 0 when all singular values are 0.
    """
    delta = _check_delta(delta)
    sv = _check_spectrum(sv)
    sorted_sv = torch.sort(sv, descending=True).values
    total = sorted_sv.sum()
    cumulative = torch.cumsum(sorted_sv, dim=0)
    # k-1 prefixes fall short of the threshold, so k = (#short prefixes) + 1
    k = (cumulative < (1.0 - delta) * total).sum() + 1
    k = k.clamp_max(sv.numel())
    return torch.where(total > 0, k, torch.zeros_like(k))


def effective_rank(sv: Tensor) -> Tensor:
    """Effective rank of Roy & Vetterli 2007: ``exp(−Σ p_i log p_i)`` with ``p = σ / Σσ``.

    :param sv: Non-negative singular values.
    :return: 0-d float tensor in [1, len(sv)]; 0 when all singular values are 0.
    """
    sv = _check_spectrum(sv)
    total = sv.sum()
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    entropy = torch.special.entr(sv / safe_total).sum()
    return torch.where(total > 0, entropy.exp(), torch.zeros_like(total))


def feature_norm(phi: Tensor) -> Tensor:
    """Mean L2 norm of the rows of Φ (one feature vector per sample).

    :param phi: Feature matrix (n, d).
    :return: 0-d tensor.
    """
    return torch.linalg.vector_norm(_check_matrix(phi), dim=1).mean()


def _check_module(module: object) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    params = list(module.parameters())
    if not params:
        raise ValueError(f"module {type(module).__name__} has no parameters")
    return module


def weight_rms(module: nn.Module) -> Tensor:
    """Root mean square over every parameter element of ``module`` (weights and biases).

    :param module: Module with at least one parameter.
    :return: 0-d float32 tensor on the parameters' device.
    """
    params = [p.detach() for p in _check_module(module).parameters()]
    square_sum = torch.stack([p.to(torch.float32).square().sum() for p in params]).sum()
    return (square_sum / sum(p.numel() for p in params)).sqrt()


def snapshot_params(module: nn.Module) -> dict[str, Tensor]:
    """Detached copies of ``module.named_parameters()``, for :func:`param_distance` later."""
    return {name: p.detach().clone() for name, p in _check_module(module).named_parameters()}


def param_distance(module: nn.Module, init_params: Mapping[str, Tensor]) -> Tensor:
    """Global L2 distance ``sqrt(Σ ‖θ − θ_0‖²)`` between current and initial parameters.

    :param module: Module whose ``named_parameters()`` are compared.
    :param init_params: Name → initial value, e.g. from :func:`snapshot_params`; must have exactly
        the module's parameter names.
    :return: 0-d float32 tensor.
    """
    named = dict(_check_module(module).named_parameters())
    if set(named) != set(init_params):
        missing = sorted(set(named) - set(init_params))
        extra = sorted(set(init_params) - set(named))
        raise ValueError(f"init_params must have the module's parameter names; missing {missing}, unexpected {extra}")
    squares = [
        (p.detach().to(torch.float32) - init_params[name].to(p.device, torch.float32)).square().sum()
        for name, p in named.items()
    ]
    return torch.stack(squares).sum().sqrt()


def grad_norm(grads: Iterable[Tensor | None]) -> Tensor:
    """Global L2 norm ``sqrt(Σ ‖g‖²)`` of gradients, e.g. ``torch.autograd.grad(..., allow_unused=True)``'s
    or ``[p.grad for p in module.parameters()]`` after ``backward()`` (``None`` entries are skipped).

    :param grads: Gradient tensors (or ``None``), summed in float32.
    :return: 0-d float32 tensor; 0 (on the CPU) if there is no gradient.
    """
    squares = [g.detach().to(torch.float32).square().sum() for g in grads if g is not None]
    if not squares:
        return torch.zeros((), dtype=torch.float32)
    return torch.stack(squares).sum().sqrt()
