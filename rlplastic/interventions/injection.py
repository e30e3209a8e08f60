"""Plasticity injection (Nikishin et al. 2023; docs/reference.md §4).

Each head ``h`` of a module (for DrQ-v2: the critic's ``Q1`` and ``Q2`` after the trunk, the actor's
``policy``) is replaced by ``InjectedHead(h, f₁, f₂)`` computing ``h(x) + (f₁(x) − f₂(x))``, where
``f₁`` and ``f₂`` are two copies of one fresh initialisation. ``h`` and ``f₂`` are frozen; only ``f₁``
trains. Because ``f₁ = f₂`` at injection time, ``f₁(x) − f₂(x)`` is exactly zero (the same float
operations on the same values) and the output does not change at all, while the trainable capacity is
fresh.

Optimizer: ``f₁``'s parameters join the module's optimizer as one new param group with the
hyperparameters of its first group; ``h``'s parameters leave the optimizer (and their state is
dropped), so no optimizer can move them — not even Adam with a zero gradient and leftover momentum.

Target network: a module with a target copy (the critic) gets the same structure there, built around
the target's *own* old head: ``InjectedHead(h_target, copy(f₁), copy(f₂))``. The target's output is
therefore unchanged too, its lag behind the online head is kept, and the Polyak update keeps pairing
parameters one to one (same structure, same order).

Resuming. Injection changes the module's parameter names (``Q1.0.weight`` → ``Q1.base.0.weight``,
plus ``Q1.trainable.*``, ``Q1.frozen.*``) and adds an optimizer param group, so a freshly built agent
cannot load an injected agent's ``state_dict`` until it is injected the same way. The structure is
readable from the saved state itself: call :func:`reinject_from_state` on the new agent with the
saved agent state, then ``agent.load_state_dict(state)``. To keep that rebuild unambiguous, a module is
injected at most once, all its heads in one call, in the module's registration order.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlplastic.interventions.base import CRITIC, INTERVENTIONS, Change, Operation, Report
from rlplastic.interventions.optim_state import optimizer_of
from rlplastic.protocols import InjectableAgent, Monitor, Replay, ResettableAgent

__all__ = ["Inject", "InjectedHead", "inject", "injected_heads", "reinject_from_state"]


class _Concat(nn.Module):
    """Concatenate the outputs of several modules on the last dim."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([part(x) for part in self.parts], dim=-1)


class InjectedHead(nn.Module):
    """``base(x) + (trainable(x) − frozen(x))``: a frozen head plus a fresh trainable residual.

    Indexing mirrors an ``nn.Sequential`` MLP head so that code reading a head's penultimate features
    and last layer (``head[:-1]``, ``head[-1]``, e.g. ``critic_probe``) still works: an injected MLP is
    exactly one MLP of three times the width with block-diagonal hidden layers, whose penultimate
    features are the three penultimate feature vectors concatenated and whose last layer has weight
    ``[W, W₁, −W₂]`` and bias ``b + b₁ − b₂``. ``head[-1]`` builds that Linear (detached, not a
    parameter of the network).

    :param base: The original head (frozen here).
    :param trainable: A fresh head, trained from now on.
    :param frozen: An exact copy of ``trainable`` at injection time (frozen here).
    """

    def __init__(self, base: nn.Module, trainable: nn.Module, frozen: nn.Module) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.trainable = trainable
        self.frozen = frozen.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        # base + (f1 − f2), not (base + f1) − f2: f1 − f2 is exactly 0 at injection, and base + 0 == base
        return self.base(x) + (self.trainable(x) - self.frozen(x))

    def __getitem__(self, index: int | slice) -> nn.Module:
        parts = (self.base, self.trainable, self.frozen)
        if not all(isinstance(p, nn.Sequential) and isinstance(p[-1], nn.Linear) for p in parts):
            raise TypeError("indexing an InjectedHead needs Sequential heads ending in nn.Linear")
        if isinstance(index, slice) and index == slice(None, -1):
            return _Concat(*(p[:-1] for p in parts))
        if index == -1:
            last = [p[-1] for p in parts]
            linear = nn.Linear(sum(m.in_features for m in last), last[0].out_features)
            linear = linear.to(last[0].weight.device, last[0].weight.dtype).requires_grad_(False)
            with torch.no_grad():
                linear.weight.copy_(torch.cat([last[0].weight, last[1].weight, -last[2].weight], dim=1))
                linear.bias.copy_(last[0].bias + last[1].bias - last[2].bias)
            return linear
        raise TypeError(f"InjectedHead supports only [:-1] (penultimate features) and [-1] (last layer), got {index!r}")


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    # setattr on an existing child keeps its position in _modules, so parameter order is unchanged
    setattr(root.get_submodule(parent_path), child, new)


def injected_heads(agent: ResettableAgent) -> dict[str, tuple[str, ...]]:
    """Module name → paths of its injected heads (modules without any are left out)."""
    found = {}
    for name, module in agent.named_modules_for_monitor().items():
        heads = tuple(path for path, m in module.named_modules() if isinstance(m, InjectedHead))
        if heads:
            found[name] = heads
    return found


