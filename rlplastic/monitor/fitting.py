r"""Target fitting: how well a copy of a network can still learn a new function (plasticity measured directly).

Lyle et al. (2022, "Understanding and preventing capacity loss in reinforcement learning") measure
*capacity* by training a network on fresh random targets and reading the loss it reaches; Lyle et al.
(2023, "Understanding plasticity in neural networks") read plasticity the same way, as the loss after a
fixed training budget on a new task. Neither fixes one protocol for an RL critic at probe time, so this
module fixes its own, chosen to be cheap, to leave training untouched and to be comparable across runs
and training times.

**Protocol.** Inputs X: the frozen inputs of the network's forward on the probe batch (for DrQ-v2's
critic: the detached encoder features of the probe's augmentation draw and the batch actions, so the
encoder is not trained and costs nothing). Outputs f(X) (n × m): every output of the forward, flattened
and concatenated (DrQ-v2's twin Q heads: m = 2).

1. **Copy.** A deep copy of the live network (:func:`detached_copy`): same parameters, no hooks, no
   ``.grad``, a fresh Adam; the live network, its optimizer state and its gradients are never read for
   writing. Parameters with ``requires_grad=False`` (a plasticity-injected head's frozen copy) stay frozen.
2. **Targets** y (n × m), each column standardised to zero mean and unit variance over the batch
   (population statistics): ``fresh_network`` (:func:`fresh_network_targets`): the outputs of a freshly
   initialised network of the same architecture, a target of the kind the network was built to fit;
   ``random_projection`` (:func:`random_projection_targets`): X·W with a Gaussian W (a linear target that
   needs no second network). The monitor draws the target function (the fresh network's weights, W) from
   its own seed alone, so it is the same function at every probe of a run: the probes differ only in the
   critic and the probe batch.
3. **Residual regression.** The copy is trained to add y to what it computes now: its regression goal
   is f₀(X) + y, where f₀ is the copy's output before training, with the loss
   ℓ_t = mean((f_t(X) − f₀(X) − y)²) / mean(y²). Measuring the *change* the network makes, rather than
   its output against y directly, keeps the current Q values out of the metric: a trained critic outputs
   Q of order 10–100, and fitting a standardised target from there would measure mostly how fast the
   output offset can move. ℓ₀ = 1 exactly (no change yet = no fit), whatever the network is.
4. **Training.** ``steps`` = k Adam steps (default learning rate: the agent's) on the MSE of minibatches of
   ``batch_size`` samples drawn from the probe batch without replacement (default: the whole batch, every
   step).

**Results** (:class:`FitResult`). ``loss`` = ℓ_k on the whole probe batch: 1.0 = the k steps made no
progress, 0 = fitted exactly; values above 1 mean training diverged. ``auc`` = the area under the
normalised fitting curve over [0, k] divided by k (trapezoid rule on ℓ_0, …, ℓ_k): it separates a
network that fits fast from one that gets to the same final loss late. ℓ_0 = 1 and ℓ_k are exact; the
intermediate ℓ_t are the training losses of step t + 1 (exact with full-batch steps, minibatch
estimates otherwise). With k = 0 both are 1.0.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FIT_TARGETS",
    "FitResult",
    "detached_copy",
    "fit_targets",
    "flat_outputs",
    "fresh_network_targets",
    "random_projection_targets",
    "standardise",
]

#: Target kinds :func:`fit_targets` callers may choose from (``monitor.fit_target``).
FIT_TARGETS: tuple[str, ...] = ("fresh_network", "random_projection")

# the hook dicts a deep copy must not take over (the monitor's counting hooks live there)
_HOOK_ATTRS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")  # fmt: skip


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`fit_targets`.

    Attributes:
        loss: ℓ_k, the final normalised loss on all samples (1.0 = no fit, 0 = exact fit).
        auc: the trapezoid area under ℓ_0, …, ℓ_k divided by k (1.0 when k = 0).
        curve: ℓ_0, …, ℓ_k (length k + 1; ℓ_0 = 1).
    """

    loss: float
    auc: float
    curve: tuple[float, ...]


