"""The names of the monitor's signals: what an RR controller or an intervention trigger may read.

:meth:`PlasticityMonitor.signals` returns floats keyed ``<module>/<metric>`` and
``<module>/<layer>/<metric>`` (``<layer>`` also a feature part, as in ``critic/trunk/srank``), with
``<module>`` one of :data:`~rlplastic.monitor.config.MODULES` and ``<metric>`` one of
:data:`SIGNAL_METRICS`:

* ``fau``: FAU over the last closed log window (also per layer);
* ``episode_fau``: over the updates of the last finished episode (Adaptive-RR's signal, ``critic/episode_fau``);
* ``first_update_fau``: over the very first update (Adaptive-RR's first reference);
* every probe metric of :data:`~rlplastic.monitor.config.PROBE_METRICS`, its latest value;
* ``<collapse metric>_recent`` (with ``monitor.collapse_recent``) and ``fit_loss_encoder`` / ``fit_auc_encoder``
  (with ``monitor.fit_encoder``): the probe's variants, latest value.

:func:`check_signal` checks a name against these before a run starts (:func:`rlplastic.rr.validate_signal`
is it, for the controllers and the triggers); :func:`check_measured` checks that a given monitor config
measures it, so a controller or trigger never waits for a value that cannot come.
"""

from __future__ import annotations

from rlplastic.monitor.config import COLLAPSE_METRICS, CRITIC, FITTING_METRICS, METRICS, MODULES, MonitorConfig

__all__ = ["CRITIC_EPISODE_FAU", "EPISODE_FAU", "FIRST_UPDATE_FAU", "SIGNAL_METRICS", "check_measured",
           "check_signal", "first_update_signal", "measured_metric"]  # fmt: skip

#: The FAU of the last finished episode, as a signal metric.
EPISODE_FAU = "episode_fau"
#: The FAU of the first update, as a signal metric.
FIRST_UPDATE_FAU = "first_update_fau"
# A probe variant's metric name: the suffix, the metrics it applies to, the MonitorConfig switch that turns it on.
_VARIANTS = (("_recent", COLLAPSE_METRICS, "collapse_recent"), ("_encoder", FITTING_METRICS, "fit_encoder"))
#: Every ``<metric>`` a signal name may end in.
SIGNAL_METRICS: tuple[str, ...] = (
    *METRICS, EPISODE_FAU, FIRST_UPDATE_FAU,
    *(f"{metric}{suffix}" for suffix, metrics, _ in _VARIANTS for metric in metrics),
)  # fmt: skip
#: The critic's FAU over the last finished episode: the Adaptive-RR signal.
CRITIC_EPISODE_FAU = f"{CRITIC}/{EPISODE_FAU}"


def first_update_signal(signal: str) -> str | None:
    """The first-update reference of a per-episode FAU signal (``critic/episode_fau`` →
    ``critic/first_update_fau``); ``None`` for any other signal."""
    module, _, metric = signal.rpartition("/")
    return f"{module}/{FIRST_UPDATE_FAU}" if metric == EPISODE_FAU else None


def check_signal(name: str) -> str:
    """Check a monitor signal name (``critic/episode_fau``, ``critic/dormant``, ``critic/Q1.1/fau``).

    Raises:
        ValueError: naming the signal and the allowed modules and metrics.
    """
    parts = name.split("/")
    if len(parts) not in (2, 3) or parts[0] not in MODULES or parts[-1] not in SIGNAL_METRICS:
        raise ValueError(
            f"unknown signal {name!r}: a signal is <module>/<metric> or <module>/<layer>/<metric> with module in "
            f"{list(MODULES)} and metric in {list(SIGNAL_METRICS)}"
        )
    return name


def measured_metric(metric: str) -> tuple[str, str | None]:
    """The metric the monitor must measure for a signal metric, and the config switch it also needs
    (``episode_fau`` → ``("fau", None)``, ``nc1_recent`` → ``("nc1", "collapse_recent")``)."""
    if metric in (EPISODE_FAU, FIRST_UPDATE_FAU):
        return "fau", None
    for suffix, metrics, switch in _VARIANTS:
        if metric.endswith(suffix) and metric[: -len(suffix)] in metrics:
            return metric[: -len(suffix)], switch
    return metric, None


def check_measured(signal: str, config: MonitorConfig, needed_by: str) -> None:
    """Refuse a signal that a monitor with ``config`` never produces, naming the setting that would.

    Args:
        signal: a name :func:`check_signal` accepts.
        config: the monitor's configuration.
        needed_by: who reads the signal, for the message (``rr=adaptive``, ``intervention.redo``).

    Raises:
        ValueError: the signal's module is not monitored, its metric is not measured, or its variant's
            switch (``monitor.collapse_recent``, ``monitor.fit_encoder``) is off.
    """
    module, metric = signal.split("/")[0], signal.rsplit("/", 1)[1]
    needed, switch = measured_metric(metric)
    if module not in config.modules:
        raise ValueError(
            f"{needed_by} reads {signal!r}, but the monitor does not watch {module!r}: add it to monitor.modules "
            f"(it watches {list(config.modules)})"
        )
    if needed not in config.metric_set:
        raise ValueError(
            f"{needed_by} reads {signal!r}, but the monitor does not measure {needed!r}: add it to monitor.metrics "
            f"(it measures {sorted(config.metric_set)})"
        )
    if switch is not None and not getattr(config, switch):
        raise ValueError(f"{needed_by} reads {signal!r}, which the monitor measures only with monitor.{switch}=true")
