"""Your own agent, measured by the plasticity monitor and driven by Adaptive RR — docs/library.md.

A tiny DDPG-style actor-critic (plain torch, ReLU MLPs) learns a toy continuous-control problem from
synthetic transitions: the state is a random vector, the best action is ``tanh(M·state)``, the reward is
``-‖action − tanh(M·state)‖²``, and episodes last 50 steps. No environment package is needed.

The agent meets the library at four points (rlplastic.protocols.MonitoredAgent):

* ``self.hooks = AgentHooks()``, and each forward that makes a module's loss inside
  ``self.hooks.loss_phase(name)`` — the monitor counts FAU there;
* ``self.hooks.extra_loss(name, context)`` added to that loss, ``self.hooks.step(name, opt, loss_again)``
  instead of ``opt.step()`` — regularizers and SAM plug in there;
* ``named_modules_for_monitor()`` and ``optimizers()``, keyed by module name (the ``<module>`` of tags).

Run it: ``python scripts/own_agent.py`` (a few seconds on a CPU). It prints the critic's and the actor's
FAU at each episode end and the replay ratio, which switches from 1 to 2 once the critic's FAU plateaus.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: this repository's rlplastic
from rlplastic.agent_hooks import AgentHooks  # noqa: E402
from rlplastic.monitor import make_monitor  # noqa: E402
from rlplastic.replay import ReplayBuffer  # noqa: E402
from rlplastic.rr import make_rr_controller  # noqa: E402

STATE, ACTION, EPISODE = 4, 2, 50


def mlp(inp: int, out: int, hidden: int = 64) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear: nn.ReLU modules (not F.relu), so the monitor finds and counts them."""
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)
    )


class TinyDDPG:
    def __init__(self, lr: float = 1e-3, gamma: float = 0.9) -> None:
        self.hooks = AgentHooks()
        self.actor, self.critic = mlp(STATE, ACTION), mlp(STATE + ACTION, 1)
        self.critic_target = mlp(STATE + ACTION, 1).requires_grad_(False)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.opts = {name: torch.optim.Adam(getattr(self, name).parameters(), lr=lr) for name in ("actor", "critic")}
        self.gamma = gamma

    def named_modules_for_monitor(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self.opts)

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool = False) -> np.ndarray:
        action = torch.tanh(self.actor(torch.as_tensor(obs).unsqueeze(0)))[0]
        return (action if eval_mode else (action + 0.3 * torch.randn_like(action)).clamp(-1, 1)).numpy()

    def update(self, batch, step: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            next_action = torch.tanh(self.actor(batch.next_obs))
            target = batch.reward + self.gamma * self.critic_target(torch.cat([batch.next_obs, next_action], 1))
        sa = torch.cat([batch.obs, batch.action], 1)
        with self.hooks.loss_phase("critic"):  # the forward that makes the critic's loss: FAU is counted here
            q = self.critic(sa)
        critic_loss = F.mse_loss(q, target) + self.hooks.extra_loss("critic", {"td_target": target})
        self.opts["critic"].zero_grad()
        critic_loss.backward()
        self.hooks.step("critic", self.opts["critic"], lambda: F.mse_loss(self.critic(sa), target))

        with self.hooks.loss_phase("actor"):
            action = torch.tanh(self.actor(batch.obs))
        actor_loss = -self.critic(torch.cat([batch.obs, action], 1)).mean() + self.hooks.extra_loss("actor", {})
        self.opts["actor"].zero_grad()
        actor_loss.backward()
        self.hooks.step("actor", self.opts["actor"])
        with torch.no_grad():  # Polyak-averaged target critic
            for p, p_target in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                p_target.lerp_(p, 0.05)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach()}


def main(episodes: int = 12, seed: int = 0) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    best = rng.normal(size=(ACTION, STATE)).astype(np.float32)  # the toy problem: best action tanh(best @ s)
    agent = TinyDDPG()
    replay = ReplayBuffer((STATE,), (ACTION,), capacity=10_000, frame_stack=1, nstep=1, frame_dtype=np.float32)
    monitor = make_monitor(modules=["actor", "critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    rr = make_rr_controller("adaptive", low=1, high=2, check_every_frames=2 * EPISODE, threshold=0.01)
    step = 0
    for episode in range(episodes):
        obs = rng.normal(size=STATE).astype(np.float32)
        replay.add_first(obs)
        for t in range(EPISODE):
            action = agent.act(obs, step)
            reward = -float(np.sum((action - np.tanh(best @ obs)) ** 2))
            obs = rng.normal(size=STATE).astype(np.float32)
            replay.add(action, reward, 1.0, obs, last=t == EPISODE - 1)
            step += 1
            if episode == 0:
                continue  # a seed episode fills the replay first
            for _ in range(rr.updates_due(step)):
                metrics = agent.update(replay.sample(64), step)
                monitor.after_update(agent, replay, step)
        monitor.end_episode()  # closes the episode's FAU account, Adaptive RR's signal
        signals = monitor.signals()
        if episode == 0:
            continue
        events = rr.observe(signals, frame=step)
        print(f"episode {episode:2d}  frame {step:4d}  critic FAU {signals['critic/episode_fau']:.3f}  "
              f"actor FAU {signals['actor/episode_fau']:.3f}  critic loss {float(metrics['critic_loss']):.3f}  "
              f"RR {rr.value:g}" + ("  <- RR switched" if events else ""))  # fmt: skip
    print(f"done: {rr.total_updates} updates, final RR {rr.value:g}")


if __name__ == "__main__":
    main()
