"""The names of the monitor's signals: what an RR controller or an intervention trigger may read.

:meth:`PlasticityMonitor.signals` returns floats keyed ``<module>/<metric>`` and
``<module>/<layer>/<metric>`` (``<layer>`` also a feature part, as in ``critic/trunk/srank``), with
``<module>`` one of :data:`~rlplastic.monitor.config.MODULES` and ``<metric>`` one of
:data:`SIGNAL_METRICS`:

* ``fau``: FAU over the last closed log window (also per layer);
* ``episode_fau``: over the updates of the last finished episode (Adaptive-RR's signal, ``critic/episode_fau``);
* ``first_update_fau``: over the very first update (Adaptive-RR's first reference);
* every probe metric of :data:`~rlplastic.monitor.config.PROBE_METRICS`, its latest value.

:func:`check_signal` checks a name against these before a run starts (:func:`rlplastic.rr.validate_signal`
is it, for the controllers and the triggers).
"""

from __future__ import annotations

from rlplastic.monitor.config import CRITIC, METRICS, MODULES

__all__ = ["CRITIC_EPISODE_FAU", "EPISODE_FAU", "FIRST_UPDATE_FAU", "SIGNAL_METRICS", "check_signal",
           "first_update_signal"]  # fmt: skip

#: The FAU of the last finished episode, as a signal metric.
EPISODE_FAU = "episode_fau"
#: The FAU of the first update, as a signal metric.
FIRST_UPDATE_FAU = "first_update_fau"
#: Every ``<metric>`` a signal name may end in.
SIGNAL_METRICS: tuple[str, ...] = (*METRICS, EPISODE_FAU, FIRST_UPDATE_FAU)
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
