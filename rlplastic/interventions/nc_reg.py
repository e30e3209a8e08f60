r"""The anti-collapse regularizer (Bonifazi et al. 2024, adapted to a critic; docs/reference.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from rlplastic.interventions.base import (
    CRITIC,
    INTERVENTIONS,
    Intervention,
    check_coef,
    check_state,
    critic_penultimate_layer,
)
from rlplastic.monitor.collapse import nc1_differentiable, quantile_bins
from rlplastic.protocols import Monitor, MonitoredAgent

__all__ = ["NCRegularizer"]


@INTERVENTIONS.register("nc_reg")
class NCRegularizer(Intervention):
    r"""Anti-collapse regularizer (Bonifazi et al. 2024) on the critic: adds ``−coef · min(NC1, clip)``.

    NC1 (neural collapse's within-class variability relative to between-class spread) falls toward 0 as
    the features of each class collapse onto their class mean. The term is **negative** in NC1, so
    minimising the loss *raises* NC1: it discourages collapse. ``clip`` caps the reward — above it the
    term is constant and has no gradient — so the critic is not pushed to scatter its features without
    bound. Defaults are Bonifazi et al.'s (λ 0.075, clip 200).

    A critic has no classes; as in the monitor (:mod:`rlplastic.monitor.collapse`), the classes are
    ``num_bins`` equal-count quantile bins of the current minibatch's TD target (``context["td_target"]``),
    and NC1 is the monitor's own (:func:`~rlplastic.monitor.collapse.nc1_differentiable`, same ``rcond``).
    The features h are the critic's penultimate features: the **input** of the Linear layer ``layer``
    (by default the monitor's: the last Linear of the critic's first Q head,
    :func:`~rlplastic.interventions.base.critic_penultimate_layer`; Q2 is left alone, as the monitor
    measures Q1). The gradient flows into h's producers (the Q head's hidden layers, the trunk and the
    encoder), not into that layer.

    **How h is captured, and the ordering it relies on.** A forward pre-hook on ``layer`` keeps its
    input from the most recent call made with grad enabled (calls under ``no_grad``, e.g. probes, do
    not overwrite it). :meth:`extra_loss` for the critic must therefore come after the critic-loss
    forward and before any other grad-enabled critic forward. DrQ-v2's ``_update_critic`` does exactly
    that: the TD target runs the target critic under ``no_grad``, then the critic-loss forward, then
    ``extra_loss("critic", ...)``; the actor loss calls the critic only afterwards. The capture is dropped
    once used, so calling :meth:`extra_loss` twice without a new forward is an error rather than a
    silent reuse of stale features; a batch-size mismatch with the TD target is an error too.

    :param agent: the agent; its modules must include the critic.
    :param coef: λ >= 0.
    :param clip: cap on NC1 (> 0).
    :param num_bins: K, the number of TD-target quantile bins (2 <= K <= batch size).
    :param layer: qualified name inside the critic of the Linear layer whose input is h; ``None``: the
        monitor's penultimate features.
    :param rcond: relative singular-value cutoff of the pseudo-inverse (as the monitor's).
    """

    def __init__(
        self,
        agent: MonitoredAgent,
        monitor: Monitor | None = None,
        coef: float = 0.075,
        clip: float = 200.0,
        num_bins: int = 10,
        layer: str | None = None,
        rcond: float = 1e-8,
    ) -> None:
        super().__init__(agent, monitor)
        modules = agent.named_modules_for_monitor()
        if CRITIC not in modules:
            raise ValueError(f"{self.name} regularizes the critic: the agent has no {CRITIC!r} (got {list(modules)})")
        self.coef = check_coef(coef, self.name)
        self.clip = check_coef(clip, self.name, "clip")
        if self.clip == 0:
            raise ValueError(f"{self.name}.clip=0 must be > 0")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"{self.name}.num_bins={num_bins!r} must be an int >= 2")
        if isinstance(rcond, bool) or not isinstance(rcond, (int, float)) or not 0 < rcond < 1:
            raise ValueError(f"{self.name}.rcond={rcond!r} must be a number in (0, 1)")
        self.num_bins = num_bins
        self.rcond = float(rcond)
        critic = modules[CRITIC]
        layer = critic_penultimate_layer(agent) if layer is None else layer
        try:
            head = critic.get_submodule(layer) if isinstance(layer, str) else None
        except AttributeError:
            head = None
        if not isinstance(head, nn.Linear):
            linears = [n for n, m in critic.named_modules() if isinstance(m, nn.Linear)]
            raise ValueError(f"{self.name}.layer={layer!r} is not a Linear layer of the critic: allowed are {linears}")
        self.layer = layer
        self._head = head
        self.last_terms: dict[str, Tensor] = {}
        #: latest unclipped NC1 (detached float64 device tensor), for logging
        self.last_nc1: Tensor | None = None
        self._features: Tensor | None = None

    def install(self) -> None:
        self._head.register_forward_pre_hook(self._capture)
        self.agent.hooks.add_loss_term(self.extra_loss)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        del module
        if torch.is_grad_enabled():
            self._features = args[0]

    def extra_loss(self, module_name: str, context: Mapping[str, Tensor]) -> Tensor | None:
        """``−coef · min(NC1, clip)`` for the critic (``None`` for other modules or coef = 0).

        :param module_name: the module whose loss is being built.
        :param context: must hold ``td_target`` (B, 1) or (B,) for the critic.
        :return: 0-d float32 tensor, differentiable w.r.t. the captured features.
        """
        if module_name != CRITIC or self.coef == 0.0:
            return None
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError(
                f"{self.name}: no critic forward with grad since the last call; extra_loss({CRITIC!r}) must "
                f"follow the critic-loss forward (the hook is on {CRITIC}.{self.layer})"
            )
        if "td_target" not in context:
            raise ValueError(f"{self.name} needs context['td_target'], got keys {sorted(context)}")
        targets = context["td_target"].detach().reshape(-1)
        features = features.reshape(-1, features.shape[-1])
        if features.shape[0] != targets.numel():
            raise RuntimeError(
                f"{self.name}: captured {features.shape[0]} feature rows for {targets.numel()} TD targets; "
                f"the latest grad-enabled forward of {CRITIC}.{self.layer} was not the critic-loss forward"
            )
        labels, _ = quantile_bins(targets, self.num_bins)
        nc1 = nc1_differentiable(features, labels, self.num_bins, self.rcond)
        self.last_nc1 = nc1.detach()
        term = (-self.coef * torch.clamp(nc1, max=self.clip)).to(torch.float32)
        self.last_terms[CRITIC] = term.detach()
        return term

    def train_metrics(self) -> dict[str, Tensor]:
        metrics = {f"reg/{self.name}/{module}": term for module, term in self.last_terms.items()}
        if self.last_nc1 is not None:
            metrics[f"reg/{self.name}/nc1"] = self.last_nc1
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Stateless apart from its name (the hook and the capture are rebuilt with the object)."""
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Check that ``state`` comes from an :class:`NCRegularizer`."""
        check_state(state, self.name)
