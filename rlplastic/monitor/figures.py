"""Pictures of a probe, drawn at probe time: per-layer activity, the critic's feature spectrum, the
last-layer Hessian spectrum and the neural-collapse geometry.

A scalar per metric says *that* plasticity changes; these say *where* (which layer goes dormant),
*how* (the shape of the spectrum behind an srank value) and *what the critic's features look like*
(how the class means of TD-target bins sit against each other and against the head). Each function
takes arrays the probe has already computed (no forward pass here) and returns an ``(H, W, 3)``
``uint8`` RGB image, ready for ``SummaryWriter.add_image(tag, img, step, dataformats="HWC")``.

Figures are small (:data:`FIGSIZE` inches at :data:`DPI`: 480 × 280 pixels) and drawn with
matplotlib's Agg canvas directly (``matplotlib.figure.Figure``, no pyplot): no GUI backend, no
global figure registry, nothing left open. matplotlib is imported on first use, so importing the
monitor stays cheap when figures are off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlplastic.monitor.config import ACTOR, CRITIC, ENCODER

__all__ = [
    "DPI",
    "FIGSIZE",
    "FIGURE_TAGS",
    "CollapseGeometry",
    "FigureInputs",
    "LayerActivity",
    "activity_figure",
    "collapse_figure",
    "draw_probe_figures",
    "hessian_spectrum_figure",
    "spectrum_figure",
]

#: Figure size in inches and resolution: 6 × 3.5 in at 80 dpi is a 480 × 280 image (~400 kB raw).
FIGSIZE: tuple[float, float] = (6.0, 3.5)
DPI: int = 80

#: Image tag of each figure.
FIGURE_TAGS: dict[str, str] = {
    "activity": "plasticity/figures/activity",
    "critic_spectrum": "plasticity/figures/critic_spectrum",
    "hessian_spectrum": "plasticity/figures/hessian_spectrum",
    "collapse": "plasticity/figures/collapse",
}

_MODULE_COLOURS = {ENCODER: "tab:green", ACTOR: "tab:orange", CRITIC: "tab:blue"}


@dataclass(frozen=True)
class LayerActivity:
    """Activity of one ReLU layer on the probe batch.

    Attributes:
        module: the monitored module (``encoder``, ``actor``, ``critic``).
        layer: the ReLU's name inside the module (``Q1.1``).
        active: fraction of activations > 0 (FAU on the probe batch).
        dormant: τ-dormant fraction of units.
    """

    module: str
    layer: str
    active: float
    dormant: float


@dataclass(frozen=True)
class CollapseGeometry:
    """Class means of the TD-target bins in the plane of their top-2 principal directions.

    Directions ``u_1, u_2`` are the top left singular vectors of the centred class means
    ``M̃ = [μ_1 − μ_G, …, μ_K − μ_G]``; everything is projected on them after subtracting ``μ_G``.

    Attributes:
        sample_xy: (n, 2) projections of the probe samples' features.
        labels: (n,) bin of each sample, 0 = lowest TD targets.
        mean_xy: (K, 2) projections of the class means.
        head_xy: (2,) projection of the unit head weight ``w / ‖w‖`` (NC3 reads its alignment with u_1).
        cosines: (K, K) cosines between centred class means (NC2's equiangularity).
        explained: (2,) share of the between-class variance along u_1 and u_2.
    """

    sample_xy: np.ndarray
    labels: np.ndarray
    mean_xy: np.ndarray
    head_xy: np.ndarray
    cosines: np.ndarray
    explained: np.ndarray


@dataclass
class FigureInputs:
    """What a probe keeps for its figures; a figure whose inputs are ``None``/empty is not drawn.

    Attributes:
        step: the agent step of the probe (shown in each title).
        activity: per-layer activity of every monitored module, in layer order.
        dormant_tau: τ of the dormant fractions.
        critic_singular_values: singular values of the critic's penultimate features (descending).
        critic_srank: srank_δ of those singular values.
        srank_delta: δ of both sranks.
        hessian_eigenvalues: eigenvalues of the exact last-layer Hessian of Q1 (descending, >= 0).
        hessian_srank: srank_δ of that spectrum.
        collapse: the class-mean geometry of the TD-target bins.
    """

    step: int
    activity: list[LayerActivity] = field(default_factory=list)
    dormant_tau: float = 0.025
    critic_singular_values: np.ndarray | None = None
    critic_srank: int | None = None
    srank_delta: float = 0.01
    hessian_eigenvalues: np.ndarray | None = None
    hessian_srank: int | None = None
    collapse: CollapseGeometry | None = None


def draw_probe_figures(inputs: FigureInputs) -> dict[str, np.ndarray]:
    """Every figure ``inputs`` has data for, keyed by its :data:`FIGURE_TAGS` tag."""
    images = {}
    if inputs.activity:
        images[FIGURE_TAGS["activity"]] = activity_figure(inputs.activity, inputs.dormant_tau, inputs.step)
    if inputs.critic_singular_values is not None and inputs.critic_srank is not None:
        images[FIGURE_TAGS["critic_spectrum"]] = spectrum_figure(
            inputs.critic_singular_values, inputs.critic_srank, inputs.srank_delta, inputs.step
        )
    if inputs.hessian_eigenvalues is not None and inputs.hessian_srank is not None:
        images[FIGURE_TAGS["hessian_spectrum"]] = hessian_spectrum_figure(
            inputs.hessian_eigenvalues, inputs.hessian_srank, inputs.srank_delta, inputs.step
        )
    if inputs.collapse is not None:
        images[FIGURE_TAGS["collapse"]] = collapse_figure(inputs.collapse, inputs.step)
    return images


# -- the figures ----------------------------------------------------------------------------------


def activity_figure(layers: Sequence[LayerActivity], tau: float, step: int) -> np.ndarray:
    """Grouped bars per ReLU layer: active fraction (FAU) and τ-dormant fraction on the probe batch.

    Bars are coloured by module; the dormant bar is hatched. Layers run left to right in each
    module's forward order, so a collapse that starts in one layer and spreads shows as a slope.
    """
    if not layers:
        raise ValueError("activity_figure needs at least one layer")
    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    colours = [_MODULE_COLOURS.get(layer.module, "tab:gray") for layer in layers]
    width = 0.4
    ax.bar(x - width / 2, [layer.active for layer in layers], width, color=colours, label="active (> 0)")
    ax.bar(x + width / 2, [layer.dormant for layer in layers], width, color=colours, alpha=0.45, hatch="//",
           edgecolor="black", linewidth=0.3, label=f"dormant (τ = {tau:g})")  # fmt: skip
    ax.set_xticks(x, [f"{layer.module}\n{layer.layer}" for layer in layers], fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of units", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    ax.set_title(f"Layer activity on the probe batch · agent step {step}", fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.17)
    return _render(fig)


def spectrum_figure(singular_values: np.ndarray, srank: int, delta: float, step: int) -> np.ndarray:
    """Critic penultimate features: normalised singular values (log scale) and their cumulative share.

    The dashed line marks srank_δ, the number of singular values holding a (1 − δ) share of
    ``Σ σ_i``; the right panel shows where the cumulative share crosses 1 − δ.
    """
    sv = _spectrum(singular_values, "singular_values")
    fig = _figure()
    left, right = fig.subplots(1, 2)
    index = np.arange(1, sv.size + 1)
    total = sv.sum()
    if total > 0:
        positive = sv > 0
        left.semilogy(index[positive], sv[positive] / sv[0], color="tab:blue", linewidth=1.2)
        right.plot(index, np.cumsum(sv) / total, color="tab:blue", linewidth=1.2)
    else:
        left.text(0.5, 0.5, "all singular values are 0", ha="center", va="center", transform=left.transAxes)
    for ax in (left, right):
        if srank > 0:
            ax.axvline(srank, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel("index i", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    right.axhline(1 - delta, color="gray", linestyle=":", linewidth=1)
    right.set_ylim(0, 1.02)
    left.set_ylabel("σ_i / σ_1", fontsize=8)
    right.set_ylabel("cumulative share of Σ σ", fontsize=8)
    right.text(0.97, 0.05, f"srank = {srank} of {sv.size}\n(δ = {delta:g})", ha="right", va="bottom",
               fontsize=7, color="tab:red", transform=right.transAxes)  # fmt: skip
    fig.suptitle(f"Critic penultimate features: singular values · agent step {step}", fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.15, wspace=0.35)
    return _render(fig)


def hessian_spectrum_figure(eigenvalues: np.ndarray, srank: int, delta: float, step: int) -> np.ndarray:
    """Eigenvalues of the exact last-layer Hessian of the critic's Q1 head (log scale).

    From the Gram identity ``H = (2/B) Φ̃ᵀΦ̃`` with ``Φ̃ = [φ, 1]`` the penultimate features: the
    spectrum is ``2σ²/B`` of Φ̃. Zero eigenvalues (``d + 1 > B`` or dead units) cannot be drawn on
    a log axis and are counted in the legend instead; the dashed line marks srank_δ.
    """
    eig = _spectrum(eigenvalues, "eigenvalues")
    fig = _figure()
    ax = fig.add_subplot()
    index = np.arange(1, eig.size + 1)
    positive = eig > 0
    if positive.any():
        ax.semilogy(index[positive], eig[positive], color="tab:purple", linewidth=1.2, marker=".", markersize=2)
    else:
        ax.text(0.5, 0.5, "all eigenvalues are 0", ha="center", va="center", transform=ax.transAxes)
    if srank > 0:
        ax.axvline(srank, color="tab:red", linestyle="--", linewidth=1)
    lines = [f"λ_max = {eig[0]:.3g}", f"trace = {eig.sum():.3g}", f"srank = {srank} (δ = {delta:g})",
             f"zero: {int((~positive).sum())} of {eig.size}"]  # fmt: skip
    ax.text(0.97, 0.95, "\n".join(lines), ha="right", va="top", fontsize=7, transform=ax.transAxes,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})  # fmt: skip
    ax.set_xlabel("index i", fontsize=8)
    ax.set_ylabel("eigenvalue λ_i", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"Last-layer Hessian spectrum (critic Q1 head) · agent step {step}", fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.9, bottom=0.14)
    return _render(fig)


def collapse_figure(geometry: CollapseGeometry, step: int) -> np.ndarray:
    """Neural-collapse geometry: samples and class means on the top-2 directions, and mean cosines.

    Left: probe samples (small dots) and class means (large, numbered from the lowest TD-target bin)
    coloured by bin, with the unit head weight as an arrow. Collapse shows as tight clusters around
    their means (NC1), and an arrow along the axis the means spread on (NC3). Right: the cosine
    matrix of the centred class means (NC2).
    """
    import matplotlib as mpl

    g = geometry
    num_bins = g.mean_xy.shape[0]
    fig = _figure()
    scatter, matrix = fig.subplots(1, 2, width_ratios=(1.35, 1))
    colours = mpl.colormaps["viridis"](np.linspace(0, 1, num_bins))
    scatter.scatter(g.sample_xy[:, 0], g.sample_xy[:, 1], c=colours[g.labels], s=6, alpha=0.5, linewidths=0)
    scatter.scatter(g.mean_xy[:, 0], g.mean_xy[:, 1], c=colours, s=40, edgecolors="black", linewidths=0.6)
    for k, (x, y) in enumerate(g.mean_xy):
        scatter.annotate(str(k), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    scale = float(np.abs(g.mean_xy).max()) if np.abs(g.mean_xy).max() > 0 else 1.0
    scatter.annotate("", xy=(g.head_xy[0] * scale, g.head_xy[1] * scale), xytext=(0, 0),
                     arrowprops={"arrowstyle": "->", "color": "tab:red", "linewidth": 1.2})  # fmt: skip
    scatter.set_xlabel(f"u₁ ({g.explained[0]:.0%} of between-bin var.)", fontsize=7)
    scatter.set_ylabel(f"u₂ ({g.explained[1]:.0%})", fontsize=7)
    scatter.tick_params(labelsize=6)
    scatter.grid(alpha=0.3)
    scatter.set_title("bins' samples, means, head w (red)", fontsize=8)
    image = matrix.imshow(g.cosines, cmap="coolwarm", vmin=-1, vmax=1)
    matrix.set_title("cos(μ_c − μ_G, μ_c' − μ_G)", fontsize=8)
    matrix.set_xlabel("bin", fontsize=7)
    matrix.set_ylabel("bin", fontsize=7)
    matrix.set_xticks(range(num_bins))
    matrix.set_yticks(range(num_bins))
    matrix.tick_params(labelsize=6)
    fig.colorbar(image, ax=matrix, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(f"Neural collapse of critic features on {num_bins} TD-target bins · agent step {step}", fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.95, top=0.86, bottom=0.14, wspace=0.3)
    return _render(fig)


# -- helpers --------------------------------------------------------------------------------------


def _figure() -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE, dpi=DPI)


def _render(fig: Any) -> np.ndarray:
    """Draw ``fig`` on an Agg canvas and return its pixels as a fresh ``(H, W, 3)`` uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


def _spectrum(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{name} must be a non-empty 1-D array of finite values, got shape {values.shape}")
    return np.sort(np.clip(values, 0.0, None))[::-1]
