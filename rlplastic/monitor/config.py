"""The monitor's settings: :class:`MonitorConfig` (checked when built), the names a config may list
(:data:`MODULES`, :data:`METRICS`, :data:`METRIC_GROUPS`) and :func:`config_from_mapping`, which also
refuses unknown keys.

``fau`` is the per-update metric (:mod:`rlplastic.monitor.fau_accounts`); every other metric is measured
at probe time (:data:`PROBE_METRICS`, computed by the table in :mod:`rlplastic.monitor.probe_metrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from rlplastic.monitor.fitting import FIT_TARGETS
from rlplastic.protocols import CRITIC  # the critic metrics' module; its dormant units come from the frozen loss

__all__ = [
    "ACTOR",
    "COLLAPSE_METRICS",
    "CRITIC",
    "CRITIC_PENULTIMATE",
    "CURVATURE_METRICS",
    "ENCODER",
    "FEATURE_TAGS",
    "FITTING_METRICS",
    "HVP_METRICS",
    "LANCZOS_METRICS",
    "METRICS",
    "METRIC_GROUPS",
    "MODULES",
    "NORM_METRICS",
    "PROBE_METRICS",
    "RANK_METRICS",
    "MonitorConfig",
    "config_from_mapping",
]

#: The module whose FAU ``encoder_fau_every_updates`` may count on every k-th update only.
ENCODER = "encoder"
#: The policy network.
ACTOR = "actor"
#: Module names a config may list (``agent.named_modules_for_monitor()`` keys).
MODULES: tuple[str, ...] = (ENCODER, ACTOR, CRITIC)
#: The probe feature that is the input of Q1's last Linear: the critic's own features, read by the last-layer
#: Hessian and neural collapse.
CRITIC_PENULTIMATE = "critic_penultimate"
#: The tag (``<module>`` or ``<module>/<part>``) of each probe feature of :data:`rlplastic.protocols.PROBE_FEATURES`,
#: in that order: ``critic_penultimate`` (the input of Q1's last Linear) is the critic's own ``critic/srank``.
FEATURE_TAGS: dict[str, str] = {
    "encoder": ENCODER,
    "critic_trunk": f"{CRITIC}/trunk",
    "actor_trunk": f"{ACTOR}/trunk",
    CRITIC_PENULTIMATE: CRITIC,
}

RANK_METRICS = ("srank", "erank")
NORM_METRICS = ("weight_norm", "drift", "grad_norm", "feature_norm")
#: Curvature metrics from one Lanczos run on the critic-loss Hessian (and the trace it deflates).
LANCZOS_METRICS = ("hessian_max", "hessian_min", "hessian_directions", "hessian_trace", "hessian_trace_se")
#: Curvature metrics that need Hessian-vector products (the expensive ones).
HVP_METRICS = (*LANCZOS_METRICS, "sharpness")
CURVATURE_METRICS = (*HVP_METRICS, "last_layer_lambda_max", "last_layer_srank")
COLLAPSE_METRICS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "nrc1")
#: Target fitting of a copy of the critic (:mod:`rlplastic.monitor.fitting`): plasticity measured directly.
FITTING_METRICS = ("fit_loss", "fit_auc")
#: Metrics computed at probe time (everything but FAU).
PROBE_METRICS: tuple[str, ...] = (
    "dormant",
    *RANK_METRICS,
    *NORM_METRICS,
    *CURVATURE_METRICS,
    *COLLAPSE_METRICS,
    *FITTING_METRICS,
)
#: Every metric name a config may list.
METRICS: tuple[str, ...] = ("fau", *PROBE_METRICS)
#: Shorthands a config may list instead of single metric names.
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "all": METRICS,
    "rank": RANK_METRICS,
    "norms": NORM_METRICS,
    "curvature": CURVATURE_METRICS,
    "collapse": COLLAPSE_METRICS,
    "fitting": FITTING_METRICS,
}


@dataclass
class MonitorConfig:
    """Settings of :class:`PlasticityMonitor` (``configs/monitor/*.yaml`` hold the same keys).

    Args:
        name: the config's name (``default``, ``full``, ...), for the run's records only.
        enabled: ``False`` turns the monitor off (:func:`make_monitor` then returns ``None``).
        modules: modules to monitor, a subset of :data:`MODULES`. Modules without parameters (the
            states-mode identity encoder) are skipped. A module with parameters needs a counted activation
            layer (ReLU, LeakyReLU, ELU, GELU, SiLU; :func:`~rlplastic.monitor.hooks.activation_layers`) when
            ``fau`` or ``dormant`` is on: the monitor refuses it at attach otherwise.
        metrics: metric names from :data:`METRICS` and/or group names from :data:`METRIC_GROUPS`
            (``all``, ``rank``, ``norms``, ``curvature``, ``collapse``, ``fitting``). ``fau`` is the per-update
            metric; all others are probe metrics.
        encoder_fau_every_updates: count the encoder's FAU on every k-th gradient update only (the
            first included); 1, the default, counts every update. The encoder's conv maps hold ~97%
            of the counted units, so on a CPU k = 4 cuts the FAU cost about 3x. Encoder FAU is then
            pooled over the counted updates only (a log window with none of them reads NaN); the
            critic and actor, and so the Adaptive-RR signal, are still counted on every update. A
            speed option, not part of the released definition.
        probe_every_updates: run a probe every this many gradient updates; 0 never probes.
        probe_at_start: also probe after the very first update (an initial reference point).
        probe_batch_size: transitions per probe batch (>= ``nc_bins`` when collapse is measured).
        curvature_every_probes: compute the Hessian-vector-product metrics (``hessian_max``,
            ``hessian_min``, ``hessian_directions``, ``hessian_trace(_se)``, ``sharpness``) on every
            this-many-th probe only; they dominate the probe's cost.
        dormant_tau: τ of the τ-dormant ratio (ReDo agents use 0.1; 0.025 is the logging default).
        srank_delta: δ of srank (feature and last-layer Hessian ranks).
        center_features: subtract per-unit means before srank / erank (the reference does not).
        hessian_iters: maximum Lanczos steps (one Hessian-vector product each, and one stored
            vector of all critic parameters) for ``hessian_max``/``hessian_min``/``hessian_directions``;
            the Lanczos basis also deflates ``hessian_trace``.
        hessian_tol: stop Lanczos early once the residuals of λ_min and of the top Ritz values (the
            top ``hessian_directions_k`` when ``hessian_directions`` is on) are <= tol · max|θ|.
        hessian_directions_k: k, how many of the largest Ritz values ``hessian_directions`` looks at
            (<= ``hessian_iters``; Lanczos spends its steps on both ends, so keep k <= about a third
            of them for the top-k to converge).
        hessian_directions_eps: ε, the count's threshold relative to λ_max.
        hutchinson_probes: Rademacher probes of the deflated residual for ``hessian_trace`` and
            ``hessian_trace_se`` (>= 2). On the DrQ-v2 critic after 40 updates, 10 probes on 30
            Lanczos vectors give SE ≈ 2% of |trace| (plain Hutchinson: 20%); at initialisation positive
            and negative curvature nearly cancel in the trace (SE ≈ 65% at 10 probes, ~400 for
            10%), which ``hessian_trace_se`` shows (``bench/curvature_cost.py``).
        sharpness_rho: radius ρ of the sharpness ascent step.
        nc_bins: K, the number of equal-count TD-target quantile bins used as classes for collapse.
        collapse_recent: also measure the enabled collapse metrics on the newest ``probe_batch_size``
            transitions of the replay (``replay.recent``), the data the critic has trained on least, as
            ``critic/<metric>_recent`` (Hui et al. 2022: collapse on training data and on fresh data
            differ). One more ``critic_probe`` forward per probe; NaN while the replay holds fewer than
            ``nc_bins`` transitions.
        fit_steps: k, the Adam steps of the target-fitting probe (``fit_loss``, ``fit_auc``; protocol in
            :mod:`rlplastic.monitor.fitting`): a deep copy of the critic, on the probe's frozen encoder
            features and actions, learns to add fresh standardised targets to its outputs. 0 takes no
            step (both metrics read 1.0).
        fit_lr: Adam's learning rate for the fit; ``None`` (null) = the agent's critic learning rate.
        fit_batch: samples per fitting step, drawn from the probe batch without replacement; ``None``
            (null) = the whole probe batch on every step (<= ``probe_batch_size``).
        fit_target: ``fresh_network`` (the outputs of a freshly initialised critic, via
            ``agent.fresh_module("critic")``) or ``random_projection`` (a Gaussian linear map of the inputs).
        fit_encoder: also fit a copy of the encoder *and* the critic end to end, on the probe's frozen augmented
            observations (``CriticProbe.encoder_inputs``) and actions, to fresh targets of the same kind (a fresh
            encoder+critic, or a random projection of the observations), as ``critic/fit_loss_encoder`` and
            ``critic/fit_auc_encoder`` (for the enabled fitting metrics). Needs the encoder among the monitored
            modules with parameters: skipped (no tags) for the states-mode identity encoder, where it would equal
            the critic-only fit. At DrQ-v2 sizes it costs far more than the critic-only fit (the conv encoder's
            forward and backward at every step: ``bench/monitor_overhead.py``).
        figures: draw pictures at each probe (:mod:`rlplastic.monitor.figures`; ~0.3 s per figure on a
            CPU), each from what the probe measures anyway: ``activity`` (per-layer active and dormant
            fractions; needs ``dormant``), ``critic_spectrum`` (needs ``srank`` or ``erank``),
            ``hessian_spectrum`` (needs a ``last_layer_*`` metric), ``collapse`` (needs a collapse
            metric). Their cost is logged as ``time/figures_s``.
        seed: seed of the monitor's own generator (probe batches and probe torch seeds).
    """

    name: str = "default"
    enabled: bool = True
    modules: Sequence[str] = MODULES
    metrics: Sequence[str] = ("all",)
    encoder_fau_every_updates: int = 1
    probe_every_updates: int = 5000
    probe_at_start: bool = True
    probe_batch_size: int = 256
    curvature_every_probes: int = 1
    dormant_tau: float = 0.025
    srank_delta: float = 0.01
    center_features: bool = False
    hessian_iters: int = 30
    hessian_tol: float = 1e-3
    hessian_directions_k: int = 10
    hessian_directions_eps: float = 0.01
    hutchinson_probes: int = 10
    sharpness_rho: float = 0.05
    nc_bins: int = 10
    collapse_recent: bool = False
    fit_steps: int = 50
    fit_lr: float | None = None
    fit_batch: int | None = None
    fit_target: str = "fresh_network"
    fit_encoder: bool = False
    figures: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # Hydra hands over ListConfig; keep plain tuples of str
        self.modules = _names(self.modules, "monitor.modules")
        self.metrics = _names(self.metrics, "monitor.metrics")
        # both name checks report together, so one run shows every bad name
        problems = []
        unknown = [m for m in self.modules if m not in MODULES]
        if unknown:
            problems.append(f"unknown monitor module(s) {unknown}: allowed are {list(MODULES)}")
        unknown = [m for m in self.metrics if m not in METRICS and m not in METRIC_GROUPS]
        if unknown:
            problems.append(
                f"unknown monitor metric(s) {unknown}: allowed are {list(METRICS)} or the groups {list(METRIC_GROUPS)}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        for key, minimum in _INT_MINIMA.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"monitor.{key}={value!r} must be an int >= {minimum}")
        for key, (low, high, closed) in _FLOAT_RANGES.items():
            value = getattr(self, key)
            ok = not isinstance(value, bool) and isinstance(value, (int, float))
            ok = ok and (low <= value <= high if closed else low < value < high)
            if not ok:
                brackets = "[]" if closed else "()"
                raise ValueError(f"monitor.{key}={value!r} must be a number in {brackets[0]}{low}, {high}{brackets[1]}")
        if "hessian_directions" in self.metric_set and self.hessian_directions_k > self.hessian_iters:
            raise ValueError(
                f"monitor.hessian_directions_k={self.hessian_directions_k} is larger than "
                f"monitor.hessian_iters={self.hessian_iters}: Lanczos gives at most hessian_iters Ritz values"
            )
        if self.fit_lr is not None and (
            isinstance(self.fit_lr, bool) or not isinstance(self.fit_lr, (int, float)) or not self.fit_lr > 0
        ):
            raise ValueError(f"monitor.fit_lr={self.fit_lr!r} must be null (the agent's learning rate) or a number > 0")
        if self.fit_batch is not None and (
            isinstance(self.fit_batch, bool) or not isinstance(self.fit_batch, int)
            or not 1 <= self.fit_batch <= self.probe_batch_size
        ):  # fmt: skip
            raise ValueError(
                f"monitor.fit_batch={self.fit_batch!r} must be null (the whole probe batch) or an int in "
                f"[1, monitor.probe_batch_size={self.probe_batch_size}]"
            )
        if self.fit_target not in FIT_TARGETS:
            raise ValueError(f"monitor.fit_target={self.fit_target!r} is not one of {list(FIT_TARGETS)}")
        if not isinstance(self.fit_encoder, bool):
            raise ValueError(f"monitor.fit_encoder={self.fit_encoder!r} must be true or false")
        if not isinstance(self.collapse_recent, bool):
            raise ValueError(f"monitor.collapse_recent={self.collapse_recent!r} must be true or false")
        if not isinstance(self.figures, bool):
            raise ValueError(f"monitor.figures={self.figures!r} must be true or false")
        if set(COLLAPSE_METRICS) & self.metric_set and self.probe_batch_size < self.nc_bins:
            raise ValueError(
                f"monitor.probe_batch_size={self.probe_batch_size} is smaller than monitor.nc_bins={self.nc_bins}: "
                "neural collapse needs at least one sample per bin"
            )

    @property
    def metric_set(self) -> frozenset[str]:
        """The enabled metric names, groups expanded."""
        return frozenset(m for name in self.metrics for m in METRIC_GROUPS.get(name, (name,)))


# minimum of each int field, and (low, high, closed?) of each float field of MonitorConfig
_INT_MINIMA = {"encoder_fau_every_updates": 1, "probe_every_updates": 0, "probe_batch_size": 1,
               "curvature_every_probes": 1, "hessian_iters": 1, "hessian_directions_k": 1, "hutchinson_probes": 2,
               "nc_bins": 2, "fit_steps": 0, "seed": 0}  # fmt: skip
_FLOAT_RANGES = {"dormant_tau": (0.0, 1.0, True), "srank_delta": (0.0, 1.0, False),
                 "hessian_tol": (0.0, float("inf"), True), "hessian_directions_eps": (0.0, 1.0, True),
                 "sharpness_rho": (0.0, float("inf"), False)}  # fmt: skip


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list of names, got {value!r}")
    names = tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must be a list of names, got {list(names)!r}")
    return names


def config_from_mapping(cfg: Mapping[str, Any]) -> MonitorConfig:
    """A :class:`MonitorConfig` from a config mapping (``cfg.monitor``), refusing keys it does not have.

    :raises ValueError: for an unknown key, module or metric name, or an out-of-range value.
    """
    allowed = [f.name for f in fields(MonitorConfig)]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"unknown monitor config key(s) {unknown}: allowed are {allowed}")
    return MonitorConfig(**cfg)
