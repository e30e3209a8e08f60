"""The contract between an agent and the rest of rlplastic, in one place.

The trainer, the plasticity monitor, the replay-ratio controllers and the interventions work on any
torch agent that provides the part of this contract they use. Each part is a :class:`typing.Protocol`:

========================  =====================================================================
:class:`Agent`            what the training loop calls: ``act``, ``update``, ``state_dict``, ``load_state_dict``
:class:`MonitoredAgent`   ``hooks`` (:class:`~rlplastic.agent_hooks.AgentHooks`),
                          ``named_modules_for_monitor()``, ``optimizers()``: the monitor's FAU,
                          regularizers and SAM
:class:`ProbedAgent`      + ``critic_probe(batch, step) -> CriticProbe``: the monitor's probe metrics
:class:`ResettableAgent`  + ``fresh_module(name)``, ``target_networks()``: resets, shrink-and-perturb
:class:`RecyclableAgent`  + ``layer_links()``, ``forward_for_statistics(batch)``: ReDo
:class:`InjectableAgent`  + ``injection_heads()``: plasticity injection
========================  =====================================================================

:func:`require` checks an agent against one of them when a run starts, so a missing capability is
one error naming the method and who needs it, not an ``AttributeError`` half-way through training.
The other pieces the loop drives (environment, replay, RR controller, monitor, interventions) are
here too, so the trainer's arguments are typed by what it uses.

Module names are the agent's own: ``named_modules_for_monitor()``'s keys are the ``<module>`` of every
``plasticity/<module>/...`` tag. The monitor's critic metrics (curvature, collapse, fitting) read the
module named ``critic``; DrQ-v2 and SAC also call their modules ``encoder`` and ``actor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from rlplastic.agent_hooks import AgentHooks
from rlplastic.replay import Batch

__all__ = [
    "CRITIC",
    "PROBE_FEATURES",
    "Agent",
    "Batch",
    "CriticProbe",
    "Env",
    "InjectableAgent",
    "Interventions",
    "Monitor",
    "MonitoredAgent",
    "ProbedAgent",
    "RRController",
    "RecyclableAgent",
    "Replay",
    "ResettableAgent",
    "require",
]

# -- the agent ----------------------------------------------------------------------------------------

#: The name of the module the library treats as the critic: the monitor's critic metrics (grad norm,
#: curvature, collapse, target fitting) and the critic-side interventions (SAM, nc_reg, injection's
#: default) read ``named_modules_for_monitor()["critic"]``.
CRITIC = "critic"


@runtime_checkable
class Agent(Protocol):
    """What the training loop calls."""

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """An action in [-1, 1] for one observation; the mean action when ``eval_mode``."""
        ...

    def update(self, batch: Batch, step: int) -> Mapping[str, Tensor | float]:
        """One gradient update on ``batch``; a flat dict of metrics (logged as ``train/<key>``).

        Tensors may stay on the device: the loop averages them there and reads them once per log.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks and optimizer states: tensors and plain values only."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        ...


@runtime_checkable
class MonitoredAgent(Protocol):
    """An agent the monitor, the regularizers and SAM can plug into (with or without the trainer's
    :class:`Agent` methods: a loop of your own may drive it).

    Attributes:
        hooks: the agent's :class:`~rlplastic.agent_hooks.AgentHooks`. The agent wraps each forward
            that makes a module's loss in ``hooks.loss_phase(module)`` (FAU is counted there), adds
            ``hooks.extra_loss(module, context)`` to each module's loss and steps each optimizer with
            ``hooks.step(module, optimizer, loss_again)``.
    """

    hooks: AgentHooks

    def named_modules_for_monitor(self) -> dict[str, nn.Module]:
        """The networks whose plasticity is measured, by name (the ``<module>`` of every tag)."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by the name of the module they train (a parameter-free module has none)."""
        ...


