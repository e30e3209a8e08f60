r"""Decoupled weight decay (Loshchilov & Hutter, AdamW) as an optimizer hook (docs/reference.md §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rlplastic.interventions.base import INTERVENTIONS, Intervention, check_coef, check_state, check_targets
from rlplastic.protocols import Monitor, MonitoredAgent

__all__ = ["DecoupledWeightDecay"]


@INTERVENTIONS.register("weight_decay")
class DecoupledWeightDecay(Intervention):
    r"""AdamW-style decoupled weight decay ``θ ← θ − lr·coef·θ`` on the agent's optimizers.

    Added to an Adam optimizer it gives exactly ``torch.optim.AdamW(weight_decay=coef)``: like AdamW, the
    shrink uses each param group's current ``lr``, touches only parameters that have a gradient, and is
    applied **before** the Adam update of the same step. It runs in an optimizer step *pre*-hook
    (``register_step_pre_hook``): the gradient was already computed at the old θ and Adam's update does
    not read θ, so shrinking just before the step is AdamW's order; a post-hook would differ from AdamW
    by ``lr²·coef·update``. It adds no loss term (the shrink is outside the gradient, hence
    "decoupled").

    With DrQ-v2's lr 1e-4, ``coef`` 1e-5 (Ma et al.) shrinks by 1e-9 per step; the per-step factor is
    ``lr·coef`` as in torch's AdamW.

    :param agent: the agent; its optimizers are ``agent.optimizers()``.
    :param targets: names of the optimizers to decay; a module of the agent that has no optimizer (it has
        no parameters, like the states-mode encoder) is skipped.
    :param coef: decay coefficient >= 0 (AdamW's ``weight_decay``); 0 registers no hook.
    """

    def __init__(
        self, agent: MonitoredAgent, monitor: Monitor | None = None, *, targets: Sequence[str], coef: float = 1e-5
    ) -> None:
        super().__init__(agent, monitor)
        optimizers = agent.optimizers()
        if not isinstance(targets, (str, bytes)):
            modules = agent.named_modules_for_monitor()  # nothing to decay where there is no optimizer
            targets = [t for t in targets if t in optimizers or t not in modules]
        self.coef = check_coef(coef, self.name)
        self.targets = check_targets(targets, optimizers, self.name, what="optimizer")
        self._optimizers = {t: optimizers[t] for t in self.targets}

    def install(self) -> None:
        if self.coef > 0:
            for optimizer in self._optimizers.values():
                optimizer.register_step_pre_hook(self._decay)

    @torch.no_grad()
    def _decay(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        del args, kwargs
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr = group["lr"]
            if isinstance(lr, Tensor):  # tensor lr (capturable optimizers): one mul per parameter
                for p in params:
                    p.mul_(1 - lr * self.coef)
            else:
                torch._foreach_mul_(params, 1 - lr * self.coef)  # one fused kernel per group on GPU

    def state_dict(self) -> dict[str, Any]:
        """Stateless apart from its name (the hooks are rebuilt with the object)."""
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Check that ``state`` comes from a :class:`DecoupledWeightDecay`."""
        check_state(state, self.name)
