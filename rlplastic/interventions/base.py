"""What every intervention is to the set that drives it: the :class:`Intervention` contract and its registry.

An intervention is one class registered under its config name (``@INTERVENTIONS.register("redo")``) with
its YAML file (``configs/intervention/redo.yaml``); nothing else names it. The set
(:class:`~rlplastic.interventions.intervention_set.InterventionSet`) builds each configured one through
:data:`INTERVENTIONS` — the config keys are the constructor's parameters after ``agent`` and ``monitor``,
checked by the registry — after checking the agent against the class's :attr:`Intervention.needs`, and
then only calls the methods below; each intervention implements its own firing.

How interventions follow one another. A firing that re-draws or restructures modules has a
:class:`Change` (:attr:`Intervention.change`); the set broadcasts it to every intervention
(:meth:`Intervention.follow`) and to the monitor (``monitor.after_intervention``). Init-anchored
regularizers re-anchor after a reset and rebind after an injection that way, without the set knowing
either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from rlplastic.interventions.triggers import ThresholdTrigger, Trigger, make_trigger
from rlplastic.protocols import CRITIC, Monitor, MonitoredAgent, Replay
from rlplastic.registry import Registry

__all__ = [
    "CRITIC",
    "INTERVENTIONS",
    "Change",
    "Intervention",
    "Operation",
    "Report",
    "check_coef",
    "check_state",
    "check_targets",
    "critic_penultimate_layer",
]


#: A firing's flat report, logged as ``events/<name>/<key>``.
Report = dict[str, float]


@dataclass(frozen=True)
class Change:
    """What a firing did to the agent's modules, broadcast to every intervention and to the monitor.

    Attributes:
        modules: the modules changed.
        reinitialised: their values were re-drawn (a reset): the monitor measures ``drift`` from the new ones.
        reanchor: init-anchored regularizers take the new values as θ₀ (a reset's ``reanchor``).
        structure: parameters were moved and added (plasticity injection): whatever bound them rebinds.
    """

    modules: tuple[str, ...]
    reinitialised: bool = False
    reanchor: bool = False
    structure: bool = False


class Intervention:
    """The contract between one intervention and the set; every method has a do-nothing default.

    A subclass's ``__init__(self, agent, monitor=None, <config keys>...)`` validates its settings and
    changes nothing on the agent; :meth:`install` plugs it in once the whole set is built and checked.

    Attributes:
        name: the config name, also the ``events/<name>`` tag (set by :data:`INTERVENTIONS`' ``register``).
        needs: the agent protocol (:mod:`rlplastic.protocols`) it needs; the set refuses an agent lacking it.
        changes_structure: it changes a module's architecture (injection): no other operation may act on
            its modules.
        one_shot: it fires at most once per run (checkpointed in the set's ``done``).
        modules: the modules an operation rewrites (empty for regularizers and SAM, which follow instead).
        trigger: the trigger asked at every episode end (operations only; checkpointed by the set).
        change: what each firing does to the modules, broadcast by the set after it (``None``: values
            change in place and nobody needs to follow).
    """

    name: ClassVar[str] = ""
    needs: ClassVar[type] = MonitoredAgent
    changes_structure: ClassVar[bool] = False
    one_shot: ClassVar[bool] = False

    def __init__(self, agent: MonitoredAgent, monitor: Monitor | None = None) -> None:
        self.agent = agent
        self.monitor = monitor
        self.modules: tuple[str, ...] = ()
        self.trigger: Trigger | None = None
        self.change: Change | None = None

    def install(self) -> None:
        """Plug into the agent (loss terms, step rules, hooks); called once, after every check passed."""

    def after_update(
        self, updates: int, replay: Replay, device: torch.device | str, rng: np.random.Generator
    ) -> Report | None:
        """After gradient update number ``updates``: fire (a report) or not (``None``)."""
        return None

    def at_episode_end(
        self,
        signals: Mapping[str, float],
        frame: int,
        replay: Replay,
        device: torch.device | str,
        rng: np.random.Generator,
    ) -> Report | None:
        """At an episode end, with the monitor's latest ``signals``: fire (a report) or not (``None``)."""
        return None

    def follow(self, change: Change) -> None:
        """Another intervention changed modules (a :class:`Change`); follow it if that concerns this one."""

    def train_metrics(self) -> dict[str, Tensor]:
        """Latest values to log as ``train/<key>`` (detached device tensors), e.g. ``reg/<name>/<module>``."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        """Its own state besides the trigger's (``None``: none); tensors, ints and strings only.

        The set checkpoints it under ``"regularizers"`` (the key of the format before the registry).
        """
        return None

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Inverse of :meth:`state_dict`."""

    def restore_structure(self, agent_state: Mapping[str, Any]) -> tuple[str, ...]:
        """On resume, before the agent loads ``agent_state``: rebuild what it changed; the modules rebuilt."""
        return ()


class _Registry(Registry[Intervention]):
    """A :class:`~rlplastic.registry.Registry` whose ``register`` also sets the class's :attr:`~Intervention.name`."""

    def register(self, name: str) -> Callable[[type[Intervention]], type[Intervention]]:
        add = super().register(name)

        def named(cls: type[Intervention]) -> type[Intervention]:
            cls.name = name
            return add(cls)

        return named


#: Every intervention by config name, in the order the set builds them and asks their triggers.
INTERVENTIONS = _Registry("intervention", "intervention")


def check_modules(agent: MonitoredAgent, modules: Any, name: str) -> tuple[str, ...]:
    """``modules`` as a tuple of the agent's module names, or a ``ValueError`` naming ``intervention.<name>``."""
    if isinstance(modules, str) or not modules:
        raise ValueError(f"intervention.{name}.modules={modules!r} must be a non-empty list of module names")
    available = agent.named_modules_for_monitor()
    unknown = [m for m in modules if m not in available]
    if unknown:
        raise ValueError(f"intervention.{name}.modules {unknown} are unknown: the agent has {list(available)}")
    return tuple(modules)


def build_trigger(name: str, trigger: Any, monitor: Monitor | None) -> Trigger:
    """The trigger of ``intervention.<name>``; a threshold on a signal the monitor cannot give is refused now."""
    if not isinstance(trigger, Mapping):
        raise ValueError(
            f"intervention.{name}.trigger={trigger!r} must be a mapping, e.g. "
            "{kind: schedule, every_frames: 200000} or {kind: threshold, signal: critic/dormant, threshold: 0.2}"
        )
    trigger = dict(trigger)
    signal = trigger.get("signal")
    if trigger.get("kind") != ThresholdTrigger.kind or not isinstance(signal, str):
        return make_trigger(**trigger)  # make_trigger names what is wrong
    from rlplastic.monitor.signals import check_measured
    from rlplastic.rr import validate_signal  # the signal names the monitor produces

    validate_signal(signal)
    if monitor is None:
        raise ValueError(
            f"intervention.{name} fires on {signal!r} from the plasticity monitor, but monitor=off: "
            "use monitor=default or monitor=full, or a schedule trigger"
        )
    config = getattr(monitor, "config", None)
    if config is not None:  # a monitor of the library's own (a user's stand-in may not say what it measures)
        check_measured(signal, config, f"intervention.{name}")
    # the name is checked now: probe signals only appear after the first probe
    return make_trigger(**trigger, known_signals=[signal])


class Operation(Intervention):
    """An intervention that rewrites ``modules`` when its trigger says so, asked at every episode end.

    Subclasses implement :meth:`fire`; one with another way to fire (ReDo's period) passes
    ``trigger_required=False``.
    """

    def __init__(
        self,
        agent: MonitoredAgent,
        monitor: Monitor | None,
        modules: Sequence[str],
        trigger: Mapping[str, Any] | None,
        trigger_required: bool = True,
    ) -> None:
        super().__init__(agent, monitor)
        if trigger is None and trigger_required:
            raise ValueError(
                f"intervention.{self.name} needs a trigger, e.g. trigger: {{kind: schedule, every_frames: 200000}}"
            )
        if trigger is not None:
            self.trigger = build_trigger(self.name, trigger, monitor)
        self.modules = check_modules(agent, modules, self.name)

    def at_episode_end(
        self,
        signals: Mapping[str, float],
        frame: int,
        replay: Replay,
        device: torch.device | str,
        rng: np.random.Generator,
    ) -> Report | None:
        if self.trigger is None or not self.trigger.should_fire(signals, frame):
            return None
        return self.fire(replay, device, rng)

    def fire(self, replay: Replay, device: torch.device | str, rng: np.random.Generator) -> Report:
        """Act now; a flat report of numbers."""
        raise NotImplementedError


# -- validation shared by the regularizers -------------------------------------------------------------


def check_coef(coef: Any, name: str, key: str = "coef") -> float:
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef) or coef < 0:
        raise ValueError(f"{name}.{key}={coef!r} must be a finite number >= 0")
    return float(coef)


def check_targets(targets: Any, allowed: Iterable[str], name: str, what: str = "module") -> tuple[str, ...]:
    allowed = list(allowed)
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
        raise ValueError(f"{name}.targets must be a list of {what} names from {allowed}, got {targets!r}")
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(
            f"{name}.targets must be a non-empty list of {what} names from {allowed}, got {list(targets)!r}"
        )
    unknown = [t for t in targets if t not in allowed]
    if unknown:
        raise ValueError(f"{name}.targets has unknown {what} name(s) {unknown}: allowed are {allowed}")
    return tuple(dict.fromkeys(targets))  # drop duplicates, keep order


def check_state(state: Mapping[str, Any], name: str) -> None:
    if not isinstance(state, Mapping) or state.get("name") != name:
        found = state.get("name") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"state holds a {found!r} regularizer, this one is {name!r}")


def critic_penultimate_layer(agent: MonitoredAgent) -> str:
    """The path, inside the critic, of the Linear whose **input** is the critic's penultimate features.

    The monitor's convention (:class:`~rlplastic.protocols.CriticProbe`'s ``critic_penultimate``): the last
    Linear of the critic's first Q head. An agent may declare it (``penultimate_layer()``); otherwise the
    first head is the first of ``injection_heads()["critic"]`` (DrQ-v2: ``Q1``, so ``Q1.4``).
    """
    declared = getattr(agent, "penultimate_layer", None)
    if declared is not None:
        return declared() if callable(declared) else declared
    heads = agent.injection_heads().get(CRITIC, ()) if hasattr(agent, "injection_heads") else ()
    if not heads:
        raise ValueError(
            f"{type(agent).__name__} declares neither penultimate_layer() nor critic heads (injection_heads()): "
            "give the Linear whose input is the penultimate feature as layer"
        )
    head: nn.Module = agent.named_modules_for_monitor()[CRITIC].get_submodule(heads[0])
    linears = [path for path, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the critic's first head {heads[0]!r} has no Linear layer")
    return f"{heads[0]}.{linears[-1]}"