@dataclass
class CriticProbe:
    """A frozen critic loss and the features it is made of, for one probe batch.

    An agent builds it in ``critic_probe(batch, step)``: one augmentation draw, the encoder features and
    the TD targets are computed once and frozen, so :attr:`loss_fn` is one fixed function of
    :attr:`params`. Building it changes no parameter.

    Attributes:
        loss_fn: recomputes the critic loss from the frozen inputs; differentiable w.r.t. ``params`` only.
        params: the critic parameters the loss is a function of (Hessian and sharpness are taken over them).
        features: detached feature matrices (n × d) under the names of :data:`PROBE_FEATURES`; any may be
            left out.
        td_target: the frozen TD target, shape (n,) (the classes of neural collapse are its quantile bins).
        q: the first Q head's prediction, shape (n,).
        head_weight: the first Q head's last-layer weight, shape (d,), with ``d`` the width of
            ``features["critic_penultimate"]``.
        head_bias: its bias (a 0-d tensor).
        critic_inputs: the frozen, detached inputs of the critic's forward, so that ``critic(*critic_inputs)``
            is the probe forward; the target-fitting probe trains a copy of the critic on them. Empty: no fitting.
        encoder_inputs: the frozen, detached input of the encoder's forward on the probe batch (the augmented
            observations as the encoder sees them), so that ``critic(encoder(*encoder_inputs), critic_inputs[1])``
            is the probe forward from observations; the encoder+critic fitting probe (``monitor.fit_encoder``)
            trains a copy of both on them. Empty: no encoder+critic fitting.
    """

    loss_fn: Callable[[], Tensor]
    params: list[nn.Parameter]
    features: dict[str, Tensor] = field(default_factory=dict)
    td_target: Tensor | None = None
    q: Tensor | None = None
    head_weight: Tensor | None = None
    head_bias: Tensor | None = None
    critic_inputs: tuple[Tensor, ...] = ()
    encoder_inputs: tuple[Tensor, ...] = ()

    @classmethod
    def of_twin_q_critic(
        cls,
        critic: nn.Module,
        features: Tensor,
        action: Tensor,
        td_target: Tensor,
        loss: Callable[[Tensor, Tensor, Tensor], Tensor],
        extra_features: Mapping[str, Tensor] | None = None,
        encoder_inputs: Sequence[Tensor] = (),
    ) -> CriticProbe:
        """The probe of a critic built like DrQ-v2's: ``trunk`` on the features, then heads ``Q1``, ``Q2``
        (``nn.Sequential`` ending in a Linear) on ``[trunk(features), action]``.

        Args:
            critic: the critic; ``critic(features, action)`` returns ``(q1, q2)``.
            features: the frozen, detached encoder features of the probe batch.
            action: the batch actions.
            td_target: the frozen TD target, shape (n, 1).
            loss: ``loss(q1, q2, td_target)``, the agent's critic loss.
            extra_features: more :data:`PROBE_FEATURES` entries (``encoder``, ``actor_trunk``).
            encoder_inputs: the encoder's frozen input that gave ``features`` (the augmented observations), for
                the encoder+critic fitting probe; empty: none.
        """
        with torch.no_grad():
            critic_trunk = critic.trunk(features)
            penultimate = critic.Q1[:-1](torch.cat([critic_trunk, action], dim=-1))
            q1 = critic.Q1[-1](penultimate)
        head = critic.Q1[-1]
        return cls(
            loss_fn=lambda: loss(*critic(features, action), td_target),
            # frozen parameters (a plasticity-injected head) are constants of the loss, not variables
            params=[p for p in critic.parameters() if p.requires_grad],
            features={**(extra_features or {}), "critic_trunk": critic_trunk, "critic_penultimate": penultimate},
            td_target=td_target.squeeze(-1),
            q=q1.squeeze(-1),
            head_weight=head.weight.detach().squeeze(0),
            head_bias=head.bias.detach().squeeze(0),
            critic_inputs=(features, action),
            encoder_inputs=tuple(t.detach() for t in encoder_inputs),
        )


#: The feature matrices the monitor reads from :attr:`CriticProbe.features`: ``encoder`` (the encoder's
#: output) → ``encoder/…`` tags, ``critic_trunk`` → ``critic/trunk/…``, ``actor_trunk`` → ``actor/trunk/…``,
#: ``critic_penultimate`` (the input of the first Q head's last Linear) → ``critic/…``, also the source of
#: the last-layer Hessian and of neural collapse. Fixed names, so every tag is known before the first probe.
PROBE_FEATURES: tuple[str, ...] = ("encoder", "critic_trunk", "actor_trunk", "critic_penultimate")


@runtime_checkable
class ProbedAgent(MonitoredAgent, Protocol):
    """An agent whose critic the monitor can probe (rank, curvature, collapse, target fitting)."""

    def critic_probe(self, batch: Batch, step: int) -> CriticProbe:
        """A :class:`CriticProbe` on ``batch``; runs each network's first forward on ``batch.obs``
        (the monitor reads dormant units from first forwards) and changes no parameter."""
        ...


@runtime_checkable
class ResettableAgent(MonitoredAgent, Protocol):
    """An agent whose modules can be re-initialised (resets, shrink-and-perturb, ReDo, injection)."""

    def fresh_module(self, name: str) -> nn.Module:
        """A newly initialised module with the architecture of ``named_modules_for_monitor()[name]``, on
        the agent's device, drawn from the global torch RNG like the agent's own construction."""
        ...

    def target_networks(self) -> dict[str, nn.Module]:
        """Online module name → its target copy, which a reset sets equal to the fresh module."""
        ...


