r"""Regularizers against loss of plasticity (docs/reference.md §4), entering through the agent's loss hook.

An agent built on the docs/design.md protocol adds ``regularizer.extra_loss(module_name, context)`` to the
loss that trains ``module_name`` (for DrQ-v2: ``critic`` and ``encoder`` terms go into the critic loss,
``actor`` terms into the actor loss). A regularizer returns ``None`` for modules it does not target.
Regularizers are built **from the agent's modules** (``agent.named_modules_for_monitor()``), after the
agent, and appended to its regularizer list; each snapshots what it needs at construction.

* :class:`L2Init` (Kumar et al. 2023): ``coef/2 · Σ (θ − θ₀)²`` over the target modules' parameters,
  normalisation-layer parameters excluded.
* :class:`WassersteinInit` (Lewandowski et al.): ``coef · Σ_l ‖sort(θ_l) − sort(θ_{0,l})‖²`` per weight
  tensor of a Linear/Conv layer: matches each layer's weight *distribution* to its initial one.
* :class:`NCRegularizer` (Bonifazi et al. 2024, adapted to a critic): ``−coef · min(NC1, clip)`` on the
  critic's penultimate features with TD-target quantile bins as classes; it *discourages* collapse.
* :class:`DecoupledWeightDecay` (Loshchilov & Hutter, AdamW): ``θ ← θ − lr·coef·θ`` at each optimizer
  step. It adds no loss term, so it is not a :class:`Regularizer`; it hooks the agent's optimizers.

Every class has a ``name`` (its config name, also the ``events/<name>`` tag), ``touched`` (the
``module.parameter`` names it acts on, for the run's records), ``last_terms`` (the latest term per
module, detached, still on device: reading it is left to the logger, no host sync here) and
``state_dict`` / ``load_state_dict`` (tensors, ints and strings only: loadable with
``torch.load(weights_only=True)``).

Parameters are bound at construction. Interventions that re-initialise weights **in place** (resets,
ReDo, shrink-and-perturb) keep them bound; an intervention that swaps modules (plasticity injection
replacing a head) needs the regularizer rebuilt. :meth:`L2Init.reset_anchor` and
:meth:`WassersteinInit.reset_anchor` move θ₀ to the current parameters, for runs that anchor to the
post-reset weights instead of the first initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from rlplastic.monitor.collapse import quantile_bins

__all__ = [
    "NORM_LAYERS",
    "REGULARIZERS",
    "REGULARIZER_KEYS",
    "DecoupledWeightDecay",
    "L2Init",
    "NCRegularizer",
    "WassersteinInit",
    "make_regularizer",
    "nc1_differentiable",
]

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


# -- validation helpers -------------------------------------------------------------------------


def _check_coef(coef: Any, name: str, key: str = "coef") -> float:
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef) or coef < 0:
        raise ValueError(f"{name}.{key}={coef!r} must be a finite number >= 0")
    return float(coef)


def _check_targets(targets: Any, allowed: Iterable[str], name: str, what: str = "module") -> tuple[str, ...]:
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


def _check_modules(modules: Any, name: str) -> Mapping[str, nn.Module]:
    if not isinstance(modules, Mapping) or not all(isinstance(m, nn.Module) for m in modules.values()):
        raise ValueError(f"{name} needs a mapping of module name -> nn.Module (agent.named_modules_for_monitor())")
    return modules


def _check_state(state: Mapping[str, Any], name: str) -> None:
    if not isinstance(state, Mapping) or state.get("name") != name:
        found = state.get("name") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"state holds a {found!r} regularizer, this one is {name!r}")


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


# -- init-anchored regularizers -----------------------------------------------------------------


class _InitAnchored:
    """Shared machinery of :class:`L2Init` and :class:`WassersteinInit`: bound parameters + θ₀ snapshot."""

    name = ""

    def __init__(self, modules: Mapping[str, nn.Module], targets: Sequence[str], coef: float) -> None:
        modules = _check_modules(modules, type(self).__name__)
        self.coef = _check_coef(coef, self.name)
        self.targets = _check_targets(targets, modules, self.name)
        #: module name -> [(key, parameter)], key = "<module>.<parameter name>"
        self._bound: dict[str, list[tuple[str, nn.Parameter]]] = {}
        self._bind(modules)
        #: latest term per module (detached device tensors, for logging)
        self.last_terms: dict[str, Tensor] = {}
        self._anchor: dict[str, Tensor] = {}
        self.reset_anchor()

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
        #: ``module.parameter`` names this regularizer acts on.
        self.touched: tuple[str, ...] = tuple(key for entries in self._bound.values() for key, _ in entries)

    @torch.no_grad()
    def rebind(self, modules: Mapping[str, nn.Module]) -> None:
        """Re-read the target modules' parameters after their structure changed (plasticity injection).

        Parameters are followed by identity: one still trainable keeps its θ₀ (under its new name), a new
        one (the injected trainable head) is anchored at its value now, its fresh initialisation, and one
        that was frozen is dropped, as at construction.
        """
        previous = {id(p): key for entries in self._bound.values() for key, p in entries}
        anchors = self._anchor
        self._bind(_check_modules(modules, type(self).__name__))
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
        names = self.targets if targets is None else _check_targets(targets, self.targets, self.name)
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

    def state_dict(self) -> dict[str, Any]:
        """``{"name", "anchor": {key: θ₀ tensor}}`` (copies, on the parameters' device)."""
        return {"name": self.name, "anchor": {key: t.clone() for key, t in self._anchor.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore θ₀ from :meth:`state_dict` (checks the parameter names and shapes)."""
        _check_state(state, self.name)
        _load_tensors(self._anchor, state["anchor"], f"{self.name} anchor")


class L2Init(_InitAnchored):
    r"""L2-init (Kumar et al. 2023): ``coef/2 · Σ (θ − θ₀)²`` pulls every parameter toward its initial value.

    The gradient w.r.t. θ is ``coef · (θ − θ₀)``. θ₀ is snapshotted at construction (build it right after
    the agent). Parameters of normalisation layers (:data:`NORM_LAYERS`, LayerNorm in DrQ-v2's trunks)
    are excluded, as in Kumar et al.; every other parameter of a target module (weights and biases) is
    included; frozen parameters (``requires_grad=False``) are skipped. Ma et al. (ICLR 2024) used
    ``coef = 1e-2``.

    :param modules: module name -> module, e.g. ``agent.named_modules_for_monitor()``.
    :param targets: names of the modules to regularize (a subset of ``modules``); parameter-free modules
        are skipped.
    :param coef: λ >= 0.
    """

    name = "l2_init"

    def __init__(self, modules: Mapping[str, nn.Module], targets: Sequence[str], coef: float = 1e-2) -> None:
        super().__init__(modules, targets, coef)

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

    :param modules: module name -> module, e.g. ``agent.named_modules_for_monitor()``.
    :param targets: names of the modules to regularize.
    :param coef: λ >= 0.
    :param include_bias: also match each Linear/Conv bias vector to its initial distribution.
    """

    name = "w2_init"

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        targets: Sequence[str],
        coef: float = 1e-2,
        include_bias: bool = False,
    ) -> None:
        if not isinstance(include_bias, bool):
            raise ValueError(f"{self.name}.include_bias={include_bias!r} must be a bool")
        self.include_bias = include_bias
        super().__init__(modules, targets, coef)

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


# -- anti-collapse regularizer ------------------------------------------------------------------


def nc1_differentiable(features: Tensor, labels: Tensor, num_bins: int, rcond: float = 1e-8) -> Tensor:
    r"""NC1 of ``features`` with class ``labels``, differentiable w.r.t. the features.

    The exact form of :func:`rlplastic.monitor.collapse.neural_collapse`: ``mean_i ‖M̃⁺(h_i − μ_{y_i})‖²``
    (= Tr(Σ_W Σ_B⁺)/K), in float64 with the same relative cutoff ``rcond`` on M̃'s singular values.
    float64 matters: M̃ always has a null direction (Σ_c n_c(μ_c − μ_G) = 0), and in float32 its
    rounding-noise singular value (~1e-7·σ_max) would pass a 1e-8 cutoff and blow NC1 up. The gradient of
    ``torch.linalg.pinv`` is the analytic pseudo-inverse derivative, correct while the rank stays fixed,
    which it does here (the null direction is structural).

    :param features: (n, d) features h, any float dtype.
    :param labels: (n,) int64 class of each sample, every class in [0, num_bins) non-empty.
    :param num_bins: K.
    :param rcond: relative singular-value cutoff of the pseudo-inverse.
    :return: 0-d float64 tensor.
    """
    h = features.to(torch.float64)
    counts = torch.bincount(labels, minlength=num_bins).to(h)
    means = torch.zeros(num_bins, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, labels, h)
    means = means / counts[:, None]
    centred = means - h.mean(dim=0)  # rows are the columns of M̃
    within = h - means[labels]
    pinv = torch.linalg.pinv(centred.T, rtol=rcond)  # M̃⁺, (K, d)
    return (within @ pinv.T).square().sum(dim=1).mean()


class NCRegularizer:
    r"""Anti-collapse regularizer (Bonifazi et al. 2024) on the critic: adds ``−coef · min(NC1, clip)``.

    NC1 (neural collapse's within-class variability relative to between-class spread) falls toward 0 as
    the features of each class collapse onto their class mean. The term is **negative** in NC1, so
    minimising the loss *raises* NC1: it discourages collapse. ``clip`` caps the reward — above it the
    term is constant and has no gradient — so the critic is not pushed to scatter its features without
    bound. Defaults are Bonifazi et al.'s (λ 0.075, clip 200).

    A critic has no classes; as in the monitor (:mod:`rlplastic.monitor.collapse`), the classes are
    ``num_bins`` equal-count quantile bins of the current minibatch's TD target (``context["td_target"]``),
    and NC1 is computed exactly (:func:`nc1_differentiable`, same definition and ``rcond`` as the monitor).
    The features h are the critic's penultimate features: the **input** of the Linear layer ``layer``
    (Q1's output layer by default; Q2 is left alone, as the monitor measures Q1). The gradient flows
    into h's producers (the Q head's hidden layers, the trunk and the encoder), not into that layer.

    **How h is captured, and the ordering it relies on.** A forward pre-hook on ``layer`` keeps its
    input from the most recent call made with grad enabled (calls under ``no_grad``, e.g. probes, do
    not overwrite it). :meth:`extra_loss` for ``critic`` must therefore come after the critic-loss forward
    and before any other grad-enabled critic forward. DrQ-v2's ``_update_critic`` does exactly that: the
    TD target runs the target critic under ``no_grad``, then the critic-loss forward, then
    ``extra_loss("critic", ...)``; the actor loss calls the critic only afterwards. The capture is dropped
    once used, so calling :meth:`extra_loss` twice without a new forward is an error rather than a
    silent reuse of stale features; a batch-size mismatch with the TD target is an error too.

    :param modules: module name -> module; must contain ``critic``.
    :param coef: λ >= 0.
    :param clip: cap on NC1 (> 0).
    :param num_bins: K, the number of TD-target quantile bins (2 <= K <= batch size).
    :param layer: qualified name inside the critic of the Linear layer whose input is h.
    :param rcond: relative singular-value cutoff of the pseudo-inverse (as the monitor's).
    """

    name = "nc_reg"

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        coef: float = 0.075,
        clip: float = 200.0,
        num_bins: int = 10,
        layer: str = "Q1.4",
        rcond: float = 1e-8,
    ) -> None:
        modules = _check_modules(modules, type(self).__name__)
        if "critic" not in modules:
            raise ValueError(f"{self.name} regularizes the critic: modules has no 'critic' (got {list(modules)})")
        self.coef = _check_coef(coef, self.name)
        self.clip = _check_coef(clip, self.name, "clip")
        if self.clip == 0:
            raise ValueError(f"{self.name}.clip=0 must be > 0")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"{self.name}.num_bins={num_bins!r} must be an int >= 2")
        if isinstance(rcond, bool) or not isinstance(rcond, (int, float)) or not 0 < rcond < 1:
            raise ValueError(f"{self.name}.rcond={rcond!r} must be a number in (0, 1)")
        self.num_bins = num_bins
        self.rcond = float(rcond)
        critic = modules["critic"]
        linears = [n for n, m in critic.named_modules() if isinstance(m, nn.Linear)]
        try:
            head = critic.get_submodule(layer) if isinstance(layer, str) else None
        except AttributeError:
            head = None
        if not isinstance(head, nn.Linear):
            raise ValueError(f"{self.name}.layer={layer!r} is not a Linear layer of the critic: allowed are {linears}")
        self.layer = layer
        self.touched: tuple[str, ...] = (f"critic.{layer}:input",)
        self.last_terms: dict[str, Tensor] = {}
        #: latest unclipped NC1 (detached float64 device tensor), for logging
        self.last_nc1: Tensor | None = None
        self._features: Tensor | None = None
        self._handle: RemovableHandle | None = head.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        del module
        if torch.is_grad_enabled():
            self._features = args[0]

    def extra_loss(self, module_name: str, context: Mapping[str, Tensor]) -> Tensor | None:
        """``−coef · min(NC1, clip)`` for ``critic`` (``None`` for other modules or coef = 0).

        :param module_name: the module whose loss is being built.
        :param context: must hold ``td_target`` (B, 1) or (B,) for ``critic``.
        :return: 0-d float32 tensor, differentiable w.r.t. the captured features.
        """
        if module_name != "critic" or self.coef == 0.0:
            return None
        if self._handle is None:
            raise RuntimeError(f"{self.name} was removed; build a new one")
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError(
                f"{self.name}: no critic forward with grad since the last call; extra_loss('critic') must "
                f"follow the critic-loss forward (the hook is on critic.{self.layer})"
            )
        if "td_target" not in context:
            raise ValueError(f"{self.name} needs context['td_target'], got keys {sorted(context)}")
        targets = context["td_target"].detach().reshape(-1)
        features = features.reshape(-1, features.shape[-1])
        if features.shape[0] != targets.numel():
            raise RuntimeError(
                f"{self.name}: captured {features.shape[0]} feature rows for {targets.numel()} TD targets; "
                f"the latest grad-enabled forward of critic.{self.layer} was not the critic-loss forward"
            )
        labels, _ = quantile_bins(targets, self.num_bins)
        nc1 = nc1_differentiable(features, labels, self.num_bins, self.rcond)
        self.last_nc1 = nc1.detach()
        term = (-self.coef * torch.clamp(nc1, max=self.clip)).to(torch.float32)
        self.last_terms["critic"] = term.detach()
        return term

    def remove(self) -> None:
        """Remove the forward pre-hook (the regularizer can no longer be used)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._features = None

    def state_dict(self) -> dict[str, Any]:
        """Stateless apart from its name (the hook and the capture are rebuilt with the object)."""
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check that ``state`` comes from an :class:`NCRegularizer`."""
        _check_state(state, self.name)


# -- decoupled weight decay ---------------------------------------------------------------------


class DecoupledWeightDecay:
    r"""AdamW-style decoupled weight decay ``θ ← θ − lr·coef·θ`` on the agent's optimizers.

    Added to an Adam optimizer it gives exactly ``torch.optim.AdamW(weight_decay=coef)``: like AdamW, the
    shrink uses each param group's current ``lr``, touches only parameters that have a gradient, and is
    applied **before** the Adam update of the same step. It runs in an optimizer step *pre*-hook
    (``register_step_pre_hook``): the gradient was already computed at the old θ and Adam's update does
    not read θ, so shrinking just before the step is AdamW's order; a post-hook would differ from AdamW
    by ``lr²·coef·update``. It adds no loss term (the shrink is outside the gradient, hence
    "decoupled"), so it is not a :class:`~agents.drqv2.Regularizer`.

    With DrQ-v2's lr 1e-4, ``coef`` 1e-5 (Ma et al.) shrinks by 1e-9 per step; the per-step factor is
    ``lr·coef`` as in torch's AdamW.

    :param optimizers: optimizer name -> optimizer, e.g. ``agent.optimizers()``.
    :param targets: names of the optimizers to decay (a subset of ``optimizers``).
    :param coef: decay coefficient >= 0 (AdamW's ``weight_decay``); 0 registers no hook.
    """

    name = "weight_decay"

    def __init__(
        self, optimizers: Mapping[str, torch.optim.Optimizer], targets: Sequence[str], coef: float = 1e-5
    ) -> None:
        if not isinstance(optimizers, Mapping) or not all(
            isinstance(o, torch.optim.Optimizer) for o in optimizers.values()
        ):
            raise ValueError(
                "DecoupledWeightDecay needs a mapping of name -> torch.optim.Optimizer (agent.optimizers())"
            )
        self.coef = _check_coef(coef, self.name)
        self.targets = _check_targets(targets, optimizers, self.name, what="optimizer")
        self._optimizers = {t: optimizers[t] for t in self.targets}
        self.touched: tuple[str, ...] = tuple(f"{t}.*" for t in self.targets)
        self.last_terms: dict[str, Tensor] = {}  # no loss terms; kept for a uniform interface
        self._handles: list[RemovableHandle] = []
        if self.coef > 0:
            self._handles = [opt.register_step_pre_hook(self._decay) for opt in self._optimizers.values()]

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

    def extra_loss(self, module_name: str, context: Mapping[str, Tensor] | None = None) -> None:
        """No loss term (the decay happens at the optimizer step); present so it can sit in a regularizer list."""
        del module_name, context
        return None

    def remove(self) -> None:
        """Unhook from the optimizers; their steps are plain again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict[str, Any]:
        """Stateless apart from its name (the hooks are rebuilt with the object)."""
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check that ``state`` comes from a :class:`DecoupledWeightDecay`."""
        _check_state(state, self.name)


# -- factory ------------------------------------------------------------------------------------

#: Config name -> class.
REGULARIZERS: dict[str, type] = {
    cls.name: cls for cls in (L2Init, WassersteinInit, NCRegularizer, DecoupledWeightDecay)
}
#: Config name -> the keys its config may set (the class's arguments other than modules/optimizers).
REGULARIZER_KEYS: dict[str, tuple[str, ...]] = {
    "l2_init": ("targets", "coef"),
    "w2_init": ("targets", "coef", "include_bias"),
    "nc_reg": ("coef", "clip", "num_bins", "layer", "rcond"),
    "weight_decay": ("targets", "coef"),
}


def make_regularizer(
    name: str,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    **kwargs: Any,
) -> L2Init | WassersteinInit | NCRegularizer | DecoupledWeightDecay:
    """Build a regularizer from its config name and keys (``make_regularizer(**cfg, modules=..., ...)``).

    :param name: one of :data:`REGULARIZERS` (``l2_init``, ``w2_init``, ``nc_reg``, ``weight_decay``).
    :param modules: ``agent.named_modules_for_monitor()``.
    :param optimizers: ``agent.optimizers()`` (needed by ``weight_decay`` only).
    :param kwargs: the class's other arguments (``targets``, ``coef``, ...); Hydra lists are accepted.
    :raises ValueError: for an unknown name or key, or a bad value.
    """
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}: allowed are {sorted(REGULARIZERS)}")
    cls = REGULARIZERS[name]
    allowed = list(REGULARIZER_KEYS[name])
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {name} config key(s) {unknown}: allowed are {allowed}")
    if "targets" in kwargs and not isinstance(kwargs["targets"], (str, bytes)):
        kwargs["targets"] = list(kwargs["targets"])  # OmegaConf ListConfig -> list
    if cls is DecoupledWeightDecay:
        if optimizers is None:
            raise ValueError("weight_decay needs optimizers=agent.optimizers()")
        return cls(optimizers, **kwargs)
    return cls(modules, **kwargs)
