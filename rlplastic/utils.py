"""Small agent-building utilities shared by every agent: schedules, init, target updates, distributions.

These follow facebookresearch/drqv2 ``utils.py`` (docs/reference.md §1) so that agents built on them
reproduce the reference numerically.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.distributions import Normal
from torch.distributions.utils import _standard_normal

_LINEAR = re.compile(r"^linear\(([^,]+),([^,]+),([^,]+)\)$")
_STEP_LINEAR = re.compile(r"^step_linear\(([^,]+),([^,]+),([^,]+),([^,]+),([^,]+)\)$")


def schedule(spec: str | float, step: int) -> float:
    """Evaluate a DrQ-v2 schedule string at ``step`` (agent steps).

    Accepted forms (as in drqv2): a constant (``0.2`` or ``"0.2"``), ``linear(init,final,duration)``
    which moves linearly from ``init`` to ``final`` over ``duration`` steps and then stays, and
    ``step_linear(init,final1,duration1,final2,duration2)``.

    Raises:
        ValueError: if ``spec`` is none of these forms.
    """
    if isinstance(spec, (int, float)):
        return float(spec)
    text = str(spec).replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    match = _LINEAR.match(text)
    if match:
        init, final, duration = (float(g) for g in match.groups())
        mix = min(max(step / duration, 0.0), 1.0)
        return (1.0 - mix) * init + mix * final
    match = _STEP_LINEAR.match(text)
    if match:
        init, final1, duration1, final2, duration2 = (float(g) for g in match.groups())
        if step <= duration1:
            mix = min(max(step / duration1, 0.0), 1.0)
            return (1.0 - mix) * init + mix * final1
        mix = min(max((step - duration1) / duration2, 0.0), 1.0)
        return (1.0 - mix) * final1 + mix * final2
    raise ValueError(
        f"unknown schedule {spec!r}: allowed are a number, 'linear(init,final,duration)' "
        "or 'step_linear(init,final1,duration1,final2,duration2)'"
    )


def validate_schedule(spec: str | float) -> None:
    """Raise the :func:`schedule` error for ``spec`` now rather than at the first update."""
    schedule(spec, 0)


def weight_init(module: nn.Module) -> None:
    """DrQ-v2 init: orthogonal Linear (gain 1), orthogonal Conv (ReLU gain), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


@torch.no_grad()
def soft_update_params(net: nn.Module, target_net: nn.Module, tau: float) -> None:
    """Polyak update ``target ← tau·online + (1 − tau)·target`` over all parameters."""
    online = list(net.parameters())
    target = list(target_net.parameters())
    torch._foreach_lerp_(target, online, tau)


class TruncatedNormal(Normal):
    """Normal distribution whose samples are clamped to ``(low + eps, high − eps)``.

    The clamp passes gradients straight through (``x − x.detach() + clamp(x).detach()``), and
    ``sample(clip=c)`` clips the *noise* at ``±c`` before adding it to the mean — both exactly as
    drqv2's ``utils.TruncatedNormal``. ``log_prob`` and ``entropy`` are those of the untruncated
    Normal, as in the reference.
    """

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = 1e-6
    ) -> None:
        super().__init__(loc, scale, validate_args=False)
        self.low = low
        self.high = high
        self.eps = eps

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        clamped = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        return x - x.detach() + clamped.detach()

    def sample(self, clip: float | None = None, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # type: ignore[override]
        """Draw a clamped sample; ``clip`` bounds the Gaussian noise (used in updates, not when acting)."""
        shape = self._extended_shape(sample_shape)
        noise = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        noise = noise * self.scale
        if clip is not None:
            noise = torch.clamp(noise, -clip, clip)
        return self._clamp(self.loc + noise)