@runtime_checkable
class RecyclableAgent(ResettableAgent, Protocol):
    """An agent whose dormant units ReDo can recycle."""

    def layer_links(self) -> dict[str, tuple[str, ...]]:
        """Unit links across modules: ``"<module>.<path>"`` of a producing layer → the layers reading its
        units. Links inside one ``nn.Sequential`` (Linear/Conv → activation → next) need no entry."""
        ...

    def forward_for_statistics(self, batch: Batch) -> None:
        """Run each monitored module once on ``batch`` with no loss phase, augmentation or autocast."""
        ...


@runtime_checkable
class InjectableAgent(ResettableAgent, Protocol):
    """An agent whose heads plasticity injection can grow."""

    def injection_heads(self) -> dict[str, tuple[str, ...]]:
        """Module name → the paths of its submodules that injection treats as heads."""
        ...


def _members(protocol: type) -> list[str]:
    """The methods and attributes a protocol (and its protocol bases) declares, in declaration order."""
    names: list[str] = []
    for cls in reversed(protocol.__mro__):
        if cls.__module__ != __name__ or not getattr(cls, "_is_protocol", False):
            continue  # typing's own Protocol and Generic, object
        for name in (*getattr(cls, "__annotations__", {}), *vars(cls)):
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def require(agent: object, protocol: type, needed_by: str) -> None:
    """Refuse ``agent`` at start when it lacks a member of ``protocol``.

    Args:
        agent: the agent.
        protocol: one of this module's agent protocols.
        needed_by: who needs it, for the message (``"intervention.redo"``, ``"the monitor's probes"``).

    Raises:
        ValueError: naming the agent's class, every missing method or attribute, and who needs them.
    """
    missing = [name for name in _members(protocol) if not hasattr(agent, name)]
    if missing:
        described = ", ".join(f"{name}()" if callable(getattr(protocol, name, None)) else name for name in missing)
        raise ValueError(
            f"{needed_by} needs an agent with {protocol.__name__} (rlplastic.protocols): "
            f"{type(agent).__name__} has no {described}"
        )


# -- what the loop drives besides the agent ------------------------------------------------------------


class Env(Protocol):
    """A gymnasium-style environment with exact state capture (``envs.dmc.DMCEnv``)."""

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]: ...
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]: ...
    def last_frame(self) -> np.ndarray: ...
    def render(self) -> np.ndarray: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...


class Replay(Protocol):
    """A replay buffer (``rlplastic.replay.ReplayBuffer``, ``rlplastic.replay_device.DeviceReplayBuffer``)."""

    def __len__(self) -> int: ...
    def add_first(self, frame: np.ndarray) -> None: ...
    def add(self, action: np.ndarray, reward: float, discount: float, frame: np.ndarray, last: bool) -> None: ...
    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", rng: np.random.Generator | None = None
    ) -> Batch: ...
    def recent(self, batch_size: int, device: torch.device | str = "cpu") -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RRController(Protocol):
    """A replay-ratio controller (``rlplastic.rr``)."""

    value: float
    total_updates: int
    signals_needed: tuple[str, ...]

    def updates_due(self, step: int) -> int: ...
    def observe(self, signals: Mapping[str, float], frame: int) -> list[str]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Monitor(Protocol):
    """A plasticity monitor (``rlplastic.monitor.PlasticityMonitor``) as the loop drives it."""

    def attach(self, agent: MonitoredAgent) -> None: ...
    def after_update(self, agent: MonitoredAgent, replay: Replay, step: int) -> None: ...
    def after_intervention(
        self, agent: MonitoredAgent, modules: Sequence[str], reinitialised: bool = False
    ) -> None: ...
    def end_episode(self) -> None: ...
    def log_values(self) -> dict[str, Tensor | float]: ...
    def pop_probe_records(self) -> list[Any]: ...
    def expected_tags(self) -> list[str]: ...
    def signals(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Interventions(Protocol):
    """The run's interventions (``rlplastic.interventions.InterventionSet``) as the loop drives them."""

    signals_needed: tuple[str, ...]

    def after_update(self, replay: Replay, device: torch.device) -> dict[str, dict[str, float]]: ...
    def at_episode_end(
        self, signals: Mapping[str, float], frame: int, replay: Replay, device: torch.device
    ) -> dict[str, dict[str, float]]: ...
    def train_metrics(self) -> dict[str, Tensor]: ...
    def restore_structure(self, agent_state: Mapping[str, Any]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
