r"""Sharpness-Aware Minimization (Foret et al. 2021) as a wrapper around a base optimizer.

One SAM step, with g = ∇L(θ) over the wrapped parameters:

1. ascent ``ε = ρ · g / ‖g‖`` (one global L2 norm over all wrapped parameters), ``θ ← θ + ε``;
2. the gradient at θ + ε, ``∇L(θ + ε)``;
3. ``θ ← θ − ε`` (restored exactly from a copy, not by subtraction, so no rounding drift);
4. the base optimizer's step with ``∇L(θ + ε)``.

With an SGD base of learning rate η this is ``θ ← θ − η·∇L(θ + ρ g/‖g‖)``. docs/reference.md §4 notes the
finding of Koster & Kukla (2024): sharpness regularizers do not reduce plasticity loss; SAM is here to
test that on this testbed.

The wrapper is a transparent proxy of the base optimizer: ``param_groups``, ``state``,
``state_dict()``/``load_state_dict()`` and the step hooks are the base optimizer's, so interventions that
reset optimizer state (resets, ReDo), LR schedulers and ``weight_decay.DecoupledWeightDecay`` work the
same whether they are given the wrapper or the base. SAM itself keeps
nothing across steps (the perturbation lives only between :meth:`SAM.first_step` and
:meth:`SAM.second_step`), so checkpoints hold only the base optimizer's state.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from rlplastic.interventions.base import CRITIC, INTERVENTIONS, Intervention
from rlplastic.protocols import Monitor, MonitoredAgent

__all__ = ["SAM", "SAMStep", "SharpnessAware"]

# ‖g‖ below this makes ε = 0 rather than dividing by ~0 (a zero gradient has no ascent direction)
_TINY_NORM = 1e-12


def _check_rho(rho: Any) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho <= 0:
        raise ValueError(f"sam.rho={rho!r} must be a finite number > 0")
    return float(rho)


@torch.no_grad()
def _ascend(params: list[Tensor], rho: float) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """θ ← θ + ρ·g/‖g‖ over the ``params`` that have a gradient; returns the copies of θ and ‖g‖."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        raise RuntimeError("SAM: no parameter has a gradient; call loss.backward() first")
    grads = [p.grad for p in with_grad]
    dtype = functools.reduce(torch.promote_types, (g.dtype for g in grads))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.to(dtype)) for g in grads]))
    scale = rho / norm.clamp_min(_TINY_NORM)
    backup = [(p, p.detach().clone()) for p in with_grad]
    for p, g in zip(with_grad, grads, strict=True):
        p.add_(g * scale.to(p.dtype))
    return backup, norm


@torch.no_grad()
def _restore(backup: list[tuple[Tensor, Tensor]]) -> None:
    """θ back from the copies :func:`_ascend` made (copied, not subtracted: no rounding drift)."""
    for p, original in backup:
        p.copy_(original)


class SAMStep:
    """SAM as an agent step rule (:class:`~rlplastic.agent_hooks.StepRule`): the ``sam`` intervention.

    Registered for the critic (``agent.hooks.set_step_rule(CRITIC, SAMStep(rho))``, :class:`SharpnessAware`),
    it replaces the critic optimizer's step: ascend the optimizer's parameters to θ + ρ·g/‖g‖, recompute the loss there
    (``loss_again``), restore θ and step with ∇L(θ + ε). The optimizer itself is unchanged, so
    checkpoints, optimizer resets and weight decay see the same Adam.

    :param rho: ascent radius ρ > 0 (Foret et al.: 0.05).
    """

    def __init__(self, rho: float = 0.05) -> None:
        self.rho = _check_rho(rho)

    def __call__(self, optimizer: torch.optim.Optimizer, loss_again: Callable[[], Tensor] | None) -> None:
        if loss_again is None:
            raise ValueError("SAM needs the agent to pass loss_again to hooks.step (it recomputes the loss at θ + ε)")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        backup, _ = _ascend(params, self.rho)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss_again().backward()
        _restore(backup)
        optimizer.step()


@INTERVENTIONS.register("sam")
class SharpnessAware(Intervention):
    """The ``sam`` intervention: the critic's optimizer steps by SAM (:class:`SAMStep`, a step rule).

    :param rho: ascent radius ρ > 0 (Foret et al.: 0.05).
    """

    def __init__(self, agent: MonitoredAgent, monitor: Monitor | None = None, rho: float = 0.05) -> None:
        super().__init__(agent, monitor)
        self.step_rule = SAMStep(rho)

    def install(self) -> None:
        self.agent.hooks.set_step_rule(CRITIC, self.step_rule)