def detached_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without its hooks and gradients; ``module`` itself is not modified.

    Forward/backward hooks registered on the original (e.g. activation counters) are replaced by empty
    dicts in the copy through the deep-copy memo, so they are neither run nor copied.
    """
    memo: dict[int, object] = {}
    for sub in module.modules():
        for attr in _HOOK_ATTRS:
            hooks = getattr(sub, attr, None)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    clone = copy.deepcopy(module, memo)
    for param in clone.parameters():
        param.grad = None
    return clone


def flat_outputs(module: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """``module(*inputs)`` as one (n × m) float32 matrix: each output flattened per sample, concatenated."""
    out = module(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    n = inputs[0].shape[0]
    return torch.cat([o.reshape(n, -1).float() for o in outs], dim=1)


def standardise(y: Tensor) -> Tensor:
    """Each column of ``y`` (n × m) to zero mean and unit population variance over the rows.

    :raises ValueError: for fewer than two rows or a constant column (no variance to fit).
    """
    if y.ndim != 2 or y.shape[0] < 2:
        raise ValueError(f"targets must be an (n, m) matrix with n >= 2, got shape {tuple(y.shape)}")
    y = y.to(torch.float32)
    centred = y - y.mean(dim=0, keepdim=True)
    std = centred.square().mean(dim=0, keepdim=True).sqrt()
    if bool((std <= 1e-12 * (1.0 + y.abs().amax(dim=0, keepdim=True))).any()):
        raise ValueError("a target column is constant over the batch: there is nothing to fit")
    return centred / std


@torch.no_grad()
def fresh_network_targets(fresh: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """Standardised outputs of a freshly initialised network ``fresh`` on ``inputs`` (n × m)."""
    return standardise(flat_outputs(fresh, inputs))


@torch.no_grad()
def random_projection_targets(inputs: Sequence[Tensor], num_outputs: int, generator: torch.Generator) -> Tensor:
    """Standardised X·W (n × ``num_outputs``): X = the inputs flattened per sample and concatenated, W ~ N(0, 1)."""
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    n = inputs[0].shape[0]
    x = torch.cat([t.reshape(n, -1).float() for t in inputs], dim=1)
    w = torch.randn(x.shape[1], num_outputs, generator=generator, device=x.device, dtype=x.dtype)
    return standardise(x @ w)


def fit_targets(
    module: nn.Module,
    inputs: Sequence[Tensor],
    targets: Tensor,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> FitResult:
    """Train a :func:`detached_copy` of ``module`` for ``steps`` Adam steps to add ``targets`` to its outputs.

    Args:
        module: the network (left untouched); ``module(*inputs)`` gives a tensor or a tuple of tensors.
        inputs: the frozen inputs, each with the n samples along dim 0 (detached here).
        targets: the standardised targets y (n × m), m = the number of outputs of :func:`flat_outputs`.
        steps: k >= 0, the number of Adam steps.
        lr: Adam's learning rate (> 0).
        batch_size: samples per step, drawn without replacement (``None`` or >= n: all, every step).
        generator: draws the minibatches (on the inputs' device); needed only with minibatches.

    :return: the normalised final loss, area under the curve and the curve (see the module docstring).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    inputs = [t.detach() for t in inputs]
    n = inputs[0].shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"targets have {targets.shape[0]} rows for {n} samples")
    minibatch = batch_size is not None and batch_size < n
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if minibatch and generator is None:
        raise ValueError("fit_targets with minibatches needs a generator")

    model = detached_copy(module)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        start = flat_outputs(model, inputs)
    if start.shape != targets.shape:
        raise ValueError(f"targets have shape {tuple(targets.shape)}, the network's outputs {tuple(start.shape)}")
    goal = start + targets.to(start)
    scale = targets.to(start).square().mean()
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[Tensor] = []  # ℓ_1 … ℓ_{k-1}, kept on device until the end (one host sync)
    with torch.enable_grad():
        for t in range(steps):
            if minibatch:
                idx = torch.randperm(n, generator=generator, device=goal.device)[:batch_size]
                loss = F.mse_loss(flat_outputs(model, [x[idx] for x in inputs]), goal[idx])
            else:
                loss = F.mse_loss(flat_outputs(model, inputs), goal)
            if t > 0:
                losses.append(loss.detach() / scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if steps == 0:
        return FitResult(1.0, 1.0, (1.0,))
    with torch.no_grad():
        final = F.mse_loss(flat_outputs(model, inputs), goal) / scale
    curve = [1.0, *torch.stack([*losses, final]).double().cpu().tolist()]
    auc = (0.5 * curve[0] + sum(curve[1:-1]) + 0.5 * curve[-1]) / steps
    return FitResult(float(curve[-1]), float(auc), tuple(curve))