def inject(agent: InjectableAgent, module: str = CRITIC, heads: Sequence[str] | None = None) -> dict[str, float]:
    """Plasticity injection of the heads of ``module``; see the module docstring.

    Draws one ``agent.fresh_module(module)`` (global torch RNG) and takes each head's fresh weights
    from it.

    :param agent: Agent with ``named_modules_for_monitor``, ``fresh_module``, ``optimizers``,
        ``target_networks`` and, when ``heads`` is ``None``, ``injection_heads``.
    :param module: The module whose heads are injected (``critic`` or ``actor`` for DrQ-v2).
    :param heads: Submodule paths of the heads; ``None`` = ``agent.injection_heads()[module]``.
    :return: Flat report: ``heads``, ``params/trainable`` (new trainable parameters),
        ``params/frozen`` (parameters frozen or added frozen, online network).
    """
    modules = agent.named_modules_for_monitor()
    if module not in modules:
        raise ValueError(f"inject: unknown module {module!r}, the agent offers {list(modules)}")
    online = modules[module]
    if heads is None:
        defaults = agent.injection_heads()
        if module not in defaults:
            raise ValueError(f"inject: the agent declares no heads for {module!r}; it has heads for {list(defaults)}")
        heads = defaults[module]
    if isinstance(heads, str) or not heads:
        raise ValueError(f"heads must be a non-empty sequence of submodule paths, got {heads!r}")
    if injected_heads(agent).get(module):
        raise ValueError(f"inject: {module!r} is already injected; inject each module once (see reinject_from_state)")
    paths = dict(online.named_modules())
    unknown = [h for h in heads if h not in paths or h == ""]
    if unknown:
        raise ValueError(f"inject: {module!r} has no head(s) {unknown}")
    # registration order, whatever the argument order: reinject_from_state rebuilds in this order
    ordered = [path for path in paths if path in set(heads)]
    optimizer = optimizer_of(agent.optimizers(), next(online.parameters()))
    target = agent.target_networks().get(module)

    fresh = agent.fresh_module(module)
    trainable_params: list[nn.Parameter] = []
    frozen_count = 0
    for path in ordered:
        old = online.get_submodule(path)
        new_trainable = fresh.get_submodule(path)
        new_frozen = copy.deepcopy(new_trainable)
        if target is not None:
            # built before the online head changes: deep copies of fresh modules carry no hooks
            target_head = InjectedHead(
                target.get_submodule(path), copy.deepcopy(new_trainable), copy.deepcopy(new_frozen)
            )
            _set_submodule(target, path, target_head)
        old_params = list(old.parameters())
        for param in old_params:
            param.grad = None  # a stale gradient from the last update would read as "still trained"
        _set_submodule(online, path, InjectedHead(old, new_trainable, new_frozen))
        if optimizer is not None:
            _remove_from_optimizer(optimizer, old_params)
        trainable_params += list(new_trainable.parameters())
        frozen_count += sum(p.numel() for p in old_params) + sum(p.numel() for p in new_frozen.parameters())
    if optimizer is not None:
        hyper = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        optimizer.add_param_group({**hyper, "params": trainable_params})
    return {
        "heads": len(ordered),
        "params/trainable": sum(p.numel() for p in trainable_params),
        "params/frozen": frozen_count,
    }


def _remove_from_optimizer(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    gone = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in gone]
    for param in params:
        optimizer.state.pop(param, None)


_TRAINABLE_KEY = re.compile(r"^(.+)\.trainable\.")


def reinject_from_state(agent: ResettableAgent, agent_state: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Inject a freshly built agent the way the agent that saved ``agent_state`` was injected.

    Reads the injected heads from the saved parameter names (``<head>.trainable.*`` with matching
    ``<head>.base.*`` and ``<head>.frozen.*``) of every monitored module and calls :func:`inject` for
    each such module. Call it before ``agent.load_state_dict(agent_state)``. It draws fresh modules
    from the global torch RNG (their values are then overwritten by the load), so restore RNG states
    after it, as a resume does anyway.

    :return: Module name → the heads injected (empty if the saved agent was never injected).
    """
    done: dict[str, tuple[str, ...]] = {}
    for name in agent.named_modules_for_monitor():
        state = agent_state.get(name)
        if not isinstance(state, Mapping):
            continue
        keys = [k for k in state if isinstance(k, str)]
        heads: list[str] = []
        for key in keys:
            match = _TRAINABLE_KEY.match(key)
            if match and match.group(1) not in heads:
                head = match.group(1)
                if any(k.startswith(f"{head}.base.") for k in keys) and any(
                    k.startswith(f"{head}.frozen.") for k in keys
                ):
                    heads.append(head)
        if heads:
            inject(agent, name, heads)
            done[name] = tuple(heads)
    return done


@INTERVENTIONS.register("inject")
class Inject(Operation):
    """The ``inject`` intervention: :func:`inject` every one of ``modules`` once, when the trigger says so.

    :param modules: modules whose heads (``agent.injection_heads()``) are injected.
    :param trigger: when (:mod:`~rlplastic.interventions.triggers`).
    """

    needs = InjectableAgent
    changes_structure = True
    one_shot = True

    def __init__(
        self,
        agent: InjectableAgent,
        monitor: Monitor | None = None,
        modules: Sequence[str] = (CRITIC,),
        trigger: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(agent, monitor, modules, trigger)
        heads = agent.injection_heads()
        missing = [m for m in self.modules if m not in heads]
        if missing:
            raise ValueError(f"intervention.inject.modules {missing} have no heads: allowed are {list(heads)}")
        self.change = Change(self.modules, structure=True)

    def fire(self, replay: Replay, device: torch.device | str, rng: np.random.Generator) -> Report:
        report: Report = {}
        for module in self.modules:
            report.update({f"{module}/{k}": v for k, v in inject(self.agent, module).items()})
        return report

    def restore_structure(self, agent_state: Mapping[str, Any]) -> tuple[str, ...]:
        """Re-inject the heads the saved agent had (unless this agent is injected already)."""
        if injected_heads(self.agent):
            return ()
        return tuple(reinject_from_state(self.agent, agent_state))
