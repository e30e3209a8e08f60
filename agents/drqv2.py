"""DrQ-v2 (Yarats et al. 2021), as in facebookresearch/drqv2 at c0c650b — docs/reference.md §1.

One file, top to bottom: encoder, actor, critic, then the agent with ``act`` and ``update``.
Differences from the reference, all opt-in: ``obs_type="states"`` (no conv encoder),
``bf16`` autocast of the conv encoder, ``channels_last`` memory format and ``compile`` (``torch.compile``
of the network forwards inside ``update``). The plasticity tooling plugs in through ``self.hooks``
(:class:`~rlplastic.agent_hooks.AgentHooks`): loss phases, extra loss terms and optimizer step rules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlplastic.agent_hooks import AgentHooks
from rlplastic.augment import NoAug
from rlplastic.compiled import CompiledForwards
from rlplastic.protocols import Batch, CriticProbe
from rlplastic.utils import TruncatedNormal, schedule, soft_update_params, validate_schedule, weight_init

OBS_TYPES = ("pixels", "states")


class Encoder(nn.Module):
    """Four 3×3 convs (32 channels, strides 2,1,1,1, ReLU): 9×84×84 → 32·35·35 = 39,200 features."""

    def __init__(self, obs_shape: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = obs_shape
        self.convnet = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )  # fmt: skip
        side = lambda n: (n - 3) // 2 + 1 - 6  # noqa: E731 - one stride-2 conv then three stride-1
        self.repr_dim = 32 * side(height) * side(width)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs / 255.0 - 0.5
        return self.convnet(obs).flatten(1)


class StateEncoder(nn.Identity):
    """The states mode's "encoder": features are the proprioceptive vector itself."""

    def __init__(self, obs_shape: Sequence[int]) -> None:
        super().__init__()
        self.repr_dim = int(obs_shape[0])


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )  # fmt: skip


def trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Actor(nn.Module):
    """Trunk (Linear→LN→Tanh) and a 2-hidden-layer ReLU policy; the mean is ``tanh`` of its output."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, hidden_dim, action_dim)
        self.apply(weight_init)

    def forward(self, features: torch.Tensor, std: float) -> TruncatedNormal:
        mu = self.mean(features)
        return TruncatedNormal(mu, torch.full_like(mu, std))

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """The policy mean ``tanh(policy(trunk(features)))``: the tensor part of :meth:`forward`."""
        return torch.tanh(self.policy(self.trunk(features)))


class Critic(nn.Module):
    """Its own trunk and twin Q heads on ``[trunk(features), action]``."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.Q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.Q2 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_action = torch.cat([self.trunk(features), action], dim=-1)
        return self.Q1(h_action), self.Q2(h_action)


def encoder_layer_links(encoder: nn.Module) -> dict[str, tuple[str, ...]]:
    """The unit links that cross modules, for ReDo: the conv encoder's last conv, whose channels are flattened
    into both trunks' first Linear, feeds ``actor.trunk.0`` and ``critic.trunk.0``. Links inside one
    ``nn.Sequential`` (Linear/Conv → ReLU → next Linear/Conv) need no declaring; a states encoder has none."""
    if not isinstance(encoder, Encoder):
        return {}
    last_conv = max(i for i, m in enumerate(encoder.convnet) if isinstance(m, nn.Conv2d))
    return {f"encoder.convnet.{last_conv}": ("actor.trunk.0", "critic.trunk.0")}


def twin_q_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's critic loss: both Q heads regressed onto the same TD target, in float32."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


