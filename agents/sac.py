"""SAC (Haarnoja et al. 2018) as DMC users run it from states, and from pixels as DrQ does — docs/sac.md.

One file, top to bottom: the squashed-Gaussian policy, the twin-Q critic, then the agent. From pixels
the encoder is DrQ-v2's conv ``Encoder`` with the same augmentation; it is trained through the critic
loss only, and the actor sees detached features. The log-std is bounded by the rescaled tanh of the
common PyTorch SAC implementations, ``log_std_min + (log_std_max − log_std_min)·(tanh(x) + 1)/2``, not by
a clamp. The agent plugs into the plasticity tooling through ``self.hooks`` only (rlplastic.protocols).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.drqv2 import Critic, Encoder, StateEncoder, encoder_layer_links, mlp, trunk, twin_q_loss
from rlplastic.agent_hooks import AgentHooks
from rlplastic.augment import NoAug
from rlplastic.protocols import CriticProbe
from rlplastic.replay import Batch
from rlplastic.utils import soft_update_params, weight_init

OBS_TYPES = ("pixels", "states")
MODULES = ("encoder", "actor", "critic")


def squashed_sample(mu: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``a = tanh(mu + std·noise)`` and ``log π(a|s)`` summed over action dims, shape (B, 1).

    Change of variables: ``log π(a) = log N(u; mu, std) − Σ log(1 − tanh(u)²)`` with ``u`` the
    pre-tanh sample; ``log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u))`` is its overflow-free form.
    """
    u = mu + log_std.exp() * noise
    log_normal = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    log_jacobian = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return torch.tanh(u), (log_normal - log_jacobian).sum(-1, keepdim=True)


