"""Activity metrics on captured activations: fraction of active units and τ-dormant units.

Every function returns tensors on the input's device and never syncs with the host, so they are
safe to call on every update. Activations are laid out with the batch on dim 0 and units
(features or conv channels) on dim 1; any further dims are spatial.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "dormant_mask",
    "dormant_ratio",
    "dormant_ratio_over_layers",
    "dormant_scores",
    "fau",
]


def _check_activation(act: object, min_dim: int, what: str = "activation") -> Tensor:
    if not isinstance(act, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(act).__name__}")
    if act.dim() < min_dim or act.numel() == 0:
        raise ValueError(
            f"{what} must be a non-empty tensor with at least {min_dim} dims, got shape {tuple(act.shape)}"
        )
    return act


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be a number in [0, 1], got {tau!r}")
    return float(tau)


def _check_layers(acts: Sequence[Tensor], min_dim: int) -> list[Tensor]:
    if isinstance(acts, Tensor) or not isinstance(acts, Sequence) or len(acts) == 0:
        raise ValueError(f"expected a non-empty sequence of activation tensors, got {type(acts).__name__}")
    return [_check_activation(a, min_dim, f"activation[{i}]") for i, a in enumerate(acts)]


def fau(activations: Tensor) -> Tensor:
    """Fraction of active units: ``#(activations > 0) / #activations``.

    Every element counts once, so a conv map (N, C, H, W) counts each (channel, y, x) as a unit
    and the batch multiplies the count.

    :param activations: Post-activation tensor of any shape.
    :return: 0-d float32 tensor.
    """
    act = _check_activation(activations, 0)
    return (act > 0).sum().to(torch.float32) / act.numel()


def dormant_scores(activations: Tensor) -> Tensor:
    """Normalised unit activity of ReDo (Sokar et al. 2023).

    ``s_i = mean_x |h_i(x)| / mean_k mean_x |h_k(x)|`` where the inner mean runs over the batch
    and, for conv maps, over space (one score per channel).

    :param activations: Tensor (N, C) or (N, C, *spatial).
    :return: Float tensor (C,). If every unit is silent the scores are all 0 (all dormant)
        rather than NaN.
    """
    act = _check_activation(activations, 2)
    dims = [0, *range(2, act.dim())]
    per_unit = act.abs().mean(dim=dims)
    layer_mean = per_unit.mean()
    # a fully silent layer would divide 0 by 0; it is fully dormant, so report zeros
    safe = torch.where(layer_mean > 0, layer_mean, torch.ones_like(layer_mean))
    return torch.where(layer_mean > 0, per_unit / safe, torch.zeros_like(per_unit))


def dormant_mask(activations: Tensor, tau: float) -> Tensor:
    """Boolean mask (C,) of τ-dormant units: ``s_i <= tau`` (see :func:`dormant_scores`).

    :param activations: Tensor (N, C) or (N, C, *spatial).
    :param tau: Threshold in [0, 1] (ReDo agents use 0.1; 0.025 is the logging default).
    """
    tau = _check_tau(tau)
    return dormant_scores(activations) <= tau


def dormant_ratio(activations: Tensor, tau: float) -> Tensor:
    """Fraction of τ-dormant units of one layer.

    :param activations: Tensor (N, C) or (N, C, *spatial).
    :param tau: Threshold in [0, 1].
    :return: 0-d float32 tensor.
    """
    mask = dormant_mask(activations, tau)
    return mask.to(torch.float32).mean()


def dormant_ratio_over_layers(activations: Sequence[Tensor], tau: float) -> Tensor:
    """Unit-weighted dormant ratio over layers: ``Σ_l #dormant_l / Σ_l #units_l``.

    A conv layer contributes one unit per channel.

    :param activations: One tensor (N, C) or (N, C, *spatial) per layer.
    :param tau: Threshold in [0, 1].
    :return: 0-d float32 tensor.
    """
    tau = _check_tau(tau)
    acts = _check_layers(activations, 2)
    masks = [dormant_mask(a, tau) for a in acts]
    dormant = torch.stack([m.sum() for m in masks]).sum()
    units = sum(m.numel() for m in masks)
    return dormant.to(torch.float32) / units
