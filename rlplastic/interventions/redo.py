"""ReDo — recycling τ-dormant units (Sokar et al. 2023; docs/reference.md §4).

Every ``period`` gradient updates, on a statistics batch:

1. score every hidden ReLU unit of the chosen modules with ReDo's normalised activity
   (:func:`rlplastic.monitor.activity.dormant_mask`, one score per conv channel), from one plain
   forward the agent runs (``agent.forward_for_statistics(batch)``) while hooks keep the activations;
2. for each τ-dormant unit: re-draw its **incoming** weights from a fresh initialisation of the module
   (the matching rows of ``agent.fresh_module(name)``'s layer), zero its **bias**, zero its
   **outgoing** weights (the consumer's input columns), and zero the optimizer moments of all those
   entries (step count: see :mod:`rlplastic.interventions.optim_state`).

Zero outgoing weights make recycling function-preserving at the moment it happens: the new unit
fires, but nothing reads it until gradients grow its outgoing weights.

Which units, and what reads them. A recyclable unit is the output of a ``nn.Linear`` / ``nn.Conv2d``
followed *immediately* by ``nn.ReLU`` inside an ``nn.Sequential``; its consumer is the next
Linear/Conv in the same Sequential. The output layer has no ReLU after it, so it is never recycled.
When a ReLU ends its Sequential, the consumers come from ``agent.layer_links()`` (producer
``"<module>.<path>"`` → consumer names); a unit with neither is not recycled (its outgoing weights
could not be zeroed). For DrQ-v2 that link is the encoder's last conv → ``actor.trunk.0`` and
``critic.trunk.0``: a conv channel feeds ``H·W`` consecutive input columns of the flattened map, so
the channel mask is expanded over the spatial positions (``repeat_interleave(H·W)``).

Target networks. A target copy with its own producer (the critic's Q layers) is left alone: its
units did not change. A target whose consumer reads a producer it shares with the online network
(``critic_target.trunk.0`` reads the online encoder) gets the same columns zeroed, otherwise the new
encoder channels would leak into the TD targets.

Modules with frozen parameters (a plasticity-injected head) are refused: recycling a frozen head is
meaningless and its layout no longer matches ``fresh_module``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlplastic.interventions.base import CRITIC, INTERVENTIONS, Operation, Report
from rlplastic.interventions.optim_state import StepPolicy, check_step_policy, optimizer_of, zero_masked_state
from rlplastic.monitor.activity import dormant_mask
from rlplastic.monitor.hooks import ActivationCapture
from rlplastic.protocols import Batch, Monitor, RecyclableAgent, Replay

__all__ = ["ReDo", "RecycleLayer", "recyclable_layers"]

Optimizers = Mapping[str, torch.optim.Optimizer]

_WEIGHTED = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class RecycleLayer:
    """One recyclable layer: ``producer`` (Linear/Conv) → ``relu`` → ``consumers``.

    Names are ``"<module>.<path>"`` with ``<module>`` a key of ``agent.named_modules_for_monitor()``.
    """

    producer: str
    relu: str
    consumers: tuple[str, ...]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def recyclable_layers(agent: RecyclableAgent, modules: Sequence[str]) -> list[RecycleLayer]:
    """The recyclable layers of ``modules`` and what reads their units (see the module docstring)."""
    available = agent.named_modules_for_monitor()
    links = dict(agent.layer_links())
    found: list[RecycleLayer] = []
    for module_name in modules:
        for path, seq in available[module_name].named_modules():
            if not isinstance(seq, nn.Sequential):
                continue
            children = list(seq)
            for i, child in enumerate(children[:-1]):
                if not (isinstance(child, _WEIGHTED) and isinstance(children[i + 1], nn.ReLU)):
                    continue
                producer = _join(module_name, path, str(i))
                later = [j for j in range(i + 2, len(children)) if isinstance(children[j], _WEIGHTED)]
                consumers = (_join(module_name, path, str(later[0])),) if later else tuple(links.get(producer, ()))
                if consumers:
                    found.append(RecycleLayer(producer, _join(module_name, path, str(i + 1)), consumers))
    return found


def _tag(qualified: str) -> str:
    """``critic.Q1.1`` → ``critic/Q1.1``, the monitor's ``<module>/<layer>`` tag layout."""
    return qualified.replace(".", "/", 1)


