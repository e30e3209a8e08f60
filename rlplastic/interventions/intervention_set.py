r"""The run's interventions as the trainer drives them: what fires when, what it touched, all its state.

A config (``configs/intervention/<name>.yaml``, combinable as ``intervention=[redo,l2_init]``) maps
intervention names to their settings. Three kinds:

* **Operations** change the networks at a moment: ``reset`` (:class:`~.resets.FullReset`),
  ``heads_reset`` (:class:`~.resets.HeadsReset`), ``shrink_perturb`` (:class:`~.resets.ShrinkPerturb`),
  ``inject`` (:func:`~.injection.inject`, once per module) and ``redo`` (:class:`~.redo.ReDo`). Each
  has a ``trigger`` (:mod:`~.triggers`: a schedule in frames, or a threshold on a monitor signal with a
  cool-down) that is asked at every **episode end**, with the monitor's latest signals. ReDo instead
  fires every ``period`` gradient updates by default (Sokar et al.'s rule), checked after each update;
  give it a ``trigger`` and ``period: null`` to fire it on a signal.
* **Regularizers** ``l2_init``, ``w2_init``, ``nc_reg``, ``weight_decay``
  (:mod:`~.regularizers`) are built on the agent's modules when the set is built and registered as
  loss terms on ``agent.hooks`` (:class:`~rlplastic.agent_hooks.AgentHooks`). Their latest terms are reported by
  :meth:`InterventionSet.train_metrics` (device tensors, no host sync) and logged as ``train/reg/...``.
* ``sam`` replaces the critic's optimizer step by SAM's (:class:`~.sam.SAMStep`, a step rule on ``agent.hooks``).

How interventions interact. After a ``reset``/``heads_reset`` the init-anchored regularizers
(``l2_init``, ``w2_init``) re-anchor the reset modules at the fresh weights (``reanchor: true``, the
default; ``false`` keeps pulling toward the first initialisation), and the monitor measures ``drift``
from the fresh weights. After ``inject`` the regularizers and the monitor follow the moved and new
parameters (:meth:`~.regularizers.L2Init.rebind`, ``monitor.after_intervention``). Injection changes a
module's architecture, so it cannot be combined with a reset, shrink-and-perturb or ReDo of the same
module: the set refuses that combination when it is built, not when it would fire.

Each firing returns a flat report of numbers that the trainer logs as ``events/<name>`` (1 at the
frame) and ``events/<name>/<key>``. The set's state — update counter, triggers, the statistics-batch
RNG, regularizer anchors, which one-shot operations are done — is in the checkpoint; a resumed run
first rebuilds injected heads (:meth:`InterventionSet.restore_structure`) so the agent's saved state
fits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from rlplastic.interventions.injection import inject, injected_heads, reinject_from_state
from rlplastic.interventions.redo import ReDo
from rlplastic.interventions.regularizers import REGULARIZER_KEYS, REGULARIZERS, make_regularizer
from rlplastic.interventions.resets import FullReset, HeadsReset, ShrinkPerturb
from rlplastic.interventions.sam import SAMStep
from rlplastic.interventions.triggers import ScheduleTrigger, ThresholdTrigger, make_trigger

__all__ = ["INTERVENTIONS", "InterventionSet", "make_interventions"]

#: Operations fired by a trigger (or, for ReDo, a period in updates).
OPERATIONS: tuple[str, ...] = ("reset", "heads_reset", "shrink_perturb", "redo", "inject")
#: Every intervention name a config may use, with its allowed keys.
INTERVENTIONS: dict[str, tuple[str, ...]] = {
    "reset": ("modules", "trigger", "reanchor"),
    "heads_reset": ("modules", "trigger", "reanchor"),
    "shrink_perturb": ("alpha", "beta", "modules", "reset_optimizer", "trigger"),
    "redo": ("tau", "modules", "period", "batch_size", "step", "trigger"),
    "inject": ("modules", "trigger"),
    **REGULARIZER_KEYS,
    "sam": ("rho",),
}

# Keeps the ReDo statistics stream apart from the replay's and the monitor's (same run seed).
_RNG_STREAM = 0x726564_6F  # "redo"

Report = dict[str, float]


def _modules_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value:
        raise ValueError(f"intervention.{name}.modules={value!r} must be a non-empty list of module names")
    return tuple(value)


@contextmanager
def _named_errors(name: str) -> Iterator[None]:
    """Prefix a building block's ``ValueError`` with the config key it came from (``intervention.redo: …``)."""
    try:
        yield
    except ValueError as err:
        if str(err).startswith(("intervention", "unknown intervention")):
            raise
        raise ValueError(f"intervention.{name}: {err}") from None


