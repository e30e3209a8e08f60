"""Optimizer-state surgery for interventions that re-initialise parameters (docs/reference.md §4).

A re-initialised weight must not keep the Adam moments of the weight it replaced: the old first
moment would push it back along the old gradient direction, and the old second moment would set its
step size. Two granularities are needed:

* **whole parameters** (resets, shrink-and-perturb): :func:`reset_param_state` drops the parameter's
  state, so its next ``step()`` initialises it exactly as for a new optimizer (zero moments, step 0).
* **entries of a parameter** (ReDo): :func:`zero_masked_state` zeroes every per-entry state tensor
  (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, an SGD ``momentum_buffer``) where a mask is set.

The step count. torch's Adam keeps one ``step`` per parameter *tensor*, not per entry, and uses it
for bias correction: ``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)``. After zeroing some entries' moments
there are two choices, both offered (``step=``):

* ``"keep"`` — what Sokar et al.'s JAX code does (optax keeps one global count). Untouched entries
  step exactly as before, but the zeroed entries are bias-corrected as if their moments had been
  accumulating for ``t`` steps: after ``k`` fresh steps with a steady gradient their update is about
  ``(1 − β₁ᵏ) / sqrt(1 − β₂ᵏ)`` times Adam's normal ``lr``-sized step — 3.2× at k = 1, 6.5× at
  k = 10, 3.2× at k = 100, 1.3× at k = 1000 (β = 0.9, 0.999). Recycled weights take oversized steps
  for about a thousand updates.
* ``"reset"`` (our default for ReDo) — set the tensor's ``step`` to 0 whenever any of its entries was
  zeroed. The zeroed entries then get exactly the steps of a fresh Adam; the cost moves to the
  untouched entries of the same tensor, whose well-estimated moments are now over-corrected and take
  ~0.15–0.3× their normal step for the next ~1000 updates (a brief warm-up of that layer).
  docs/reference.md §4 notes that resetting the step count matters for ReDo, and the PyTorch ReDo port
  (Klein) found the same; a warm-up of surviving units is also the safer of the two failure modes.

Nothing here syncs with the host except :func:`zero_masked_state` with ``step="reset"`` (one
``mask.any()``); interventions run rarely, so this is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "STEP_POLICIES",
    "StepPolicy",
    "check_step_policy",
    "optimizer_of",
    "reset_param_state",
    "zero_masked_state",
]

StepPolicy = Literal["keep", "reset"]
STEP_POLICIES: tuple[str, ...] = ("keep", "reset")


def check_step_policy(step: object) -> StepPolicy:
    """Return ``step`` if it is one of :data:`STEP_POLICIES`, else raise one clear ``ValueError``."""
    if step not in STEP_POLICIES:
        raise ValueError(f"step={step!r} is not a step-count policy: allowed are {list(STEP_POLICIES)}")
    return step  # type: ignore[return-value]


def optimizer_of(optimizers: Mapping[str, torch.optim.Optimizer], param: nn.Parameter) -> torch.optim.Optimizer | None:
    """The optimizer (among ``agent.optimizers()``) whose param groups hold ``param``, or ``None``.

    Looking the parameter up, rather than trusting that module ``x`` is trained by optimizer ``x``,
    keeps interventions right for agents whose optimizers span several modules.
    """
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return optimizer
    return None


def reset_param_state(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> int:
    """Forget ``optimizer``'s state for ``params`` (moments and step count alike).

    The state is dropped rather than zeroed: torch optimizers initialise a parameter's state on its
    first ``step()`` when it has none, so the parameter then behaves exactly as under a brand-new
    optimizer (Adam: zero moments, step 0, full bias correction). Parameters the optimizer does not
    hold, or holds no state for yet, are left alone.

    :param optimizer: Any ``torch.optim.Optimizer`` (Adam, AdamW, SGD, ...).
    :param params: The parameters whose state to forget.
    :return: How many parameters had state that was dropped.
    """
    dropped = 0
    for param in params:
        if optimizer.state.pop(param, None) is not None:
            dropped += 1
    return dropped


@torch.no_grad()
def zero_masked_state(
    optimizer: torch.optim.Optimizer, param: nn.Parameter, mask: Tensor, step: StepPolicy = "reset"
) -> int:
    """Zero the per-entry optimizer state of ``param`` where ``mask`` is set.

    Every state tensor with the parameter's shape is zeroed at the masked entries (Adam's
    ``exp_avg`` / ``exp_avg_sq`` / ``max_exp_avg_sq``, SGD's ``momentum_buffer``); scalar entries
    such as ``step`` are handled by ``step`` (see the module docstring for why both policies exist).

    :param optimizer: Optimizer holding ``param``.
    :param param: The parameter.
    :param mask: Boolean tensor broadcastable to ``param.shape`` (e.g. ``(out, 1)`` for rows,
        ``(1, in)`` for columns), on ``param``'s device.
    :param step: ``"reset"`` sets the tensor's step count to 0 if any entry is masked; ``"keep"``
        leaves it.
    :return: Number of state tensors touched (0 if the parameter has no state yet, i.e. it has never
        been stepped: then there is nothing to forget).
    """
    check_step_policy(step)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    state = optimizer.state.get(param)
    if not state:
        return 0
    touched = 0
    for key, value in state.items():
        if key != "step" and isinstance(value, Tensor) and value.shape == param.shape:
            value.masked_fill_(mask, 0.0)
            touched += 1
    if step == "reset" and "step" in state and bool(mask.any()):
        if isinstance(state["step"], Tensor):
            state["step"].zero_()
        else:
            state["step"] = 0
    return touched