class DrQV2Agent:
    """The DrQ-v2 actor-critic; it provides every agent protocol of :mod:`rlplastic.protocols`.

    Args:
        obs_shape: (C, H, W) of a stacked pixel observation, or (D,) for states.
        action_shape: shape of the action vector (actions live in [-1, 1]).
        device: torch device for the networks and the update.
        lr: Adam learning rate of the encoder, actor and critic optimizers.
        feature_dim: width of the Linear→LayerNorm→Tanh trunks.
        hidden_dim: width of the actor's and critic's hidden ReLU layers.
        critic_target_tau: Polyak coefficient of the target-critic update (every update).
        num_expl_steps: agent steps during which acting draws uniform actions.
        stddev_schedule: exploration std schedule in agent steps, e.g. ``linear(1.0,0.1,500000)``.
        stddev_clip: bound on the policy noise inside the update (>= 0; 0 takes the mean action).
        obs_type: ``pixels`` (conv encoder) or ``states`` (identity encoder).
        augmentation: module applied independently to ``obs`` and ``next_obs`` in each update.
        bf16: run the conv encoder's forward passes in ``update`` under bfloat16 autocast (see ``_autocast``).
        channels_last: keep the encoder and its input in channels-last memory format.
        compile: run the network forwards of ``update`` (encoder, actor mean, critic, target critic)
            through ``torch.compile`` (:class:`~rlplastic.compiled.CompiledForwards`: CUDA graphs on CUDA
            for modules without hooks; the monitor's hooks still count). Acting, probes, ReDo
            statistics, the losses, optimizer steps and augmentation stay eager.
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
        stddev_schedule: str | float = "linear(1.0,0.1,500000)",
        stddev_clip: float = 0.3,
        obs_type: str = "pixels",
        augmentation: nn.Module | None = None,
        bf16: bool = False,
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the config key's name
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type={obs_type!r} is not supported: allowed are {list(OBS_TYPES)}")
        for name, value in (("lr", lr), ("feature_dim", feature_dim), ("hidden_dim", hidden_dim)):
            if value <= 0:
                raise ValueError(f"{name}={value} must be > 0")
        if not 0.0 < critic_target_tau <= 1.0:
            raise ValueError(f"critic_target_tau={critic_target_tau} must be in (0, 1]")
        if stddev_clip < 0:  # 0 is allowed: the update then uses the policy's mean action (no target smoothing)
            raise ValueError(f"stddev_clip={stddev_clip} must be >= 0")
        validate_schedule(stddev_schedule)
        if obs_type == "states" and augmentation is not None and not isinstance(augmentation, NoAug):
            raise ValueError(f"augmentation {type(augmentation).__name__} needs obs_type='pixels'; states take none")

        self.device = torch.device(device)
        self.obs_type = obs_type
        self.critic_target_tau = critic_target_tau
        self.num_expl_steps = num_expl_steps
        self.stddev_schedule = stddev_schedule
        self.stddev_clip = stddev_clip
        self.bf16 = bf16
        self.channels_last = channels_last and obs_type == "pixels"
        self.compile = bool(compile)
        self._compiled = CompiledForwards(self.device) if compile else None
        self.hooks = AgentHooks()

        encoder_cls = Encoder if obs_type == "pixels" else StateEncoder
        self.encoder = encoder_cls(obs_shape).to(self.device)
        if self.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        action_dim = int(np.prod(action_shape))
        # the widths fresh_module builds from (resets, ReDo, injection)
        self._sizes = {"obs_shape": tuple(obs_shape), "action_dim": action_dim, "feature_dim": feature_dim,
                       "hidden_dim": hidden_dim}  # fmt: skip
        self.actor = Actor(self.encoder.repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(self.encoder.repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        self.aug = augmentation if augmentation is not None else NoAug()

        # The states encoder has no parameters, so it gets no optimizer (DrQ-v2 has three).
        self._optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=lr),
        }
        if any(True for _ in self.encoder.parameters()):
            self._optimizers["encoder"] = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.train()

    # -- protocol -------------------------------------------------------------------------------

    def train(self, training: bool = True) -> None:
        """Set train/eval mode of the online networks (the target critic always stays in train mode)."""
        for module in (self.encoder, self.actor, self.critic, self.critic_target):
            module.train(training)

    def named_modules_for_monitor(self) -> dict[str, nn.Module]:
        """The modules whose plasticity is measured."""
        return {"encoder": self.encoder, "actor": self.actor, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by the name of the module they train."""
        return dict(self._optimizers)

    def state_dict(self) -> dict[str, Any]:
        """Networks, target critic and optimizer states."""
        state = {name: getattr(self, name).state_dict() for name in ("encoder", "actor", "critic", "critic_target")}
        state["optimizers"] = {name: opt.state_dict() for name, opt in self._optimizers.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        for name in ("encoder", "actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        for name, opt in self._optimizers.items():
            opt.load_state_dict(state["optimizers"][name])

    # -- intervention protocol ------------------------------------------------------------------
    # What rlplastic.interventions needs beyond the monitor protocol: fresh initialisations to copy
    # from, the target copies to keep in sync, how units flow between modules (ReDo), which
    # submodules are "heads" (plasticity injection), and a plain forward for ReDo statistics.

    def fresh_module(self, name: str) -> nn.Module:
        """A newly initialised module with the architecture of ``named_modules_for_monitor()[name]``.

        Built by the same constructor as in ``__init__`` (on CPU, then moved), so it consumes the
        global torch RNG exactly as construction does: re-seeding reproduces the draw. After plasticity
        injection this is still the *original* architecture, which is what injection needs for its heads.
        """
        sizes = self._sizes
        repr_dim, widths = self.encoder.repr_dim, (sizes["action_dim"], sizes["feature_dim"], sizes["hidden_dim"])
        builders: dict[str, Callable[[], nn.Module]] = {
            "encoder": lambda: (Encoder if self.obs_type == "pixels" else StateEncoder)(sizes["obs_shape"]),
            "actor": lambda: Actor(repr_dim, *widths),
            "critic": lambda: Critic(repr_dim, *widths),
        }
        if name not in builders:
            raise ValueError(f"fresh_module({name!r}): unknown module, allowed are {list(builders)}")
        fresh = builders[name]().to(self.device)
        if name == "encoder" and self.channels_last:
            fresh = fresh.to(memory_format=torch.channels_last)
        fresh.train(self.critic.training)
        return fresh

    def target_networks(self) -> dict[str, nn.Module]:
        """Online module name → its target copy (Polyak-averaged in every update)."""
        return {"critic": self.critic_target}

    def layer_links(self) -> dict[str, tuple[str, ...]]:
        """Cross-module unit links: producing layer → the layers that read its (ReLU) units (see
        :func:`encoder_layer_links`)."""
        return encoder_layer_links(self.encoder)

    def injection_heads(self) -> dict[str, tuple[str, ...]]:
        """Module name → the submodules plasticity injection treats as its heads (after the trunks)."""
        return {"actor": ("policy",), "critic": ("Q1", "Q2")}

    @torch.no_grad()
    def forward_for_statistics(self, batch: Batch) -> None:
        """Run encoder → actor and critic once on ``batch.obs`` / ``batch.action`` (for ReDo's hooks).

        No augmentation, autocast or phase listeners: ReDo scores units on the plain observations in
        float32, and the monitor's loss-phase FAU counters must not see this forward.
        """
        features = self.encoder(self._prepare_obs(batch.obs).float())
        self.actor(features, 1.0)  # the std does not reach any hidden unit
        self.critic(features, batch.action)

    # -- acting ---------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Mean action in eval mode; otherwise a sample, uniform during the first ``num_expl_steps``."""
        obs_t = self._prepare_obs(torch.as_tensor(obs, device=self.device).unsqueeze(0))
        dist = self.actor(self.encoder(obs_t), schedule(self.stddev_schedule, step))
        if eval_mode:
            action = dist.mean
        else:
            action = dist.sample(clip=None)
            if step < self.num_expl_steps:
                action.uniform_(-1.0, 1.0)
        return action.float().cpu().numpy()[0]

    # -- learning -------------------------------------------------------------------------------

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One DrQ-v2 update: critic (and encoder), then actor, then the target critic.

        Returns detached on-device scalars; reading them is left to the logger (no host sync here).
        """
        if self._compiled is not None:
            self._compiled.step_begin()
        obs = self._prepare_obs(batch.obs)
        next_obs = self._prepare_obs(batch.next_obs)
        if self.obs_type == "pixels":
            # Two independent draws, as in the reference. An integer shift of uint8 pixels equals the
            # shift of their float copy, and moves a quarter of the bytes.
            obs, next_obs = self.aug(obs), self.aug(next_obs)
        obs, next_obs = obs.float(), next_obs.float()
        with self.hooks.loss_phase("encoder"), self._autocast():
            features = self._forward("encoder", obs)
        with torch.no_grad(), self._autocast():
            next_features = self._forward("encoder", next_obs)
        features, next_features = features.float(), next_features.float()  # bf16 stops at the encoder

        metrics = {"batch_reward": batch.reward.mean().detach()}
        metrics.update(self._update_critic(features, batch, next_features, step))
        metrics.update(self._update_actor(features.detach(), step))
        soft_update_params(self.critic, self.critic_target, self.critic_target_tau)
        return metrics

    def td_target(
        self, next_features: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, step: int
    ) -> torch.Tensor:
        """TD target ``r + γⁿ · min(Q1', Q2')(s', a')`` with ``a' ~ π(s')`` and clipped noise."""
        with torch.no_grad():
            dist = self._policy(next_features, schedule(self.stddev_schedule, step))
            next_action = dist.sample(clip=self.stddev_clip)
            target_q1, target_q2 = self._forward("critic_target", next_features, next_action)
            return reward + discount * torch.min(target_q1, target_q2)

    def _update_critic(
        self, features: torch.Tensor, batch: Batch, next_features: torch.Tensor, step: int
    ) -> dict[str, torch.Tensor]:
        target_q = self.td_target(next_features, batch.reward, batch.discount, step)
        with self.hooks.loss_phase("critic"):
            q1, q2 = self._forward("critic", features, batch.action)
        context = {"td_target": target_q}
        loss = twin_q_loss(q1, q2, target_q)
        loss = loss + self.hooks.extra_loss("critic", context) + self.hooks.extra_loss("encoder", context)

        def critic_loss_again() -> torch.Tensor:
            # the critic's own terms on the same batch, features (detached: the encoder keeps ∇ at θ) and targets
            q1_again, q2_again = self._forward("critic", features.detach(), batch.action)
            return twin_q_loss(q1_again, q2_again, target_q) + self.hooks.extra_loss("critic", context)

        for name in ("encoder", "critic"):
            if name in self._optimizers:
                self._optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        self.hooks.step("critic", self._optimizers["critic"], critic_loss_again)
        if "encoder" in self._optimizers:
            self.hooks.step("encoder", self._optimizers["encoder"])
        return {
            "critic_loss": loss.detach(),
            "critic_q1": q1.mean().detach(),
            "critic_q2": q2.mean().detach(),
            "critic_target_q": target_q.mean(),
        }

    def _update_actor(self, features: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        with self.hooks.loss_phase("actor"):
            dist = self._policy(features, schedule(self.stddev_schedule, step))
        action = dist.sample(clip=self.stddev_clip)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        q1, q2 = self._forward("critic", features, action)
        loss = -torch.min(q1, q2).mean() + self.hooks.extra_loss("actor", {})

        self._optimizers["actor"].zero_grad(set_to_none=True)
        loss.backward()
        self.hooks.step("actor", self._optimizers["actor"])
        return {
            "actor_loss": loss.detach(),
            "actor_logprob": log_prob.mean().detach(),
            "actor_ent": dist.entropy().sum(dim=-1).mean().detach(),
        }

    def critic_probe(self, batch: Batch, step: int) -> CriticProbe:
        """A frozen critic loss on ``batch`` for the plasticity probe; changes no parameter.

        One augmentation draw, the encoder features (detached) and the TD targets are computed here and
        frozen, so ``loss_fn`` is a fixed function of the critic parameters. Callers that must not
        disturb the training RNG streams wrap this in ``torch.random.fork_rng``.
        """
        obs, next_obs = batch.obs, batch.next_obs
        if self.obs_type == "pixels":
            obs, next_obs = self.aug(self._prepare_obs(obs)), self.aug(self._prepare_obs(next_obs))
        with torch.no_grad():
            # Each network's first forward here is on the probe observations (the monitor reads
            # dormant units from first forwards), before the TD target runs them on next states.
            obs = obs.float()  # the encoder's input, kept for the encoder+critic fitting probe
            features = self.encoder(obs)
            actor_trunk = self.actor.trunk(features)
            self.actor(features, schedule(self.stddev_schedule, step))
            with self._eager():  # probes run eagerly: no recompiles for their hooks and batch size
                target = self.td_target(self.encoder(next_obs.float()), batch.reward, batch.discount, step)
        extra = {"encoder": features, "actor_trunk": actor_trunk}
        return CriticProbe.of_twin_q_critic(
            self.critic, features, batch.action, target, twin_q_loss, extra, encoder_inputs=(obs,)
        )

    # -- helpers --------------------------------------------------------------------------------

    def _prepare_obs(self, obs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return obs.contiguous(memory_format=torch.channels_last)
        return obs

    def _forward(self, name: str, *args: torch.Tensor) -> Any:
        """``getattr(self, name)(*args)``, through ``torch.compile`` when ``compile`` is on."""
        module: nn.Module = getattr(self, name)
        if not self.compile:
            return module(*args)
        return self._compiled.call(name, module, module, args)

    def _policy(self, features: torch.Tensor, std: float) -> TruncatedNormal:
        """``self.actor(features, std)``; compiled, only the mean is (a float ``std`` would recompile)."""
        if not self.compile:
            return self.actor(features, std)
        mu = self._compiled.call("actor", self.actor, self.actor.mean, (features,))
        return TruncatedNormal(mu, torch.full_like(mu, std))

    def _autocast(self) -> Any:
        """bfloat16 autocast for the conv encoder, where the update spends most of its time.

        The actor and critic stay float32. bf16 keeps 8 significant bits, so a Q value near 25 is stored to
        ±0.06 and one near 100 to ±0.25, while Q differs between actions by tenths: a critic that ran in
        bf16 saw its TD errors and its action ranking drowned in rounding, and the agent never left its
        starting plateau. Its tanh also saturated to exactly ±1 past |x| > 3.4, freezing the policy.
        """
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @contextmanager
    def _eager(self) -> Iterator[None]:
        """Run the block's network forwards eagerly even when ``compile`` is on."""
        compiled, self.compile = self.compile, False
        try:
            yield
        finally:
            self.compile = compiled