class SAM(torch.optim.Optimizer):
    r"""Sharpness-Aware Minimization around ``base_optimizer``.

    Two ways to drive it:

    * ``loss = sam.step(closure)``: ``closure`` computes the loss and calls ``backward()``; SAM clears the
      wrapped parameters' gradients before each call and calls it twice (at θ, then at θ + ε). Returns
      the loss at θ.
    * For agents that run their own backward passes: ``loss.backward()``; :meth:`first_step`; recompute the
      loss on the same batch and ``backward()``; :meth:`second_step`.

    Gradients of tensors outside the wrapped parameters (e.g. an encoder stepped by another optimizer)
    are the caller's business: SAM neither clears nor steps them.

    :param params: the parameters to perturb (usually the base optimizer's own, e.g.
        ``critic.parameters()``).
    :param base_optimizer: the optimizer that takes the actual step (e.g. the critic's Adam).
    :param rho: ascent radius ρ > 0 (Foret et al.: 0.05).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
    ) -> None:
        rho = _check_rho(rho)
        if not isinstance(base_optimizer, torch.optim.Optimizer) or isinstance(base_optimizer, SAM):
            raise ValueError(f"base_optimizer must be a torch.optim.Optimizer (not a SAM), got {base_optimizer!r}")
        self._ready = False
        super().__init__(params, {"rho": float(rho)})
        self.rho = float(rho)
        self.base_optimizer = base_optimizer
        self._params: list[Tensor] = [p for group in self._own_groups for p in group["params"]]
        self.defaults = {**base_optimizer.defaults, "rho": self.rho}
        self._backup: list[tuple[Tensor, Tensor]] | None = None
        # from here on param_groups and state are the base's (read through, so a base.load_state_dict,
        # which replaces those objects, is seen too): whatever reads or resets them sees one truth
        self._ready = True

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The base optimizer's param groups."""
        return self.base_optimizer.param_groups if self._ready else self._own_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if self._ready:
            self.base_optimizer.param_groups = value
        else:  # Optimizer.__init__ building SAM's own groups
            self._own_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The base optimizer's per-parameter state (Adam moments etc.)."""
        return self.base_optimizer.state if self._ready else self._own_state

    @state.setter
    def state(self, value: Any) -> None:
        if self._ready:
            self.base_optimizer.state = value
        else:
            self._own_state = value

    # -- the two halves -------------------------------------------------------------------------

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> Tensor:
        """Move the wrapped parameters to θ + ρ·g/‖g‖ using their current ``.grad`` (g at θ).

        :param zero_grad: clear the wrapped (and base) gradients afterwards, ready for the second backward.
        :return: ‖g‖, the global gradient norm at θ (0-d device tensor, no host sync).
        :raises RuntimeError: if no wrapped parameter has a gradient, or a perturbation is pending.
        """
        if self._backup is not None:
            raise RuntimeError("SAM.first_step called twice: call second_step() to restore θ first")
        self._backup, norm = _ascend(self._params, self.rho)
        if zero_grad:
            self.zero_grad()
        return norm

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore θ and take the base optimizer's step with the current gradient (∇L at θ + ε).

        :param zero_grad: clear the gradients after the step.
        :raises RuntimeError: without a preceding :meth:`first_step`.
        """
        if self._backup is None:
            raise RuntimeError("SAM.second_step without first_step: there is no perturbation to undo")
        _restore(self._backup)
        self._backup = None
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One full SAM step; ``closure`` computes the loss and calls ``backward()`` (called twice).

        :return: the loss at θ (what ``closure`` returned on its first call).
        :raises ValueError: without a closure (SAM needs a second gradient evaluation).
        """
        if closure is None:
            raise ValueError(
                "SAM.step needs a closure that computes the loss and calls backward(); "
                "or use first_step() / second_step() around your own backward passes"
            )
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the base optimizer's and the wrapped parameters."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)
        for p in self._params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    # -- pass-through to the base optimizer --------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """During construction: SAM's own groups. Afterwards: add to the base optimizer and perturb them too."""
        if not self._ready:
            super().add_param_group(param_group)
            return
        self.base_optimizer.add_param_group(param_group)
        self._params.extend(self.base_optimizer.param_groups[-1]["params"])

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (SAM keeps no state across steps)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimizer's state dict."""
        self.base_optimizer.load_state_dict(state_dict)

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Registered on the base optimizer: it runs before the base step, with θ restored (both step paths)."""
        return self.base_optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Registered on the base optimizer: it runs after the base step (both step paths)."""
        return self.base_optimizer.register_step_post_hook(hook)
