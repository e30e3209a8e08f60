"""What an agent hands the monitor for probe-time critic measurements.

Curvature and neural collapse need a critic loss that is one fixed function of the critic's
parameters: the augmentation draw, the encoder features and the TD targets are computed once and
frozen. An agent builds a :class:`CriticProbe` for a batch (``agent.critic_probe(batch, step)``); the
monitor never reaches into the agent's modules itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

#: The feature matrices the monitor reads from :attr:`CriticProbe.features` (others are ignored), so
#: that the tags it writes are known before the first probe: ``encoder`` (encoder output),
#: ``critic_trunk``, ``actor_trunk``, ``critic_penultimate`` (input of Q1's last Linear; also the
#: source of the last-layer Hessian and of neural collapse). An agent may leave any of them out.
PROBE_FEATURES: tuple[str, ...] = ("encoder", "critic_trunk", "actor_trunk", "critic_penultimate")


@dataclass
class CriticProbe:
    """A frozen critic loss and the features it is made of, for one probe batch.

    Attributes:
        loss_fn: recomputes the critic loss (twin-Q MSE against the frozen TD target) from the frozen
            inputs; differentiable w.r.t. ``params`` only.
        params: the critic parameters the loss is a function of (Hessian / sharpness measurements).
        features: named feature matrices (n × d), detached, under the names of :data:`PROBE_FEATURES`:
            ``encoder`` (encoder output), ``critic_trunk``, ``actor_trunk``, ``critic_penultimate``
            (input of the first Q head's last Linear).
        td_target: the frozen TD target, shape (n,).
        q: the first Q head's prediction, shape (n,).
        head_weight: the first Q head's last-layer weight, shape (d,).
        head_bias: its bias (a 0-d tensor).
        critic_inputs: the frozen, detached inputs of the critic's forward on the probe batch, so that
            ``critic(*critic_inputs)`` is the probe forward (DrQ-v2: encoder features and actions); the
            target-fitting probe trains a copy of the critic on them. Empty: no fitting.
    """

    loss_fn: Callable[[], torch.Tensor]
    params: list[nn.Parameter]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    td_target: torch.Tensor | None = None
    q: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    critic_inputs: tuple[torch.Tensor, ...] = ()