class InterventionSet:
    """Builds the configured interventions on ``agent`` and fires them as the trainer asks.

    Args:
        agent: an agent with the docs/design.md protocol and the intervention protocol (``fresh_module``,
            ``target_networks``, ``layer_links``, ``injection_heads``, ``forward_for_statistics``,
            ``hooks``), as far as the configured interventions need them.
        config: intervention name → its settings (keys of :data:`INTERVENTIONS`); ``None`` or an empty
            mapping for none.
        seed: seed of the set's own generator (ReDo's statistics batches).
        monitor: the plasticity monitor, if any: told after an intervention changes modules
            (``after_intervention``), and required for threshold triggers.

    Raises:
        ValueError: an unknown intervention, key, module or signal, a bad value, or a combination that
            cannot work — one message naming it and what is allowed.
    """

    def __init__(
        self, agent: Any, config: Mapping[str, Mapping[str, Any] | None] | None, seed: int = 0, monitor: Any = None
    ) -> None:
        config = {name: dict(settings or {}) for name, settings in (config or {}).items()}
        unknown = sorted(set(config) - set(INTERVENTIONS))
        if unknown:
            raise ValueError(f"unknown intervention(s) {unknown}: allowed are {list(INTERVENTIONS)}")
        for name, settings in config.items():
            bad = sorted(set(settings) - set(INTERVENTIONS[name]))
            if bad:
                raise ValueError(f"unknown intervention.{name} key(s) {bad}: allowed are {list(INTERVENTIONS[name])}")
        self.agent = agent
        self.monitor = monitor
        self.names: tuple[str, ...] = tuple(config)
        self.updates = 0  # gradient updates seen
        self._rng = np.random.default_rng([_RNG_STREAM, seed])
        self._done: set[str] = set()  # one-shot operations that have fired (inject)

        # operations first: building them changes nothing on the agent, so a refused config leaves it as it was
        available = agent.named_modules_for_monitor()
        self.triggers: dict[str, ScheduleTrigger | ThresholdTrigger] = {}
        self._settings: dict[str, dict[str, Any]] = {}
        self._operations: dict[str, Any] = {}
        for name in OPERATIONS:
            if name in config:
                with _named_errors(name):
                    self._build_operation(name, config[name], available)
        self._check_injection_conflicts()

        if "sam" in config:
            with _named_errors("sam"):
                agent.hooks.set_step_rule("critic", SAMStep(**config["sam"]))
        self.regularizers: dict[str, Any] = {}
        optimizers = agent.optimizers()
        for name in REGULARIZERS:
            if name in config:
                settings = config[name]
                if name == "weight_decay" and "targets" in settings:
                    # a parameter-free module (the states-mode encoder) has no optimizer: nothing to decay
                    settings["targets"] = [t for t in settings["targets"] if t in optimizers or t not in available]
                with _named_errors(name):
                    self.regularizers[name] = make_regularizer(name, modules=available, optimizers=optimizers,
                                                               **settings)  # fmt: skip
                agent.hooks.add_loss_term(self.regularizers[name].extra_loss)

    # -- construction ---------------------------------------------------------------------------------

    def _check_injection_conflicts(self) -> None:
        injected = set(self._operations.get("inject", ()))
        for name, operation in self._operations.items():
            if name != "inject":
                overlap = injected & set(operation.modules)
                if overlap:
                    raise ValueError(
                        f"intervention inject and {name} both act on {sorted(overlap)}: injection changes the "
                        f"module's architecture, which {name} cannot re-initialise; give them disjoint modules"
                    )

    def _build_trigger(self, name: str, trigger: Any) -> ScheduleTrigger | ThresholdTrigger:
        if not isinstance(trigger, Mapping):
            raise ValueError(
                f"intervention.{name}.trigger={trigger!r} must be a mapping, e.g. "
                "{kind: schedule, every_frames: 200000} or {kind: threshold, signal: critic/dormant, threshold: 0.2}"
            )
        trigger = dict(trigger)
        signal = trigger.get("signal")
        if trigger.get("kind") != "threshold" or not isinstance(signal, str):
            return make_trigger(**trigger)  # make_trigger names what is wrong
        from rlplastic.rr import validate_signal  # the signal names the monitor produces

        validate_signal(signal)
        if self.monitor is None:
            raise ValueError(
                f"intervention.{name} fires on {signal!r} from the plasticity monitor, but monitor=off: "
                "use monitor=default or monitor=full, or a schedule trigger"
            )
        metric = signal.rsplit("/", 1)[1]
        measured = getattr(getattr(self.monitor, "config", None), "metric_set", None)
        needed = "fau" if metric in ("episode_fau", "first_update_fau") else metric
        if measured is not None and needed not in measured:
            raise ValueError(
                f"intervention.{name} fires on {signal!r}, but the monitor does not measure {needed!r}: "
                f"add it to monitor.metrics (it measures {sorted(measured)})"
            )
        # the name is checked now: probe signals only appear after the first probe
        return make_trigger(**trigger, known_signals=[signal])

    def _build_operation(self, name: str, settings: dict[str, Any], available: Mapping[str, Any]) -> None:
        settings = dict(settings)
        trigger = settings.pop("trigger", None)
        if name == "redo":
            period = settings.get("period", 1000)
            if (period is None) == (trigger is None):
                raise ValueError(
                    f"intervention.redo needs exactly one of period (gradient updates) or trigger; got "
                    f"period={period!r}, trigger={trigger!r}"
                )
            settings["period"] = 1 if period is None else period  # ReDo checks it; unused with a trigger
        elif trigger is None:
            raise ValueError(
                f"intervention.{name} needs a trigger, e.g. trigger: {{kind: schedule, every_frames: 200000}}"
            )
        if trigger is not None:
            self.triggers[name] = self._build_trigger(name, trigger)
        if "modules" in settings:
            settings["modules"] = _modules_list(settings["modules"], name)
            unknown = [m for m in settings["modules"] if m not in available]
            if unknown:
                raise ValueError(f"intervention.{name}.modules {unknown} are unknown: the agent has {list(available)}")
        reanchor = bool(settings.pop("reanchor", True))
        if name in ("reset", "heads_reset"):
            cls = FullReset if name == "reset" else HeadsReset
            self._operations[name] = cls(**settings)
        elif name == "shrink_perturb":
            self._operations[name] = ShrinkPerturb(**settings)
        elif name == "redo":
            self._operations[name] = ReDo(**settings)
        else:  # inject
            modules = settings.get("modules", ("critic",))
            heads = self.agent.injection_heads()
            missing = [m for m in modules if m not in heads]
            if missing:
                raise ValueError(f"intervention.inject.modules {missing} have no heads: allowed are {list(heads)}")
            self._operations[name] = tuple(modules)
        self._settings[name] = {"reanchor": reanchor}

    # -- the trainer's calls --------------------------------------------------------------------------

    @property
    def signals_needed(self) -> tuple[str, ...]:
        """Monitor signals the triggers read (the trainer fetches signals only when some are needed)."""
        return tuple(t.signal for t in self.triggers.values() if isinstance(t, ThresholdTrigger))

    def after_update(self, replay: Any, device: torch.device | str) -> dict[str, Report]:
        """Count one gradient update; fire ReDo when its period is due. Returns ``{name: report}`` fired."""
        self.updates += 1
        redo = self._operations.get("redo")
        if redo is not None and "redo" not in self.triggers and redo.due(self.updates):
            return {"redo": self._fire("redo", replay, device)}
        return {}

    def at_episode_end(
        self, signals: Mapping[str, float], frame: int, replay: Any, device: torch.device | str
    ) -> dict[str, Report]:
        """Ask every trigger (in config order) and fire the operations whose trigger says yes.

        Args:
            signals: the monitor's latest signals (empty without a monitor).
            frame: the current environment frame.
            replay: the replay buffer (ReDo samples its statistics batch from it with the set's own RNG).
            device: where batches go.

        Returns:
            ``{name: report}`` of the operations fired now.
        """
        fired = {}
        for name, trigger in self.triggers.items():
            if name in self._done:
                continue
            if trigger.should_fire(signals, frame):
                fired[name] = self._fire(name, replay, device)
        return fired

    def train_metrics(self) -> dict[str, torch.Tensor]:
        """The regularizers' latest terms, ``reg/<name>/<module>`` (detached device tensors)."""
        metrics = {}
        for name, regularizer in self.regularizers.items():
            for module, term in regularizer.last_terms.items():
                metrics[f"reg/{name}/{module}"] = term
            if getattr(regularizer, "last_nc1", None) is not None:
                metrics[f"reg/{name}/nc1"] = regularizer.last_nc1
        return metrics

    # -- firing ---------------------------------------------------------------------------------------

    def _fire(self, name: str, replay: Any, device: torch.device | str) -> Report:
        operation = self._operations[name]
        if name == "redo":
            batch = replay.sample(operation.batch_size, device, rng=self._rng)
            return operation.apply(self.agent, batch)
        if name == "inject":
            report: Report = {}
            for module in operation:
                report.update({f"{module}/{k}": v for k, v in inject(self.agent, module).items()})
            self._done.add(name)
            self._after_structure_change(operation)
            return report
        report = operation.apply(self.agent)
        if name in ("reset", "heads_reset"):
            if self._settings[name]["reanchor"]:
                for regularizer in self.regularizers.values():
                    if hasattr(regularizer, "reset_anchor"):
                        touched = [m for m in operation.modules if m in regularizer.targets]
                        if touched:
                            regularizer.reset_anchor(touched)
            if self.monitor is not None:
                self.monitor.after_intervention(self.agent, operation.modules, reinitialised=True)
        return report

    def _after_structure_change(self, modules: tuple[str, ...]) -> None:
        available = self.agent.named_modules_for_monitor()
        for regularizer in self.regularizers.values():
            if hasattr(regularizer, "rebind"):
                regularizer.rebind(available)
        if self.monitor is not None:
            self.monitor.after_intervention(self.agent, modules)

    # -- checkpointing --------------------------------------------------------------------------------

    def restore_structure(self, agent_state: Mapping[str, Any]) -> None:
        """Before ``agent.load_state_dict(agent_state)`` on resume: re-inject the heads the saved agent had."""
        if "inject" not in self._operations or injected_heads(self.agent):
            return
        done = reinject_from_state(self.agent, agent_state)
        if done:
            self._after_structure_change(tuple(done))

    def state_dict(self) -> dict[str, Any]:
        """Update counter, RNG, trigger and regularizer states, done one-shot operations."""
        return {
            "names": list(self.names),
            "updates": self.updates,
            "rng": self._rng.bit_generator.state,
            "done": sorted(self._done),
            "triggers": {name: trigger.state_dict() for name, trigger in self.triggers.items()},
            "regularizers": {name: reg.state_dict() for name, reg in self.regularizers.items()},
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
        for name, trigger in self.triggers.items():
            trigger.load_state_dict(state["triggers"][name])
        for name, regularizer in self.regularizers.items():
            regularizer.load_state_dict(state["regularizers"][name])


def make_interventions(
    agent: Any, config: Mapping[str, Mapping[str, Any] | None] | None, seed: int = 0, monitor: Any = None
) -> InterventionSet | None:
    """The configured :class:`InterventionSet`, or ``None`` when the config names no intervention."""
    if not config:
        return None
    return InterventionSet(agent, config, seed=seed, monitor=monitor)