class Actor(nn.Module):
    """Trunk (Linear→LN→Tanh), then a 2-hidden-layer ReLU ``policy`` giving the mean and log-std."""

    def __init__(
        self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, log_std_bounds: tuple[float, float]
    ) -> None:
        super().__init__()
        self.log_std_bounds = log_std_bounds
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, hidden_dim, 2 * action_dim)
        self.apply(weight_init)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-tanh mean and log-std, the log-std mapped into ``log_std_bounds`` by a rescaled tanh."""
        mu, raw = self.policy(self.trunk(features)).chunk(2, dim=-1)
        low, high = self.log_std_bounds
        return mu, low + 0.5 * (high - low) * (torch.tanh(raw) + 1.0)


class SACAgent:
    """Soft actor-critic with a learned temperature, implementing rlplastic.protocols' agent contract.

    :param obs_shape: (C, H, W) of a stacked pixel observation, or (D,) for states.
    :param action_shape: Shape of the action vector (actions live in [-1, 1]).
    :param device: Torch device of the networks and the update.
    :param lr: Adam learning rate of the encoder, actor and critic.
    :param feature_dim: Width of the actor's and critic's Linear→LayerNorm→Tanh trunks.
    :param hidden_dim: Width of the hidden ReLU layers of the policy and of each Q head.
    :param critic_target_tau: Polyak coefficient of the target critic, applied after every update.
    :param num_expl_steps: Agent steps during which training actions are drawn uniformly.
    :param init_temperature: Initial entropy temperature α (> 0); ``log α`` is learned.
    :param alpha_lr: Adam learning rate of ``log α``.
    :param actor_log_std_min: Lower bound of the policy's log-std.
    :param actor_log_std_max: Upper bound of the policy's log-std (> ``actor_log_std_min``).
    :param obs_type: ``pixels`` (DrQ-v2's conv encoder) or ``states`` (identity encoder).
    :param augmentation: Applied independently to ``obs`` and ``next_obs`` in each update (pixels only).
    :param bf16: Must be ``False`` (accepted so the shared config key reaches the agent and is refused clearly).
    :param channels_last: Must be ``False``, as ``bf16``.
    :param compile: Must be ``False``, as ``bf16``.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        device: str | torch.device = "cpu",
        lr: float = 1e-4,
        feature_dim: int = 50,
        hidden_dim: int = 1024,
        critic_target_tau: float = 0.01,
        num_expl_steps: int = 2000,
        init_temperature: float = 0.1,
        alpha_lr: float = 1e-4,
        actor_log_std_min: float = -5.0,
        actor_log_std_max: float = 2.0,
        obs_type: str = "states",
        augmentation: nn.Module | None = None,
        bf16: bool = False,
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the config key's name
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type={obs_type!r} is not supported: allowed are {list(OBS_TYPES)}")
        for name, value in (("lr", lr), ("alpha_lr", alpha_lr), ("init_temperature", init_temperature),
                            ("feature_dim", feature_dim), ("hidden_dim", hidden_dim)):  # fmt: skip
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0")
        if not 0.0 < critic_target_tau <= 1.0:
            raise ValueError(f"critic_target_tau={critic_target_tau} must be in (0, 1]")
        if num_expl_steps < 0:
            raise ValueError(f"num_expl_steps={num_expl_steps} must be >= 0")
        if not actor_log_std_min < actor_log_std_max:
            raise ValueError(f"actor_log_std_min={actor_log_std_min} must be < actor_log_std_max={actor_log_std_max}")
        for name, value in (("bf16", bf16), ("channels_last", channels_last), ("compile", compile)):
            if value:
                raise ValueError(f"{name}={value}: agent=sac supports {name}=false only")
        if obs_type == "states" and augmentation is not None and not isinstance(augmentation, NoAug):
            raise ValueError(f"augmentation {type(augmentation).__name__} needs obs_type='pixels'; states take none")

        self.device = torch.device(device)
        self.obs_type = obs_type
        self.critic_target_tau = critic_target_tau
        self.num_expl_steps = num_expl_steps
        self.aug = augmentation if augmentation is not None else NoAug()
        self.hooks = AgentHooks()
        action_dim = int(np.prod(action_shape))
        self.target_entropy = -float(action_dim)
        # the sizes fresh_module builds from (never re-read from the networks, which injection changes)
        self._sizes = {"obs_shape": tuple(obs_shape), "action_dim": action_dim, "feature_dim": feature_dim,
                       "hidden_dim": hidden_dim, "log_std_bounds": (actor_log_std_min, actor_log_std_max)}  # fmt: skip

        self.encoder = self._build("encoder")
        self._sizes["repr_dim"] = self.encoder.repr_dim
        self.actor = self._build("actor")
        self.critic = self._build("critic")
        self.critic_target = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor(math.log(init_temperature), device=self.device, requires_grad=True)

        # The states encoder has no parameters, so it gets no optimizer.
        self._optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=lr),
        }
        if any(True for _ in self.encoder.parameters()):
            self._optimizers["encoder"] = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self._alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=alpha_lr)
        self.train()

    def _build(self, name: str) -> nn.Module:
        """A freshly initialised ``name`` from the stored sizes (built on CPU, then moved, as DrQ-v2)."""
        s = self._sizes
        module: nn.Module
        if name == "encoder":
            module = (Encoder if self.obs_type == "pixels" else StateEncoder)(s["obs_shape"])
        elif name == "actor":
            module = Actor(s["repr_dim"], s["action_dim"], s["feature_dim"], s["hidden_dim"], s["log_std_bounds"])
        else:
            module = Critic(s["repr_dim"], s["action_dim"], s["feature_dim"], s["hidden_dim"])
        return module.to(self.device)

    @property
    def alpha(self) -> Tensor:
        """The temperature ``exp(log α)``, detached."""
        return self.log_alpha.detach().exp()

    # -- protocol -------------------------------------------------------------------------------

    def train(self, training: bool = True) -> None:
        """Set train/eval mode of the online networks (the target critic always stays in train mode)."""
        for module in (self.encoder, self.actor, self.critic):
            module.train(training)
        self.critic_target.train(True)

    def named_modules_for_monitor(self) -> dict[str, nn.Module]:
        """The modules whose plasticity is measured."""
        return {name: getattr(self, name) for name in MODULES}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by module name; the temperature's own Adam is private (it trains no module)."""
        return dict(self._optimizers)

    def state_dict(self) -> dict[str, Any]:
        """Networks, target critic, ``log α`` and every optimizer state (the temperature's included)."""
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in (*MODULES, "critic_target")}
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["optimizers"] = {name: opt.state_dict() for name, opt in self._optimizers.items()}
        state["alpha_optimizer"] = self._alpha_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        for name in (*MODULES, "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, opt in self._optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self._alpha_optimizer.load_state_dict(state["alpha_optimizer"])

    def fresh_module(self, name: str) -> nn.Module:
        """A newly initialised ``named_modules_for_monitor()[name]``, drawn like construction draws it."""
        if name not in MODULES:
            raise ValueError(f"fresh_module({name!r}): unknown module, allowed are {list(MODULES)}")
        fresh = self._build(name)
        fresh.train(self.critic.training)
        return fresh

    def target_networks(self) -> dict[str, nn.Module]:
        """Online module name → its target copy (Polyak-averaged after every update)."""
        return {"critic": self.critic_target}

    def layer_links(self) -> dict[str, tuple[str, ...]]:
        """Pixels: the encoder's last conv feeds both trunks' first Linear. States: no cross-module links."""
        return encoder_layer_links(self.encoder)

    def injection_heads(self) -> dict[str, tuple[str, ...]]:
        """The heads after the trunks: the actor's ``policy`` (mean and log-std) and the critic's Q heads."""
        return {"actor": ("policy",), "critic": ("Q1", "Q2")}

    @torch.no_grad()
    def forward_for_statistics(self, batch: Batch) -> None:
        """Encoder → actor and critic once on ``batch.obs`` / ``batch.action``: no loss phase, no augmentation."""
        features = self.encoder(batch.obs.float())
        self.actor(features)
        self.critic(features, batch.action)

    # -- acting ---------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """``tanh(mean)`` in eval mode; otherwise a policy sample, uniform during the first ``num_expl_steps``."""
        obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(0).float()
        mu, log_std = self.actor(self.encoder(obs_t))
        if eval_mode:
            action = torch.tanh(mu)
        elif step < self.num_expl_steps:
            action = torch.empty_like(mu).uniform_(-1.0, 1.0)
        else:
            action, _ = squashed_sample(mu, log_std, torch.randn_like(mu))
        return action.cpu().numpy()[0]

    # -- learning -------------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """One SAC update: critic (and encoder), then actor and temperature, then the target critic.

        Returns detached on-device scalars (no host sync here).
        """
        del step  # SAC has no schedule
        obs, next_obs = batch.obs, batch.next_obs
        if self.obs_type == "pixels":
            obs, next_obs = self.aug(obs), self.aug(next_obs)  # two independent draws, as DrQ-v2
        obs, next_obs = obs.float(), next_obs.float()
        with self.hooks.loss_phase("encoder"):
            features = self.encoder(obs)
        with torch.no_grad():
            next_features = self.encoder(next_obs)

        metrics = {"batch_reward": batch.reward.mean().detach()}
        metrics.update(self._update_critic(obs, features, batch, next_features))
        metrics.update(self._update_actor_and_alpha(features.detach()))
        soft_update_params(self.critic, self.critic_target, self.critic_target_tau)
        return metrics

    @torch.no_grad()
    def soft_td_target(self, next_features: Tensor, reward: Tensor, discount: Tensor) -> Tensor:
        """``r + γⁿ · (min(Q1', Q2')(s', a') − α · log π(a'|s'))`` with ``a' ~ π(s')``; γⁿ is the batch's discount."""
        mu, log_std = self.actor(next_features)
        next_action, next_log_prob = squashed_sample(mu, log_std, torch.randn_like(mu))
        target_q1, target_q2 = self.critic_target(next_features, next_action)
        return reward + discount * (torch.min(target_q1, target_q2) - self.alpha * next_log_prob)

    def _update_critic(self, obs: Tensor, features: Tensor, batch: Batch, next_features: Tensor) -> dict[str, Tensor]:
        target = self.soft_td_target(next_features, batch.reward, batch.discount)
        context = {"td_target": target}
        with self.hooks.loss_phase("critic"):
            q1, q2 = self.critic(features, batch.action)
        loss = twin_q_loss(q1, q2, target)
        loss = loss + self.hooks.extra_loss("critic", context) + self.hooks.extra_loss("encoder", context)

        def critic_loss_again() -> Tensor:  # critic terms only, on the detached features
            return twin_q_loss(*self.critic(features.detach(), batch.action), target) + self.hooks.extra_loss(
                "critic", context
            )

        def encoder_loss_again() -> Tensor:  # the whole critic loss as a function of the encoder, same draw
            total = twin_q_loss(*self.critic(self.encoder(obs), batch.action), target)
            return total + self.hooks.extra_loss("critic", context) + self.hooks.extra_loss("encoder", context)

        for opt in self._optimizers_of("encoder", "critic"):
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.hooks.step("critic", self._optimizers["critic"], critic_loss_again)
        if "encoder" in self._optimizers:
            self.hooks.step("encoder", self._optimizers["encoder"], encoder_loss_again)
        return {
            "critic_loss": loss.detach(),
            "critic_q1": q1.mean().detach(),
            "critic_q2": q2.mean().detach(),
            "critic_target_q": target.mean(),
        }

    def _update_actor_and_alpha(self, features: Tensor) -> dict[str, Tensor]:
        alpha = self.alpha
        with self.hooks.loss_phase("actor"):
            mu, log_std = self.actor(features)
        noise = torch.randn_like(mu)  # frozen for loss_again

        def actor_loss_of(mu: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
            action, log_prob = squashed_sample(mu, log_std, noise)
            q1, q2 = self.critic(features, action)
            return (alpha * log_prob - torch.min(q1, q2)).mean(), log_prob

        loss, log_prob = actor_loss_of(mu, log_std)
        loss = loss + self.hooks.extra_loss("actor", {})

        def actor_loss_again() -> Tensor:
            return actor_loss_of(*self.actor(features))[0] + self.hooks.extra_loss("actor", {})

        self._optimizers["actor"].zero_grad(set_to_none=True)
        loss.backward()
        self.hooks.step("actor", self._optimizers["actor"], actor_loss_again)

        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy).detach()).mean()
        self._alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self._alpha_optimizer.step()
        return {
            "actor_loss": loss.detach(),
            "actor_logprob": log_prob.mean().detach(),
            "actor_ent": -log_prob.mean().detach(),
            "alpha": alpha,
            "alpha_loss": alpha_loss.detach(),
        }

    def critic_probe(self, batch: Batch, step: int) -> CriticProbe:
        """A frozen soft-TD critic loss on ``batch`` for the plasticity probe; changes no parameter.

        One augmentation draw, detached encoder features, one policy draw for the frozen soft TD target.
        Each network's first forward is on ``batch.obs`` (the monitor reads dormant units from it).
        """
        del step
        obs, next_obs = batch.obs, batch.next_obs
        if self.obs_type == "pixels":
            obs, next_obs = self.aug(obs), self.aug(next_obs)
        action = batch.action
        with torch.no_grad():
            obs = obs.float()  # the encoder's input, kept for the encoder+critic fitting probe
            features = self.encoder(obs)
            self.actor(features)
            self.critic(features, action)
            target = self.soft_td_target(self.encoder(next_obs.float()), batch.reward, batch.discount)
            actor_trunk = self.actor.trunk(features)
        extra = {"encoder": features, "actor_trunk": actor_trunk}
        return CriticProbe.of_twin_q_critic(
            self.critic, features, action, target, twin_q_loss, extra, encoder_inputs=(obs,)
        )

    def _optimizers_of(self, *names: str) -> list[torch.optim.Optimizer]:
        return [self._optimizers[n] for n in names if n in self._optimizers]
