"""Forward hooks that watch activations without changing what a network computes.

:class:`ActivationCapture` hooks a set of named submodules (usually every counted activation layer of
a module: ReLU, LeakyReLU, ELU, GELU, SiLU, see :func:`activation_layers`) and, while
:meth:`ActivationCapture.recording` is active, does up to two things on every call of a hooked module:

* **count** (streaming FAU): adds ``#(output > 0)`` and ``#output`` to per-layer device counters.
  Nothing is stored and nothing is read back to the host, so this can run on every update.
* **keep**: stores a detached copy of the output of the most recent call, for probe-time metrics
  (dormant ratio, rank, neural collapse) that need the activations themselves.

Outside :meth:`~ActivationCapture.recording` the hooks return at once. The recording region lets
the caller choose *which* forward passes count: the released Adaptive-RR code counts critic FAU only
in the critic-loss forward, although the same Q heads run again in the actor loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["COUNTED_ACTIVATIONS", "ActivationCapture", "activation_layers", "other_activations", "relu_layers"]


#: The activation modules the monitor counts (FAU, dormant): for each, "active" is ``output > 0``, and that
#: is well defined because the output is positive exactly where the input is: ReLU; LeakyReLU with
#: ``negative_slope >= 0`` and ELU with ``alpha >= 0`` (negative or zero below 0); GELU ``x·Φ(x)`` and SiLU
#: ``x·σ(x)`` (slightly negative below 0, so ``> 0`` is still "on the linear side"). Saturating activations
#: (Tanh, Sigmoid, Softplus, ...) have no such threshold and are not counted.
COUNTED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)


def _counted(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    if not isinstance(module, kinds):
        return False
    if isinstance(module, nn.LeakyReLU):
        return module.negative_slope >= 0
    if isinstance(module, nn.ELU):
        return module.alpha >= 0
    return True


def activation_layers(
    module: nn.Module, kinds: tuple[type[nn.Module], ...] = COUNTED_ACTIVATIONS
) -> dict[str, nn.Module]:
    """Find every counted activation module (:data:`COUNTED_ACTIVATIONS`) inside ``module``.

    :param module: The module to search (itself included).
    :param kinds: The activation classes to find.
    :return: Qualified name (as in ``module.named_modules()``) → the activation instance, in
        registration order. Functional calls (``F.relu``, ``torch.tanh``) are invisible to this search.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    return {name: m for name, m in module.named_modules() if _counted(m, kinds)}


