r"""Init-anchored regularizers (docs/reference.md §4): loss terms that pull parameters toward θ₀.

* :class:`L2Init` (Kumar et al. 2023): ``coef/2 · Σ (θ − θ₀)²`` over the target modules' parameters,
  normalisation-layer parameters excluded.
* :class:`WassersteinInit` (Lewandowski et al.): ``coef · Σ_l ‖sort(θ_l) − sort(θ_{0,l})‖²`` per weight
  tensor of a Linear/Conv layer: matches each layer's weight *distribution* to its initial one.

Both register as a loss term on ``agent.hooks`` (the agent adds ``extra_loss(module, context)`` to the loss
that trains ``module``; ``None`` for a module they do not target). Their latest term per module is
``last_terms`` (detached, still on device) and is logged as ``train/reg/<name>/<module>``; ``state_dict``
holds θ₀ (tensors and strings only: loadable with ``torch.load(weights_only=True)``).

Parameters are bound at construction. Interventions that re-initialise weights **in place** (resets,
ReDo, shrink-and-perturb) keep them bound; after a reset with ``reanchor`` they re-anchor the reset
modules at the fresh weights, and after plasticity injection (which swaps heads for new modules) they
rebind (:meth:`_InitAnchored.follow`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlplastic.interventions.base import INTERVENTIONS, Change, Intervention, check_coef, check_state, check_targets
from rlplastic.protocols import Monitor, MonitoredAgent

__all__ = ["NORM_LAYERS", "L2Init", "WassersteinInit"]

#: Normalisation layers whose parameters the init-anchored regularizers leave alone. Kumar et al. 2023
#: exclude LayerNorm: its gain and bias rescale whole feature vectors and are not where plasticity is
#: lost; the other normalisation layers play the same role, so they are excluded for the same reason.
NORM_LAYERS: tuple[type[nn.Module], ...] = tuple(
    cls
    for cls in (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, getattr(nn, "RMSNorm", None))
    if cls is not None
)

#: Layers whose weight tensors :class:`WassersteinInit` matches (Linear and 1/2/3-d convolutions).
_WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def _load_tensors(current: dict[str, Tensor], loaded: Mapping[str, Tensor], what: str) -> None:
    """Copy ``loaded`` into ``current`` in place (device and dtype of ``current`` kept) after checks."""
    if set(current) != set(loaded):
        missing = sorted(set(current) - set(loaded))
        extra = sorted(set(loaded) - set(current))
        raise ValueError(f"{what} does not match the bound parameters: missing {missing}, unexpected {extra}")
    for key, tensor in current.items():
        if tuple(loaded[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{what}[{key!r}] has shape {tuple(loaded[key].shape)}, expected {tuple(tensor.shape)}")
    for key, tensor in current.items():
        tensor.copy_(loaded[key])


class _InitAnchored(Intervention):
    """Shared machinery of :class:`L2Init` and :class:`WassersteinInit`: bound parameters + θ₀ snapshot."""

    def __init__(self, agent: MonitoredAgent, monitor: Monitor | None, targets: Sequence[str], coef: float) -> None:
        super().__init__(agent, monitor)
        modules = agent.named_modules_for_monitor()
        self.coef = check_coef(coef, self.name)
        self.targets = check_targets(targets, modules, self.name)
        #: module name -> [(key, parameter)], key = "<module>.<parameter name>"
        self._bound: dict[str, list[tuple[str, nn.Parameter]]] = {}
        self._bind(modules)
        #: latest term per module (detached device tensors, for logging)
        self.last_terms: dict[str, Tensor] = {}
        self._anchor: dict[str, Tensor] = {}
        self.reset_anchor()

    def install(self) -> None:
        self.agent.hooks.add_loss_term(self.extra_loss)

    def _bind(self, modules: Mapping[str, nn.Module]) -> None:
        self._bound = {}
        seen: set[int] = set()  # a parameter shared by two target modules is counted once
        for target in self.targets:
            # frozen parameters (e.g. a plasticity-injected head's base) cannot move: a term on them is a constant
            selected = [(n, p) for n, p in self._select(modules[target]) if p.requires_grad and id(p) not in seen]
            entries = [(f"{target}.{pname}", p) for pname, p in selected]
            seen.update(id(p) for _, p in entries)
            if entries:  # parameter-free modules (the states-mode encoder) are skipped
                self._bound[target] = entries
        if not self._bound:
            raise ValueError(f"{self.name}: the target modules {list(self.targets)} have no parameters it applies to")

    def follow(self, change: Change) -> None:
        """Rebind after an injection; after a reset with ``reanchor``, take the reset modules' new θ₀."""
        if change.structure:
            self.rebind()
        elif change.reanchor:
            touched = [m for m in change.modules if m in self.targets]
            if touched:
                self.reset_anchor(touched)

    @torch.no_grad()
    def rebind(self) -> None:
        """Re-read the target modules' parameters after their structure changed (plasticity injection).

        Parameters are followed by identity: one still trainable keeps its θ₀ (under its new name), a new
        one (the injected trainable head) is anchored at its value now, its fresh initialisation, and one
        that was frozen is dropped, as at construction.
        """
        previous = {id(p): key for entries in self._bound.values() for key, p in entries}
        anchors = self._anchor
        self._bind(self.agent.named_modules_for_monitor())
        self._anchor = {
            key: anchors[previous[id(p)]] if id(p) in previous else self._snapshot(p)
            for entries in self._bound.values()
            for key, p in entries
        }

    def _select(self, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        raise NotImplementedError

    def _snapshot(self, param: Tensor) -> Tensor:
        raise NotImplementedError

    def _penalty(self, param: Tensor, anchor: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def reset_anchor(self, targets: Sequence[str] | None = None) -> None:
        """Take θ₀ from the current parameters of ``targets`` (all bound modules by default).

        Construction calls this once. Call it again after a reset to anchor to the fresh weights.
        """
        names = self.targets if targets is None else check_targets(targets, self.targets, self.name)
        for target in names:
            for key, param in self._bound.get(target, ()):
                self._anchor[key] = self._snapshot(param)

    def extra_loss(self, module_name: str, context: Mapping[str, Tensor] | None = None) -> Tensor | None:
        """The term for ``module_name``'s loss, or ``None`` if that module is not targeted (or coef = 0).

        :param module_name: ``encoder``, ``actor``, ``critic``, ...
        :param context: unused (the agent's loss context).
        :return: 0-d float32 tensor, differentiable w.r.t. the module's parameters.
        """
        del context
        entries = self._bound.get(module_name)
        if not entries or self.coef == 0.0:
            return None
        # float32 sums: exact enough for a penalty and safe for bf16/fp16 parameters
        total = torch.stack([self._penalty(param, self._anchor[key]) for key, param in entries]).sum()
        term = self._scale * total
        self.last_terms[module_name] = term.detach()
        return term

    @property
    def _scale(self) -> float:
        return self.coef

    def train_metrics(self) -> dict[str, Tensor]:
        return {f"reg/{self.name}/{module}": term for module, term in self.last_terms.items()}

    def state_dict(self) -> dict[str, Any]:
        """``{"name", "anchor": {key: θ₀ tensor}}`` (copies, on the parameters' device)."""
        return {"name": self.name, "anchor": {key: t.clone() for key, t in self._anchor.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore θ₀ from :meth:`state_dict` (checks the parameter names and shapes)."""
        check_state(state, self.name)
        _load_tensors(self._anchor, state["anchor"], f"{self.name} anchor")


@INTERVENTIONS.register("l2_init")
class L2Init(_InitAnchored):
    r"""L2-init (Kumar et al. 2023): ``coef/2 · Σ (θ − θ₀)²`` pulls every parameter toward its initial value.

    The gradient w.r.t. θ is ``coef · (θ − θ₀)``. θ₀ is snapshotted at construction (build it right after
    the agent). Parameters of normalisation layers (:data:`NORM_LAYERS`, LayerNorm in DrQ-v2's trunks)
    are excluded, as in Kumar et al.; every other parameter of a target module (weights and biases) is
    included; frozen parameters (``requires_grad=False``) are skipped. Ma et al. (ICLR 2024) used
    ``coef = 1e-2``.

    :param agent: the agent; its modules are ``agent.named_modules_for_monitor()``.
    :param targets: names of the modules to regularize; parameter-free modules are skipped.
    :param coef: λ >= 0.
    """

    def __init__(
        self, agent: MonitoredAgent, monitor: Monitor | None = None, *, targets: Sequence[str], coef: float = 1e-2
    ) -> None:
        super().__init__(agent, monitor, targets, coef)

    def _select(self, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        excluded = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
        return [(n, p) for n, p in module.named_parameters() if id(p) not in excluded]

    def _snapshot(self, param: Tensor) -> Tensor:
        return param.detach().clone()

    def _penalty(self, param: Tensor, anchor: Tensor) -> Tensor:
        return (param - anchor).float().square().sum()

    @property
    def _scale(self) -> float:
        return 0.5 * self.coef


@INTERVENTIONS.register("w2_init")
class WassersteinInit(_InitAnchored):
    r"""Wasserstein-init (Lewandowski et al.): ``coef · Σ_l ‖sort(θ_l) − sort(θ_{0,l})‖²``.

    For each weight tensor θ_l of a Linear or Conv layer (flattened), the squared L2 distance between its
    sorted entries and the sorted initial entries — the squared 2-Wasserstein distance between the two
    empirical weight distributions, times the number of weights. Unlike :class:`L2Init`, it constrains
    the *distribution* of a layer's weights, not each weight: permuting a layer's weights costs nothing.
    The sorted θ₀ is stored, so each call sorts only the current weights.

    **Biases are excluded by default** (``include_bias=False``): DrQ-v2 (and most initialisations)
    start biases at a constant 0, a point mass, so the distance to their initial "distribution" is just
    ``‖b‖²`` — plain weight decay on biases, not the distribution matching this regularizer is about.
    Normalisation layers are not Linear/Conv layers, so LayerNorm is excluded as in L2-init.

    :param agent: the agent; its modules are ``agent.named_modules_for_monitor()``.
    :param targets: names of the modules to regularize.
    :param coef: λ >= 0.
    :param include_bias: also match each Linear/Conv bias vector to its initial distribution.
    """

    def __init__(
        self,
        agent: MonitoredAgent,
        monitor: Monitor | None = None,
        *,
        targets: Sequence[str],
        coef: float = 1e-2,
        include_bias: bool = False,
    ) -> None:
        if not isinstance(include_bias, bool):
            raise ValueError(f"{self.name}.include_bias={include_bias!r} must be a bool")
        self.include_bias = include_bias
        super().__init__(agent, monitor, targets, coef)

    def _select(self, module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        selected = []
        for layer_name, layer in module.named_modules():
            if not isinstance(layer, _WEIGHT_LAYERS):
                continue
            prefix = f"{layer_name}." if layer_name else ""
            for pname, p in layer.named_parameters(recurse=False):
                if pname == "weight" or (self.include_bias and pname == "bias"):
                    selected.append((prefix + pname, p))
        return selected

    def _snapshot(self, param: Tensor) -> Tensor:
        return torch.sort(param.detach().flatten()).values

    def _penalty(self, param: Tensor, anchor: Tensor) -> Tensor:
        # sort is differentiable in its values: the gradient goes to the entry that landed at each rank
        return (torch.sort(param.flatten()).values - anchor).float().square().sum()
