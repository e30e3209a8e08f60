"""Plasticity monitor: :class:`PlasticityMonitor` (what the trainer drives), activation hooks and
the metric building blocks.

The monitor's files by concern: :mod:`~rlplastic.monitor.monitor` (the lifecycle the trainer drives),
:mod:`~rlplastic.monitor.config` (settings, metric and module names), :mod:`~rlplastic.monitor.fau_accounts`
(FAU counts over windows, episodes and the first update), :mod:`~rlplastic.monitor.probe_metrics` (the table
of probe metrics), :mod:`~rlplastic.monitor.signals` (the signal names controllers and triggers read) and
:mod:`~rlplastic.monitor.hooks` (which activation layers are counted, and the forward hooks).

Per-update pieces (:class:`ActivationCapture` counting, :class:`~rlplastic.monitor.fau_accounts.FAUAccounts`,
:mod:`~rlplastic.monitor.activity`, the rank-free parts of :mod:`~rlplastic.monitor.rank`) keep results on
device without host syncs.
Probe-time pieces (singular values, :mod:`~rlplastic.monitor.curvature`, :mod:`~rlplastic.monitor.collapse`,
:mod:`~rlplastic.monitor.fitting`) may sync and return Python floats where noted; with ``figures`` on, a probe
also draws pictures (:mod:`~rlplastic.monitor.figures`). Each probe is one :class:`ProbeRecord`.
"""

from rlplastic.monitor.activity import (
    dormant_mask,
    dormant_ratio,
    dormant_ratio_over_layers,
    dormant_scores,
    fau,
)
from rlplastic.monitor.collapse import bin_values, collapse_geometry, neural_collapse, quantile_bins
from rlplastic.monitor.config import METRIC_GROUPS, METRICS, MODULES, PROBE_METRICS, MonitorConfig
from rlplastic.monitor.curvature import (
    HessianOperator,
    LanczosResult,
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
)
from rlplastic.monitor.fitting import FitResult, fit_targets, fresh_network_targets, random_projection_targets
from rlplastic.monitor.hooks import COUNTED_ACTIVATIONS, ActivationCapture, activation_layers, relu_layers
from rlplastic.monitor.monitor import PlasticityMonitor, ProbeRecord, make_monitor
from rlplastic.monitor.rank import (
    effective_rank,
    feature_norm,
    grad_norm,
    param_distance,
    singular_values,
    snapshot_params,
    srank,
    weight_rms,
)

__all__ = [
    "COUNTED_ACTIVATIONS",
    "METRICS",
    "METRIC_GROUPS",
    "MODULES",
    "PROBE_METRICS",
    "ActivationCapture",
    "FitResult",
    "HessianOperator",
    "LanczosResult",
    "MonitorConfig",
    "PlasticityMonitor",
    "ProbeRecord",
    "activation_layers",
    "bin_values",
    "collapse_geometry",
    "curvature_directions",
    "deflated_trace",
    "dormant_mask",
    "dormant_ratio",
    "dormant_ratio_over_layers",
    "dormant_scores",
    "effective_rank",
    "fau",
    "feature_norm",
    "fit_targets",
    "fresh_network_targets",
    "grad_norm",
    "hessian_lanczos",
    "hutchinson_trace",
    "hutchpp_trace",
    "last_layer_curvature",
    "last_layer_hessian",
    "last_layer_spectrum",
    "make_monitor",
    "neural_collapse",
    "param_distance",
    "quantile_bins",
    "random_projection_targets",
    "relu_layers",
    "sharpness",
    "singular_values",
    "snapshot_params",
    "spectrum_srank",
    "spectrum_top",
    "srank",
    "weight_rms",
]