def relu_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Find every ``nn.ReLU`` inside ``module`` (:func:`activation_layers` restricted to ReLU)."""
    return activation_layers(module, (nn.ReLU,))


def other_activations(module: nn.Module) -> dict[str, str]:
    """Qualified name → class name of every ``torch.nn`` activation module inside ``module`` that is not
    counted (Tanh, Sigmoid, ...): what the monitor names when it refuses a module."""
    counted = activation_layers(module)
    return {
        name: type(m).__name__
        for name, m in module.named_modules()
        if type(m).__module__ == nn.modules.activation.__name__ and name not in counted
    }


def _count_positive(act: Tensor, nonnegative: bool) -> Tensor:
    """``#(act > 0)`` as a 0-d int64 tensor, without a host sync.

    A ReLU's output is ``+x``, ``+0.0`` or ``-0.0``, so its ``sign()`` is 1 exactly where it is
    strictly positive, and summing signs is ~2x faster on CPU than counting a ``> 0`` mask. Sums
    run per sample in float32 (exact below 2**24 units per sample) and are added up in int64, so the
    count is exact at any batch size. A NaN activation poisons this count (the strict mask would skip
    it); by then the loss is NaN too. Other layers, which can be negative, use the mask.
    """
    if nonnegative and act.dim() >= 2:
        return act.sign().reshape(act.shape[0], -1).sum(1).to(torch.int64).sum()
    return torch.count_nonzero(act > 0)


class ActivationCapture:
    """Forward hooks on named submodules that count positive activations and/or keep outputs.

    Hooks are registered on construction and removed by :meth:`remove` (or on leaving a ``with``
    block). They only act inside :meth:`recording`; elsewhere they return immediately.

    Counts are device tensors (``int64``, on the device of the activations) updated in place, so
    a recorded forward costs one comparison and one reduction per layer and never syncs with the
    host. Read them with :meth:`counts` (still tensors; :class:`~rlplastic.monitor.fau_accounts.FAUAccounts`
    pools them into FAU) and clear them with :meth:`reset`.

    Pooling over several recorded forwards gives ``Σ positives / Σ elements``; with a constant
    batch size this equals the mean of the per-forward FAU values.

    :param layers: Name → submodule to hook (e.g. ``activation_layers(critic)``). The hooked output is
        the module's return value, which must be a tensor.
    :param count: Accumulate ``count_positive`` (strictly ``> 0``) and ``count_total`` per layer.
    :param keep: Keep a detached copy of each layer's output from the last recorded call. The copy
        is cloned because DrQ-v2-style ``ReLU(inplace=True)`` outputs may be overwritten later.
    """

    def __init__(self, layers: Mapping[str, nn.Module], count: bool = True, keep: bool = False) -> None:
        if not isinstance(layers, Mapping) or len(layers) == 0:
            raise ValueError(f"layers must be a non-empty mapping name -> nn.Module, got {layers!r}")
        for name, mod in layers.items():
            if not isinstance(name, str) or not isinstance(mod, nn.Module):
                raise ValueError(f"layers must map str -> nn.Module, got {name!r} -> {type(mod).__name__}")
        if not (count or keep):
            raise ValueError("count and keep are both False; at least one must be True")
        self.layers: dict[str, nn.Module] = dict(layers)
        self.count = count
        self.keep = keep
        self._recording = False
        self._handles: list[RemovableHandle] = []
        self._positive: dict[str, Tensor] = {}
        self._total: dict[str, Tensor] = {}
        self._activations: dict[str, Tensor] = {}
        self.attach()

    # -- hook lifecycle ---------------------------------------------------------------------

    def attach(self) -> None:
        """Register the hooks (no-op if already registered)."""
        if self._handles:
            return
        for name, mod in self.layers.items():
            self._handles.append(mod.register_forward_hook(self._make_hook(name)))

    def remove(self) -> None:
        """Remove the hooks; counts and kept activations stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        """Whether the hooks are currently registered."""
        return bool(self._handles)

    def __enter__(self) -> ActivationCapture:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def is_recording(self) -> bool:
        """Whether hooked forwards are currently counted / kept."""
        return self._recording

    @contextmanager
    def recording(self) -> Iterator[ActivationCapture]:
        """Count / keep activations of the forward passes run inside this block.

        Nesting is allowed; the previous state is restored on exit.
        """
        if not self._handles:
            raise RuntimeError("ActivationCapture.recording() after remove(); call attach() first")
        previous = self._recording
        self._recording = True
        try:
            yield self
        finally:
            self._recording = previous

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if not self._recording:
                return
            if not isinstance(output, Tensor):
                raise ValueError(
                    f"layer {name!r} returned {type(output).__name__}; only tensor outputs can be captured"
                )
            act = output.detach()
            if self.count:
                if name not in self._positive:
                    self._positive[name] = torch.zeros((), dtype=torch.int64, device=act.device)
                    self._total[name] = torch.zeros((), dtype=torch.int64, device=act.device)
                self._positive[name] += _count_positive(act, nonnegative=isinstance(module, nn.ReLU))
                self._total[name] += act.numel()
            if self.keep:
                self._activations[name] = act.clone()
            # returning None keeps the module's output untouched

        return hook

    # -- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per layer ``(count_positive, count_total)`` as 0-d ``int64`` device tensors.

        A layer appears once it has been called during a recorded forward; :meth:`reset` zeroes
        its counters but keeps the entry. The tensors are live (updated in place): clone them to
        keep a snapshot.
        """
        return {name: (self._positive[name], self._total[name]) for name in self._positive}

    @property
    def activations(self) -> dict[str, Tensor]:
        """Detached outputs of the last recorded call of each layer (``keep=True`` only)."""
        return dict(self._activations)

    def reset(self) -> None:
        """Zero the counters in place (no reallocation, no sync) and drop kept activations."""
        for tensor in self._positive.values():
            tensor.zero_()
        for tensor in self._total.values():
            tensor.zero_()
        self._activations.clear()
