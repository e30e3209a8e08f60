"""Whole-module re-initialisation: resets (Nikishin et al. 2022) and shrink-and-perturb (Ash & Adams).

Everything goes through the agent protocol (docs/design.md), never through agent classes:

* ``agent.named_modules_for_monitor()`` — the modules by name (``encoder``, ``actor``, ``critic``);
* ``agent.fresh_module(name)`` — a newly initialised module of the same architecture, drawn from the
  global torch RNG;
* ``agent.target_networks()`` — online name → its target copy (``{"critic": critic_target}``);
* ``agent.optimizers()`` — whose state for the touched parameters is forgotten.

Fresh values are copied *into* the existing parameters (``copy_`` under ``no_grad``), never swapped
for new ``Parameter`` objects, so the optimizers, hooks and Polyak update keep pointing at the right
tensors. The replay buffer is not the agent's and is never touched.

Each ``apply`` returns a flat report of numbers, suitable for logging as ``events/<name>/<key>``:
``params/<module>`` (parameters re-drawn), ``target_params/<module>`` (target parameters re-synced),
``optimizer_states/<module>`` (parameters whose optimizer state was dropped), and ``params`` (total).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rlplastic.interventions.base import CRITIC, INTERVENTIONS, Change, Operation, Report
from rlplastic.interventions.optim_state import optimizer_of, reset_param_state
from rlplastic.protocols import Monitor, Replay, ResettableAgent

__all__ = [
    "FullReset",
    "HeadsReset",
    "ShrinkPerturb",
    "reset_modules",
    "shrink_and_perturb",
]


def _check_names(agent: ResettableAgent, names: Sequence[str]) -> dict[str, nn.Module]:
    modules = agent.named_modules_for_monitor()
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty sequence of module names, got {names!r}")
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"unknown module names {unknown}: the agent offers {list(modules)}")
    if len(set(names)) != len(names):
        raise ValueError(f"module names repeat in {list(names)}")
    return {n: modules[n] for n in names}


def _fresh_like(agent: ResettableAgent, name: str, module: nn.Module) -> nn.Module:
    """``agent.fresh_module(name)``, checked to have exactly the parameters of ``module``."""
    fresh = agent.fresh_module(name)
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    new = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if have != new:
        # e.g. after plasticity injection the module has extra heads the constructor does not build
        raise ValueError(
            f"module {name!r} no longer has the architecture agent.fresh_module({name!r}) builds "
            f"(state keys/shapes differ: {sorted(set(have) ^ set(new))[:4]}...); "
            "was it changed by plasticity injection?"
        )
    return fresh


def _forget_optimizer_state(agent: ResettableAgent, module: nn.Module) -> int:
    optimizers = agent.optimizers()
    dropped = 0
    for param in module.parameters():
        optimizer = optimizer_of(optimizers, param)
        if optimizer is not None:
            dropped += reset_param_state(optimizer, [param])
    return dropped


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def reset_modules(agent: ResettableAgent, names: Sequence[str], sync_targets: bool = True) -> Report:
    """Re-initialise the named modules in place, forget their optimizer state, re-sync their targets.

    Fresh modules are drawn with ``agent.fresh_module`` in the order of ``names`` (so a re-seeded
    RNG reproduces them). For every name that has a target copy, the target becomes an exact copy of
    the reset online module — as in Nikishin et al. 2022, where the target is reset with its network.

    :param agent: An agent implementing the protocol above.
    :param names: Module names, e.g. ``("encoder", "actor", "critic")``.
    :param sync_targets: Copy each reset module into its target network.
    :return: Flat report (see the module docstring).
    """
    modules = _check_names(agent, names)
    targets = agent.target_networks()
    report: Report = {}
    for name, module in modules.items():
        fresh = _fresh_like(agent, name, module)
        # load_state_dict copies into the existing tensors: parameter identity (optimizer, hooks) holds
        module.load_state_dict(fresh.state_dict())
        report[f"params/{name}"] = _count(module)
        report[f"optimizer_states/{name}"] = _forget_optimizer_state(agent, module)
        if sync_targets and name in targets:
            targets[name].load_state_dict(module.state_dict())
            report[f"target_params/{name}"] = _count(targets[name])
    report["params"] = sum(v for k, v in report.items() if k.startswith("params/"))
    return report


def _check_alpha_beta(alpha: float, beta: float) -> tuple[float, float]:
    for label, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1] (the shrink factor)")
    if beta < 0.0:
        raise ValueError(f"beta={beta!r} must be >= 0 (the weight of the fresh initialisation)")
    return float(alpha), float(beta)


@torch.no_grad()
def shrink_and_perturb(
    agent: ResettableAgent,
    names: Sequence[str],
    alpha: float,
    beta: float,
    reset_optimizer: bool = True,
) -> Report:
    """Shrink-and-perturb toward a fresh initialisation: ``θ ← α·θ + β·θ_fresh``, every parameter.

    The exact variant: ``θ_fresh`` is one fresh draw of the whole module from the agent's own
    initialiser (``agent.fresh_module``; for DrQ-v2 orthogonal Linear/Conv weights, zero biases,
    LayerNorm weight 1 and bias 0), not Ash & Adams' isotropic Gaussian noise; it is applied to every
    parameter, biases and LayerNorm affine parameters included. Fresh modules are drawn in the order
    of ``names``.

    A module with a target copy gets the same map with the *same* ``θ_fresh``,
    ``θ_target ← α·θ_target + β·θ_fresh``, so the target keeps its (scaled) lag behind the online
    network instead of jumping onto it.

    :param agent: An agent implementing the protocol in the module docstring.
    :param names: Module names to shrink and perturb.
    :param alpha: Shrink factor in [0, 1] (e.g. 0.8).
    :param beta: Weight of the fresh initialisation, >= 0 (e.g. 0.2).
    :param reset_optimizer: Forget the optimizer state of the touched parameters (every parameter
        moved, so its Adam moments no longer describe its neighbourhood).
    :return: Flat report (see the module docstring).
    """
    alpha, beta = _check_alpha_beta(alpha, beta)
    modules = _check_names(agent, names)
    targets = agent.target_networks()
    report: Report = {}
    for name, module in modules.items():
        fresh = dict(_fresh_like(agent, name, module).named_parameters())
        for key, param in module.named_parameters():
            param.mul_(alpha).add_(fresh[key], alpha=beta)
        report[f"params/{name}"] = _count(module)
        if reset_optimizer:
            report[f"optimizer_states/{name}"] = _forget_optimizer_state(agent, module)
        if name in targets:
            for key, param in targets[name].named_parameters():
                param.mul_(alpha).add_(fresh[key], alpha=beta)
            report[f"target_params/{name}"] = _count(targets[name])
    report["params"] = sum(v for k, v in report.items() if k.startswith("params/"))
    return report


@INTERVENTIONS.register("reset")
class FullReset(Operation):
    """Nikishin et al. 2022 reset of the whole agent: encoder, actor and critic (and target), replay kept.

    :param modules: Modules re-initialised; the default is every module of DrQ-v2.
    :param trigger: when (:mod:`~rlplastic.interventions.triggers`).
    :param reanchor: init-anchored regularizers take the fresh weights as θ₀ (``False``: keep the first).
    """

    needs = ResettableAgent

    def __init__(
        self,
        agent: ResettableAgent,
        monitor: Monitor | None = None,
        modules: Sequence[str] = ("encoder", "actor", CRITIC),
        trigger: Mapping[str, Any] | None = None,
        reanchor: bool = True,
    ) -> None:
        super().__init__(agent, monitor, modules, trigger)
        self.change = Change(self.modules, reinitialised=True, reanchor=bool(reanchor))

    def fire(self, replay: Replay, device: torch.device | str, rng: np.random.Generator) -> Report:
        return self.apply()

    def apply(self) -> Report:
        """Reset ``self.modules`` of the agent; see :func:`reset_modules`."""
        return reset_modules(self.agent, self.modules)


@INTERVENTIONS.register("heads_reset")
class HeadsReset(FullReset):
    """The pixel-DrQ reset variant: actor and critic heads (and the target critic), encoder kept."""

    def __init__(
        self,
        agent: ResettableAgent,
        monitor: Monitor | None = None,
        modules: Sequence[str] = ("actor", CRITIC),
        trigger: Mapping[str, Any] | None = None,
        reanchor: bool = True,
    ) -> None:
        super().__init__(agent, monitor, modules, trigger, reanchor)


@INTERVENTIONS.register("shrink_perturb")
class ShrinkPerturb(Operation):
    """Shrink-and-perturb ``θ ← α·θ + β·θ_fresh`` of whole modules; see :func:`shrink_and_perturb`.

    :param alpha: Shrink factor in [0, 1].
    :param beta: Weight of the fresh initialisation, >= 0.
    :param modules: Modules to shrink and perturb.
    :param reset_optimizer: Forget the optimizer state of the touched parameters.
    :param trigger: when (:mod:`~rlplastic.interventions.triggers`).
    """

    needs = ResettableAgent

    def __init__(
        self,
        agent: ResettableAgent,
        monitor: Monitor | None = None,
        alpha: float = 0.8,
        beta: float = 0.2,
        modules: Sequence[str] = ("encoder", "actor", CRITIC),
        reset_optimizer: bool = True,
        trigger: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(agent, monitor, modules, trigger)
        self.alpha, self.beta = _check_alpha_beta(alpha, beta)
        self.reset_optimizer = reset_optimizer

    def fire(self, replay: Replay, device: torch.device | str, rng: np.random.Generator) -> Report:
        return self.apply()

    def apply(self) -> Report:
        """Shrink and perturb ``self.modules`` of the agent."""
        return shrink_and_perturb(self.agent, self.modules, self.alpha, self.beta, self.reset_optimizer)
