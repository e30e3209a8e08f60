r"""The run's interventions as the trainer drives them: what fires when, what it touched, all its state.

A config (``configs/intervention/<name>.yaml``, combinable as ``intervention=[redo,l2_init]``) maps
intervention names to their settings. Three kinds:

* **Operations** change the networks at a moment: ``reset`` (:class:`~.resets.FullReset`),
  ``heads_reset`` (:class:`~.resets.HeadsReset`), ``shrink_perturb`` (:class:`~.resets.ShrinkPerturb`),
  ``inject`` (:class:`~.injection.Inject`, once per module) and ``redo`` (:class:`~.redo.ReDo`). Each
  has a ``trigger`` (:mod:`~.triggers`: a schedule in frames, or a threshold on a monitor signal with a
  cool-down) that is asked at every **episode end**, with the monitor's latest signals. ReDo instead
  fires every ``period`` gradient updates by default (Sokar et al.'s rule), checked after each update;
  give it a ``trigger`` and ``period: null`` to fire it on a signal.
* **Regularizers** ``l2_init``, ``w2_init`` (:mod:`~.anchored`), ``nc_reg`` (:mod:`~.nc_reg`) and
  ``weight_decay`` (:mod:`~.weight_decay`, an optimizer hook) are built on the agent's modules when the
  set is built and registered as loss terms on ``agent.hooks`` (:class:`~rlplastic.agent_hooks.AgentHooks`).
  Their latest terms are reported by :meth:`InterventionSet.train_metrics` (device tensors, no host
  sync) and logged as ``train/reg/...``.
* ``sam`` replaces the critic's optimizer step by SAM's (:class:`~.sam.SAMStep`, a step rule on ``agent.hooks``).

Each is one class registered in :data:`~.base.INTERVENTIONS` under its config name, implementing the
:class:`~.base.Intervention` contract; this set knows none of them by name.

How interventions interact. After a ``reset``/``heads_reset`` the init-anchored regularizers
(``l2_init``, ``w2_init``) re-anchor the reset modules at the fresh weights (``reanchor: true``, the
default; ``false`` keeps pulling toward the first initialisation), and the monitor measures ``drift``
from the fresh weights. After ``inject`` the regularizers and the monitor follow the moved and new
parameters. Both go through one broadcast: a firing's :class:`~.base.Change` reaches every
intervention (:meth:`~.base.Intervention.follow`) and the monitor (``monitor.after_intervention``).
Injection changes a module's architecture, so it cannot be combined with a reset, shrink-and-perturb
or ReDo of the same module: the set refuses that combination when it is built, not when it would fire.

Each firing returns a flat report of numbers that the trainer logs as ``events/<name>`` (1 at the
frame) and ``events/<name>/<key>``. The set's state — update counter, triggers, the statistics-batch
RNG, regularizer anchors, which one-shot operations are done — is in the checkpoint; a resumed run
first rebuilds injected heads (:meth:`InterventionSet.restore_structure`) so the agent's saved state
fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from rlplastic.interventions.base import INTERVENTIONS, Change, Intervention, Report
from rlplastic.interventions.triggers import ThresholdTrigger
from rlplastic.protocols import Monitor, MonitoredAgent, Replay, require
from rlplastic.registry import named_errors

__all__ = ["INTERVENTIONS", "InterventionSet", "make_interventions"]

# Keeps the ReDo statistics stream apart from the replay's and the monitor's (same run seed).
_RNG_STREAM = 0x726564_6F  # "redo"
_CONTEXT = ("agent", "monitor")


class InterventionSet:
    """Builds the configured interventions on ``agent`` and fires them as the trainer asks.

    Args:
        agent: an agent with the protocol (:mod:`rlplastic.protocols`) each configured intervention
            needs (:attr:`~.base.Intervention.needs`); checked here, before anything is built.
        config: intervention name → its settings (names of :data:`~.base.INTERVENTIONS`, keys of each
            class's constructor); ``None`` or an empty mapping for none.
        seed: seed of the set's own generator (ReDo's statistics batches).
        monitor: the plasticity monitor, if any: told after an intervention changes modules
            (``after_intervention``), and required for threshold triggers.

    Raises:
        ValueError: an unknown intervention, key, module or signal, a bad value, an agent lacking a
            capability, or a combination that cannot work — one message naming it and what is allowed.
    """

    def __init__(
        self,
        agent: MonitoredAgent,
        config: Mapping[str, Mapping[str, Any] | None] | None,
        seed: int = 0,
        monitor: Monitor | None = None,
    ) -> None:
        config = {name: dict(settings or {}) for name, settings in (config or {}).items()}
        unknown = sorted(set(config) - set(INTERVENTIONS.names()))
        if unknown:
            raise ValueError(f"unknown intervention(s) {unknown}: allowed are {list(INTERVENTIONS.names())}")
        for name, settings in config.items():
            INTERVENTIONS.check(name, settings, _CONTEXT)
            require(agent, INTERVENTIONS.get(name).needs, f"intervention.{name}")
        self.agent = agent
        self.monitor = monitor
        self.names: tuple[str, ...] = tuple(config)
        self.updates = 0  # gradient updates seen
        self._rng = np.random.default_rng([_RNG_STREAM, seed])
        self._done: set[str] = set()  # one-shot interventions that have fired (inject)
        # built in registry order (operations first); building changes nothing on the agent, installing does,
        # so a refused config leaves the agent as it was
        self.interventions: dict[str, Intervention] = {
            name: INTERVENTIONS.build(name, config[name], agent=agent, monitor=monitor)
            for name in INTERVENTIONS.names()
            if name in config
        }
        self._check_structure_conflicts()
        for name, intervention in self.interventions.items():
            with named_errors(f"intervention.{name}"):
                intervention.install()

    def _check_structure_conflicts(self) -> None:
        for name, changer in self.interventions.items():
            if not changer.changes_structure:
                continue
            for other, intervention in self.interventions.items():
                overlap = set(changer.modules) & set(intervention.modules)
                if other != name and overlap:
                    raise ValueError(
                        f"intervention {name} and {other} both act on {sorted(overlap)}: {name} changes the "
                        f"module's architecture, which {other} cannot re-initialise; give them disjoint modules"
                    )

    # -- the trainer's calls --------------------------------------------------------------------------

    @property
    def signals_needed(self) -> tuple[str, ...]:
        """Monitor signals the triggers read (the trainer fetches signals only when some are needed)."""
        triggers = [i.trigger for i in self.interventions.values()]
        return tuple(t.signal for t in triggers if isinstance(t, ThresholdTrigger))

    def after_update(self, replay: Replay, device: torch.device | str) -> dict[str, Report]:
        """Count one gradient update; fire what is due after it (ReDo's period). Returns ``{name: report}``."""
        self.updates += 1
        return self._fired(lambda i: i.after_update(self.updates, replay, device, self._rng))

    def at_episode_end(
        self, signals: Mapping[str, float], frame: int, replay: Replay, device: torch.device | str
    ) -> dict[str, Report]:
        """Ask every trigger (in registry order) and fire the operations whose trigger says yes.

        Args:
            signals: the monitor's latest signals (empty without a monitor).
            frame: the current environment frame.
            replay: the replay buffer (ReDo samples its statistics batch from it with the set's own RNG).
            device: where batches go.

        Returns:
            ``{name: report}`` of the operations fired now.
        """
        return self._fired(lambda i: i.at_episode_end(signals, frame, replay, device, self._rng))

    def train_metrics(self) -> dict[str, torch.Tensor]:
        """The regularizers' latest terms, ``reg/<name>/<module>`` (detached device tensors)."""
        return {key: value for i in self.interventions.values() for key, value in i.train_metrics().items()}

    # -- firing ---------------------------------------------------------------------------------------

    def _fired(self, ask: Callable[[Intervention], Report | None]) -> dict[str, Report]:
        fired = {}
        for name, intervention in self.interventions.items():
            if name in self._done:
                continue
            report = ask(intervention)
            if report is None:
                continue
            fired[name] = report
            if intervention.one_shot:
                self._done.add(name)
            if intervention.change is not None:
                self._broadcast(intervention.change)
        return fired

    def _broadcast(self, change: Change) -> None:
        """Every intervention, then the monitor, follows what a firing did to the modules."""
        for intervention in self.interventions.values():
            intervention.follow(change)
        if self.monitor is not None:
            self.monitor.after_intervention(self.agent, change.modules, reinitialised=change.reinitialised)

    # -- checkpointing --------------------------------------------------------------------------------

    def restore_structure(self, agent_state: Mapping[str, Any]) -> None:
        """Before ``agent.load_state_dict(agent_state)`` on resume: rebuild what structure changes the saved
        agent had (re-inject its heads)."""
        for intervention in self.interventions.values():
            rebuilt = intervention.restore_structure(agent_state)
            if rebuilt:
                self._broadcast(Change(rebuilt, structure=True))

    def state_dict(self) -> dict[str, Any]:
        """Update counter, RNG, trigger and regularizer states, done one-shot operations."""
        own = {name: i.state_dict() for name, i in self.interventions.items()}
        return {
            "names": list(self.names),
            "updates": self.updates,
            "rng": self._rng.bit_generator.state,
            "done": sorted(self._done),
            "triggers": {name: i.trigger.state_dict() for name, i in self.interventions.items() if i.trigger},
            "regularizers": {name: state for name, state in own.items() if state is not None},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (after :meth:`restore_structure`)."""
        if list(state["names"]) != list(self.names):
            raise ValueError(
                f"checkpoint was saved with interventions {state['names']}, this run has {list(self.names)}"
            )
        self.updates = int(state["updates"])
        self._rng.bit_generator.state = state["rng"]
        self._done = set(state["done"])
        for name, intervention in self.interventions.items():
            if intervention.trigger is not None:
                intervention.trigger.load_state_dict(state["triggers"][name])
            intervention.load_state_dict(state["regularizers"].get(name))


def make_interventions(
    agent: MonitoredAgent,
    config: Mapping[str, Mapping[str, Any] | None] | None,
    seed: int = 0,
    monitor: Monitor | None = None,
) -> InterventionSet | None:
    """The configured :class:`InterventionSet`, or ``None`` when the config names no intervention."""
    if not config:
        return None
    return InterventionSet(agent, config, seed=seed, monitor=monitor)
