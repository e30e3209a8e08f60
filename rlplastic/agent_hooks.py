"""The one object through which the plasticity tooling plugs into an agent's update.

An agent owns one :class:`AgentHooks` (``self.hooks = AgentHooks()``) and calls it at three places in
its update; it needs to know no monitor, regularizer or SAM class::

    with self.hooks.loss_phase("critic"):            # this forward makes the critic's loss
        q1, q2 = self.critic(features, action)
    loss = critic_loss + self.hooks.extra_loss("critic", {"td_target": target})
    loss.backward()
    self.hooks.step("critic", self.critic_opt, loss_again)   # instead of critic_opt.step()

``loss_again()`` recomputes the module's loss on the same inputs (SAM needs it for the critic).

The tooling registers on the same object: the monitor listens to loss phases (it counts FAU in the
forward that makes a loss, with no second forward), regularizers add loss terms, SAM replaces a
module's optimizer step. Nothing registered here is state: it is rebuilt from the config on every
start, so it never enters a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["AgentHooks", "LossTerm", "PhaseListener", "StepRule"]

#: ``listener(modules, active)``: called with ``active=True`` when a loss forward of ``modules`` starts
#: and ``active=False`` when it ends.
PhaseListener = Callable[[tuple[str, ...], bool], None]


class LossTerm(Protocol):
    """An extra loss term: ``term(module, context)`` is added to the loss that trains ``module``.

    ``context`` holds tensors of the current loss (DrQ-v2: the detached TD target ``td_target`` for
    ``critic`` and ``encoder``; nothing for ``actor``). ``None`` adds nothing.
    """

    def __call__(self, module: str, context: Mapping[str, Tensor]) -> Tensor | None: ...


class StepRule(Protocol):
    """Replaces ``optimizer.step()`` for one module (SAM: ascend, recompute the loss, step at θ).

    Called after ``loss.backward()``; ``loss_again()`` recomputes that module's loss on the same batch
    (the same frozen inputs, at the parameters as they are now) without calling ``backward``; ``None``
    when the agent offers no recomputation for that module (a rule that needs one refuses it).
    """

    def __call__(self, optimizer: torch.optim.Optimizer, loss_again: Callable[[], Tensor] | None) -> None: ...


class AgentHooks:
    """Loss-phase events, extra loss terms and pluggable optimizer steps, for one agent.

    Attributes:
        phase_events: how many loss phases have started (a plain counter, no device work): the monitor
            warns when an agent's updates never open one, instead of reporting NaN FAU.
    """

    def __init__(self) -> None:
        self.phase_events = 0
        self._listeners: list[PhaseListener] = []
        self._terms: list[LossTerm] = []
        self._steps: dict[str, StepRule] = {}

    # -- for the agent ----------------------------------------------------------------------------

    @contextmanager
    def loss_phase(self, *modules: str) -> Iterator[None]:
        """Mark the block as the forward pass that produces the loss of ``modules``."""
        if not modules:
            raise ValueError("loss_phase needs the names of the modules whose loss this forward makes")
        self.phase_events += 1
        for listener in self._listeners:
            listener(modules, True)
        try:
            yield
        finally:
            for listener in self._listeners:
                listener(modules, False)

    def extra_loss(self, module: str, context: Mapping[str, Tensor]) -> Tensor | float:
        """The sum of every registered term for ``module`` (``0.0`` when there is none)."""
        total: Tensor | float = 0.0
        for term in self._terms:
            value = term(module, context)
            if value is not None:
                total = total + value
        return total

    def step(
        self, module: str, optimizer: torch.optim.Optimizer, loss_again: Callable[[], Tensor] | None = None
    ) -> None:
        """``optimizer.step()``, or the step rule registered for ``module`` (given ``loss_again``)."""
        rule = self._steps.get(module)
        if rule is None:
            optimizer.step()
        else:
            rule(optimizer, loss_again)

    # -- for the tooling --------------------------------------------------------------------------

    def add_phase_listener(self, listener: PhaseListener) -> None:
        """Call ``listener(modules, active)`` around every loss forward."""
        self._listeners.append(listener)

    def add_loss_term(self, term: LossTerm) -> None:
        """Add ``term(module, context)`` to the loss of each module it returns a tensor for."""
        self._terms.append(term)

    def set_step_rule(self, module: str, rule: StepRule) -> None:
        """Step ``module``'s optimizer with ``rule``; one rule per module."""
        if module in self._steps:
            raise ValueError(f"{module!r} already has a step rule ({type(self._steps[module]).__name__})")
        self._steps[module] = rule
