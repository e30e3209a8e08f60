r"""Neural collapse of a regression critic's penultimate features (this project's protocol).

Neural collapse (NC, Papyan et al. 2020) is defined for classifiers. A critic regresses a TD
target and has no classes, and no public work defines NC for RL critic features, so this module
fixes a protocol of its own. It is measured at probe time on a probe batch (replay samples, and
optionally recent on-policy states: Hui et al. find that collapse on training data differs from
collapse on fresh data).

**Inputs.** ``features`` H (n × d): the critic's penultimate features (input of the last Linear
layer of one Q head) on the probe batch; ``targets`` y (n,): the detached TD targets of the same
samples; ``head_weight`` w (d,) and ``head_bias`` b: that Q head's last layer, so Q̂_i = w·h_i + b.

**Classes.** K equal-count quantile bins of the targets (K = ``num_bins``, default 10,
2 ≤ K ≤ n). Samples are ranked by a stable argsort of y (ties keep batch order) and sample of
rank r goes to bin ``c = r·K // n``, so bin sizes differ by at most one. Bin edges, used to bin any
other value, are midpoints between the last target of one bin and the first of the next (in sorted
order); a value equal to an edge goes to the upper bin. With distinct targets, binning the targets
by these edges reproduces the rank bins exactly.

**Statistics** (all in float64). μ_c = mean of h over bin c, μ_G = mean of all h (the two
definitions of μ_G agree when K divides n), M̃ = [μ_1 − μ_G, …, μ_K − μ_G] (d × K).

* ``nc1`` = Tr(Σ_W Σ_B⁺) / K with Σ_W = (1/n) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and
  Σ_B = (1/K) M̃M̃ᵀ. Computed exactly, without d × d matrices, as
  ``mean_i ‖M̃⁺ (h_i − μ_{y_i})‖²``: since (M̃M̃ᵀ)⁺ = M̃⁺ᵀM̃⁺, Σ_B⁺ = K·M̃⁺ᵀM̃⁺ and
  Tr(Σ_W Σ_B⁺) = (K/n) Σ_i ‖M̃⁺(h_i − μ_{y_i})‖². The pseudo-inverse uses an explicit relative
  cutoff ``rcond`` (default 1e-8) on the singular values of M̃; it drops the rounding-noise
  singular value left where Σ_c (μ_c − μ_G) = 0 makes M̃ rank-deficient (K divides n). 0 when
  the features of each bin coincide.
* ``nc2_equinorm`` = std / mean of ‖μ_c − μ_G‖ over bins (coefficient of variation).
* ``nc2_equiangular`` = std of cos(μ_c − μ_G, μ_c' − μ_G) over pairs c < c'. Ordered bins of a
  scalar target are not expected to form a simplex, so NC2 is reported on class means only, as
  descriptive statistics. Both stds are population stds (ddof 0), so K = 2 is defined.
* ``nc3`` = |cos(w, u_1)| with u_1 the top left singular vector of M̃ (the principal direction of
  the class means): 1 when the head reads the features along the axis the bins spread on.
* ``nc4`` = fraction of samples whose prediction bin, bin(Q̂_i) with the **target** edges, equals
  the bin of the nearest class mean, argmin_c ‖h_i − μ_c‖.
* ``nrc1`` = 1 − λ_1 / Σ_j λ_j for the eigenvalues λ of the centred feature covariance (neural
  regression collapse of Andriopoulos et al. 2024, normalised: the share of feature variance off
  the top principal direction; their target dimension is 1 here). 0 for rank-one (or constant)
  centred features.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlplastic.monitor.rank import singular_values

__all__ = ["bin_values", "collapse_geometry", "nc1_differentiable", "neural_collapse", "quantile_bins"]

_EPS = 1e-12


def _check_num_bins(num_bins: int, n: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not 2 <= num_bins <= n:
        raise ValueError(f"num_bins must be an int with 2 <= num_bins <= n = {n} samples, got {num_bins!r}")
    return num_bins


def _check_targets(targets: object) -> Tensor:
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.numel() == 0:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a non-empty 1-D tensor (n,), got {shape}")
    return targets


def quantile_bins(targets: Tensor, num_bins: int = 10) -> tuple[Tensor, Tensor]:
    """Equal-count quantile bins of a scalar target.

    :param targets: Tensor (n,).
    :param num_bins: Number of bins K, 2 <= K <= n.
    :return: ``(labels, edges)``: labels (n,) int64 in [0, K) with ``label = rank·K // n`` (rank
        from a stable argsort), and edges (K−1,) in ``targets``' dtype for :func:`bin_values`.
    """
    targets = _check_targets(targets)
    n = targets.numel()
    num_bins = _check_num_bins(num_bins, n)
    order = torch.argsort(targets, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(n, device=targets.device)
    labels = ranks * num_bins // n
    sorted_targets = targets[order]
    # first rank of bin k is ceil(k·n/K); the edge sits halfway between it and its predecessor
    bins = torch.arange(1, num_bins, device=targets.device)
    first = (bins * n + num_bins - 1) // num_bins
    edges = (sorted_targets[first - 1] + sorted_targets[first]) / 2
    return labels, edges


def bin_values(values: Tensor, edges: Tensor) -> Tensor:
    """Bin index of each value given sorted edges: the number of edges ``<=`` the value."""
    return torch.searchsorted(edges.contiguous(), values.contiguous(), right=True)


def _bin_means(h: Tensor, labels: Tensor, num_bins: int) -> Tensor:
    """(K, d) mean of the rows of ``h`` in each bin; every bin is non-empty when K <= n."""
    counts = torch.bincount(labels, minlength=num_bins).to(h.dtype)
    sums = torch.zeros(num_bins, h.shape[1], dtype=h.dtype, device=h.device)
    sums.index_add_(0, labels, h)
    return sums / counts[:, None]


def nc1_differentiable(features: Tensor, labels: Tensor, num_bins: int, rcond: float = 1e-8) -> Tensor:
    r"""NC1 of ``features`` with class ``labels``, differentiable w.r.t. the features: the one NC1.

    :func:`neural_collapse` reports it and the anti-collapse regularizer
    (:class:`rlplastic.interventions.nc_reg.NCRegularizer`) trains on it. ``mean_i ‖M̃⁺(h_i − μ_{y_i})‖²``
    (= Tr(Σ_W Σ_B⁺)/K, see the module docstring), in float64 with the relative cutoff ``rcond`` on M̃'s
    singular values. float64 matters: M̃ always has a null direction (Σ_c n_c(μ_c − μ_G) = 0), and in
    float32 its rounding-noise singular value (~1e-7·σ_max) would pass a 1e-8 cutoff and blow NC1 up. The
    gradient of ``torch.linalg.pinv`` is the analytic pseudo-inverse derivative, correct while the rank
    stays fixed, which it does here (the null direction is structural).

    :param features: (n, d) features h, any float dtype.
    :param labels: (n,) int64 class of each sample, every class in [0, num_bins) non-empty.
    :param num_bins: K.
    :param rcond: relative singular-value cutoff of the pseudo-inverse.
    :return: 0-d float64 tensor.
    """
    h = features.to(torch.float64)
    counts = torch.bincount(labels, minlength=num_bins).to(h)
    means = torch.zeros(num_bins, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, labels, h)
    means = means / counts[:, None]
    centred = means - h.mean(dim=0)  # rows are the columns of M̃
    within = h - means[labels]
    pinv = torch.linalg.pinv(centred.T, rtol=rcond)  # M̃⁺, (K, d); e_i @ M̃⁺ᵀ gives the coefficients
    return (within @ pinv.T).square().sum(dim=1).mean()


def neural_collapse(
    features: Tensor,
    targets: Tensor,
    head_weight: Tensor,
    head_bias: float | Tensor | None = None,
    num_bins: int = 10,
    rcond: float = 1e-8,
) -> dict[str, float]:
    """Neural-collapse statistics of regression features with target quantile bins as classes.

    See the module docstring for the protocol and the exact definitions.

    :param features: Penultimate features H (n, d).
    :param targets: Detached regression (TD) targets (n,).
    :param head_weight: Last-layer weight w, shape (d,) or (1, d).
    :param head_bias: Last-layer bias b (float, 1-element tensor) or None for no bias.
    :param num_bins: Number of quantile bins K, 2 <= K <= n.
    :param rcond: Relative singular-value cutoff of the pseudo-inverse of M̃ (in (0, 1)).
    :return: ``{"nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "nrc1"}`` as floats.
    """
    if not isinstance(features, Tensor) or features.dim() != 2 or features.numel() == 0:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a non-empty 2-D tensor (n, d), got {shape}")
    n, d = features.shape
    targets = _check_targets(targets)
    if targets.numel() != n:
        raise ValueError(f"targets must have n = {n} entries like features, got {targets.numel()}")
    if not isinstance(head_weight, Tensor) or head_weight.numel() != d or head_weight.dim() > 2:
        shape = tuple(head_weight.shape) if isinstance(head_weight, Tensor) else head_weight
        raise ValueError(f"head_weight must have shape ({d},) or (1, {d}), got {shape}")
    if isinstance(head_bias, Tensor) and head_bias.numel() != 1:
        raise ValueError(f"head_bias must be a scalar, got shape {tuple(head_bias.shape)}")
    if head_bias is not None and not isinstance(head_bias, (Tensor, int, float)):
        raise ValueError(f"head_bias must be a float, a 1-element tensor or None, got {head_bias!r}")
    num_bins = _check_num_bins(num_bins, n)
    if isinstance(rcond, bool) or not isinstance(rcond, (int, float)) or not 0 < rcond < 1:
        raise ValueError(f"rcond must be a number in (0, 1), got {rcond!r}")

    h = features.detach().to(torch.float64)
    y = targets.detach().to(device=h.device, dtype=torch.float64)
    w = head_weight.detach().reshape(-1).to(device=h.device, dtype=torch.float64)
    if head_bias is None:
        b = torch.zeros((), dtype=torch.float64, device=h.device)
    elif isinstance(head_bias, Tensor):
        b = head_bias.detach().reshape(()).to(device=h.device, dtype=torch.float64)
    else:
        b = torch.tensor(float(head_bias), dtype=torch.float64, device=h.device)

    labels, edges = quantile_bins(y, num_bins)
    means = _bin_means(h, labels, num_bins)
    global_mean = h.mean(dim=0)
    centred = means - global_mean  # rows are the columns of M̃

    nc1 = nc1_differentiable(h, labels, num_bins, rcond)

    norms = torch.linalg.vector_norm(centred, dim=1)
    nc2_equinorm = norms.std(correction=0) / norms.mean().clamp_min(_EPS)
    unit = centred / norms.clamp_min(_EPS)[:, None]
    cosines = unit @ unit.T
    pairs = torch.triu_indices(num_bins, num_bins, offset=1, device=h.device)
    nc2_equiangular = cosines[pairs[0], pairs[1]].std(correction=0)

    top_direction = torch.linalg.svd(centred.T, full_matrices=False).U[:, 0]
    nc3 = (w @ top_direction).abs() / torch.linalg.vector_norm(w).clamp_min(_EPS)

    prediction_bins = bin_values(h @ w + b, edges)
    nearest = torch.cdist(h, means).argmin(dim=1)
    nc4 = (prediction_bins == nearest).to(torch.float64).mean()

    sv = singular_values(h, center=True)
    energy = sv.square()
    total = energy.sum()
    nrc1 = torch.where(total > 0, 1 - energy.max() / total.clamp_min(_EPS), torch.zeros_like(total))

    return {
        "nc1": float(nc1),
        "nc2_equinorm": float(nc2_equinorm),
        "nc2_equiangular": float(nc2_equiangular),
        "nc3": float(nc3),
        "nc4": float(nc4),
        "nrc1": float(nrc1),
    }


def collapse_geometry(features: Tensor, targets: Tensor, head_weight: Tensor, num_bins: int = 10) -> dict[str, Tensor]:
    """The class-mean geometry behind the NC statistics, in the plane of the means' top-2 directions.

    Same bins and means as :func:`neural_collapse`; ``u_1, u_2`` are the top left singular vectors
    of M̃ (``u_1`` is NC3's direction). Everything is centred by μ_G before projecting. For a
    picture of the geometry (:func:`rlplastic.monitor.figures.collapse_figure`).

    :param features: Penultimate features H (n, d).
    :param targets: Detached TD targets (n,).
    :param head_weight: Last-layer weight w, (d,) or (1, d).
    :param num_bins: Number of quantile bins K, 2 <= K <= n.
    :return: float64 tensors ``sample_xy`` (n, 2), ``mean_xy`` (K, 2), ``head_xy`` (2,) (of the unit
        head weight), ``cosines`` (K, K) of the centred means, ``explained`` (2,) share of
        ``‖M̃‖²_F`` along u_1 and u_2; and ``labels`` (n,) int64 bins. A second direction that does
        not exist (d = 1, or all means on a line) projects to 0.
    """
    if not isinstance(features, Tensor) or features.dim() != 2 or features.numel() == 0:
        raise ValueError("features must be a non-empty 2-D tensor (n, d)")
    n, d = features.shape
    targets = _check_targets(targets)
    if targets.numel() != n:
        raise ValueError(f"targets must have n = {n} entries like features, got {targets.numel()}")
    if not isinstance(head_weight, Tensor) or head_weight.numel() != d:
        raise ValueError(f"head_weight must have {d} entries")
    num_bins = _check_num_bins(num_bins, n)
    h = features.detach().to(torch.float64)
    y = targets.detach().to(device=h.device, dtype=torch.float64)
    w = head_weight.detach().reshape(-1).to(device=h.device, dtype=torch.float64)
    labels, _ = quantile_bins(y, num_bins)
    global_mean = h.mean(dim=0)
    centred = _bin_means(h, labels, num_bins) - global_mean
    svd = torch.linalg.svd(centred.T, full_matrices=False)
    directions = h.new_zeros(d, 2)
    kept = min(2, svd.U.shape[1])
    directions[:, :kept] = svd.U[:, :kept]
    energy = h.new_zeros(2)
    energy[:kept] = svd.S[:kept].square()
    total = svd.S.square().sum()
    norms = torch.linalg.vector_norm(centred, dim=1).clamp_min(_EPS)
    unit = centred / norms[:, None]
    return {
        "sample_xy": (h - global_mean) @ directions,
        "mean_xy": centred @ directions,
        "head_xy": (w / torch.linalg.vector_norm(w).clamp_min(_EPS)) @ directions,
        "cosines": unit @ unit.T,
        "explained": energy / total.clamp_min(_EPS),
        "labels": labels,
    }