def _resolve(modules: dict[str, nn.Module], qualified: str) -> tuple[str, nn.Module]:
    module_name, _, path = qualified.partition(".")
    if module_name not in modules:
        raise ValueError(f"layer {qualified!r} names module {module_name!r}; the agent offers {list(modules)}")
    return module_name, modules[module_name].get_submodule(path)


@INTERVENTIONS.register("redo")
class ReDo(Operation):
    """Recycle τ-dormant units of ``modules`` (Sokar et al. 2023).

    :param tau: Dormancy threshold in [0, 1]: a unit with normalised activity ``s_i <= tau`` is
        recycled (0.1 is the usual ReDo setting; the monitor logs dormancy with 0.025 by default).
    :param modules: Modules whose units are recycled (keys of ``agent.named_modules_for_monitor()``).
    :param period: Gradient updates between recyclings, F in docs/reference.md §4 (:meth:`due`);
        ``None`` to fire on ``trigger`` instead (exactly one of the two).
    :param batch_size: Size of the statistics batch, sampled with the set's own generator.
    :param step: Adam step-count policy for the touched parameters, ``"reset"`` (default) or ``"keep"``
        (Sokar et al.'s JAX code); see :mod:`rlplastic.interventions.optim_state`.
    :param trigger: fire on a trigger (asked at episode ends) instead of every ``period`` updates.
    """

    needs = RecyclableAgent

    def __init__(
        self,
        agent: RecyclableAgent,
        monitor: Monitor | None = None,
        tau: float = 0.1,
        modules: Sequence[str] = (CRITIC,),
        period: int | None = 1000,
        batch_size: int = 256,
        step: StepPolicy = "reset",
        trigger: Mapping[str, Any] | None = None,
    ) -> None:
        if (period is None) == (trigger is None):
            raise ValueError(
                f"intervention.redo needs exactly one of period (gradient updates) or trigger; got "
                f"period={period!r}, trigger={trigger!r}"
            )
        super().__init__(agent, monitor, modules, trigger, trigger_required=False)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:
            raise ValueError(f"ReDo tau={tau!r} is outside [0, 1]: tau is a threshold on normalised activity")
        self.tau = float(tau)
        period = 1 if period is None else period  # unused with a trigger
        for label, value in (("period", period), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.period = period
        self.batch_size = batch_size
        self.step: StepPolicy = check_step_policy(step)

    def due(self, updates: int) -> bool:
        """Whether recycling is due after ``updates`` gradient updates (every ``period``, not at 0)."""
        return updates > 0 and updates % self.period == 0

    def after_update(
        self, updates: int, replay: Replay, device: torch.device | str, rng: np.random.Generator
    ) -> Report | None:
        if self.trigger is None and self.due(updates):
            return self.fire(replay, device, rng)
        return None

    def fire(self, replay: Replay, device: torch.device | str, rng: np.random.Generator) -> Report:
        return self.apply(replay.sample(self.batch_size, device, rng=rng))

    @torch.no_grad()
    def dormant_masks(self, batch: Batch) -> dict[RecycleLayer, Tensor]:
        """τ-dormant mask (units,) of every recyclable layer, from one statistics forward on ``batch``."""
        agent = self.agent
        available = agent.named_modules_for_monitor()
        for name in self.modules:
            if any(not p.requires_grad for p in available[name].parameters()):
                raise ValueError(f"ReDo on {name!r}: it has frozen parameters (plasticity injection?); not supported")
        layers = recyclable_layers(agent, self.modules)
        if not layers:
            return {}
        relus = {layer.relu: _resolve(available, layer.relu)[1] for layer in layers}
        capture = ActivationCapture(relus, count=False, keep=True)
        try:
            with capture.recording():
                agent.forward_for_statistics(batch)
        finally:
            capture.remove()
        acts = capture.activations
        missing = [layer.relu for layer in layers if layer.relu not in acts]
        if missing:
            raise RuntimeError(f"agent.forward_for_statistics did not run layers {missing}")
        return {layer: dormant_mask(acts[layer.relu], self.tau) for layer in layers}

    @torch.no_grad()
    def apply(self, batch: Batch) -> Report:
        """Score units on ``batch`` and recycle the τ-dormant ones.

        :param batch: Statistics batch (e.g. ``replay.sample(self.batch_size)``).
        :return: Flat report: ``<module>/<relu path>`` → units recycled there (e.g. ``critic/Q1.1``),
            ``recycled`` (total), ``units`` (total scored), ``fraction``.
        """
        agent = self.agent
        masks = self.dormant_masks(batch)
        available = agent.named_modules_for_monitor()
        optimizers = agent.optimizers()
        targets = agent.target_networks()
        fresh: dict[str, nn.Module] = {}
        report: dict[str, float] = {}
        todo = []
        for layer, mask in masks.items():
            count = int(mask.sum())  # one host sync per layer; recycling is rare
            report[_tag(layer.relu)] = count
            if count:
                todo.append((layer, mask))
        # Incoming first, outgoing second: a layer can be both (an MLP's middle Linear), and its
        # re-drawn rows must not bring back the columns of units recycled upstream.
        for layer, mask in todo:
            module_name, producer = _resolve(available, layer.producer)
            if module_name not in fresh:
                fresh[module_name] = agent.fresh_module(module_name)
            new = fresh[module_name].get_submodule(layer.producer.partition(".")[2])
            self._recycle_incoming(producer, new, mask, optimizers)
        for layer, mask in todo:
            producer_module, producer = _resolve(available, layer.producer)
            for consumer_name in layer.consumers:
                consumer_module, consumer = _resolve(available, consumer_name)
                columns = self._column_mask(producer, consumer, mask, layer, consumer_name)
                self._zero_outgoing(consumer, columns, optimizers)
                # A target reading a producer it does not have its own copy of sees the new units.
                if consumer_module != producer_module and consumer_module in targets and producer_module not in targets:
                    target_layer = targets[consumer_module].get_submodule(consumer_name.partition(".")[2])
                    self._zero_outgoing(target_layer, columns, {})
        report["recycled"] = sum(report[_tag(layer.relu)] for layer in masks)
        report["units"] = sum(m.numel() for m in masks.values())
        report["fraction"] = report["recycled"] / report["units"] if report["units"] else 0.0
        return report

    def _recycle_incoming(self, layer: nn.Module, new: nn.Module, mask: Tensor, optimizers: Optimizers) -> None:
        rows = mask.view(-1, *([1] * (layer.weight.dim() - 1)))
        layer.weight.copy_(torch.where(rows, new.weight.to(layer.weight), layer.weight))
        self._zero_moments(layer.weight, rows, optimizers)
        if layer.bias is not None:
            layer.bias.masked_fill_(mask, 0.0)
            self._zero_moments(layer.bias, mask, optimizers)

    def _zero_outgoing(self, layer: nn.Module, columns: Tensor, optimizers: Optimizers) -> None:
        cols = columns.view(1, -1, *([1] * (layer.weight.dim() - 2)))
        layer.weight.masked_fill_(cols, 0.0)
        self._zero_moments(layer.weight, cols, optimizers)

    def _zero_moments(self, param: nn.Parameter, mask: Tensor, optimizers: Optimizers) -> None:
        optimizer = optimizer_of(optimizers, param)
        if optimizer is not None:
            zero_masked_state(optimizer, param, mask, self.step)

    @staticmethod
    def _column_mask(producer: nn.Module, consumer: nn.Module, mask: Tensor, layer: RecycleLayer, name: str) -> Tensor:
        units = mask.numel()
        if isinstance(consumer, nn.Conv2d):
            if isinstance(producer, nn.Conv2d) and consumer.in_channels == units:
                return mask
        elif isinstance(consumer, nn.Linear):
            if consumer.in_features == units:
                return mask
            if isinstance(producer, nn.Conv2d) and consumer.in_features % units == 0:
                # flatten(1) of (N, C, H, W) puts channel c at columns [c·H·W, (c+1)·H·W)
                return mask.repeat_interleave(consumer.in_features // units)
        raise ValueError(
            f"cannot map the {units} units of {layer.producer} onto the inputs of {name} ({consumer}); "
            "declare a different link in agent.layer_links()"
        )
