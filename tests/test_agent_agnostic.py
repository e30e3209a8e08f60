"""The library is agent-agnostic: a small state-based actor-critic that is not DrQ-v2 (no encoder, no trunk,
its own module layout) drives the monitor, every RR controller and every intervention through
rlplastic.protocols only, and each tool does what it promises on it (docs/library.md).
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlplastic.agent_hooks import AgentHooks
from rlplastic.interventions.intervention_set import InterventionSet, make_interventions
from rlplastic.monitor import make_monitor
from rlplastic.monitor.collapse import neural_collapse
from rlplastic.protocols import (
    Agent,
    CriticProbe,
    InjectableAgent,
    MonitoredAgent,
    ProbedAgent,
    RecyclableAgent,
    ResettableAgent,
    require,
)
from rlplastic.replay import Batch, ReplayBuffer
from rlplastic.rr import make_rr_controller

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT, HIDDEN = 5, 2, 16
AT_100 = {"kind": "schedule", "at_frames": [100]}


def _head(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out)
    )  # fmt: skip


class TwinCritic(nn.Module):
    """Two Q heads on ``[obs, action]``, no trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.Q1, self.Q2 = _head(OBS + ACT, 1), _head(OBS + ACT, 1)

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.Q1(x), self.Q2(x)


def _twin_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


class CoreAC:
    """A TD3-like agent on state vectors with every protocol member except ReDo's ``layer_links``
    and injection's ``injection_heads``."""

    def __init__(self, lr: float = 1e-3, gamma: float = 0.9, pass_loss_again: bool = True) -> None:
        self.hooks = AgentHooks()
        self.gamma, self.pass_loss_again, self.mark_phases = gamma, pass_loss_again, True
        self.actor, self.critic = self.fresh_module("actor"), self.fresh_module("critic")
        self.critic_target = copy.deepcopy(self.critic)
        self._opts = {n: torch.optim.Adam(getattr(self, n).parameters(), lr=lr) for n in ("actor", "critic")}

    def fresh_module(self, name: str) -> nn.Module:
        return _head(OBS, ACT) if name == "actor" else TwinCritic()

    def target_networks(self) -> dict[str, nn.Module]:
        return {"critic": self.critic_target}

    def named_modules_for_monitor(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._opts)

    def _phase(self, name: str) -> Any:
        return self.hooks.loss_phase(name) if self.mark_phases else nullcontext()

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        return torch.tanh(self.actor(torch.as_tensor(obs).unsqueeze(0)))[0].numpy()

    @torch.no_grad()
    def td_target(self, batch: Batch) -> Tensor:
        t1, t2 = self.critic_target(batch.next_obs, torch.tanh(self.actor(batch.next_obs)))
        return batch.reward + self.gamma * batch.discount * torch.min(t1, t2)

    def update(self, batch: Batch, step: int) -> dict[str, Tensor]:
        target = self.td_target(batch)
        context = {"td_target": target}
        with self._phase("critic"):
            q1, q2 = self.critic(batch.obs, batch.action)
        loss = _twin_loss(q1, q2, target) + self.hooks.extra_loss("critic", context)

        def loss_again() -> Tensor:
            return _twin_loss(*self.critic(batch.obs, batch.action), target) + self.hooks.extra_loss("critic", context)

        self._opts["critic"].zero_grad(set_to_none=True)
        loss.backward()
        self.hooks.step("critic", self._opts["critic"], loss_again if self.pass_loss_again else None)
        with self._phase("actor"):
            action = torch.tanh(self.actor(batch.obs))
        actor_loss = -self.critic(batch.obs, action)[0].mean() + self.hooks.extra_loss("actor", {})
        self._opts["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        self.hooks.step("actor", self._opts["actor"])
        with torch.no_grad():
            for p, t in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                t.lerp_(p, 0.05)
        return {"critic_loss": loss.detach(), "actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def forward_for_statistics(self, batch: Batch) -> None:
        self.actor(batch.obs)
        self.critic(batch.obs, batch.action)

    def critic_probe(self, batch: Batch, step: int) -> CriticProbe:
        with torch.no_grad():
            self.actor(batch.obs)  # the actor's first forward is on batch.obs (dormant units)
            target = self.td_target(batch)
            penultimate = self.critic.Q1[:-1](torch.cat([batch.obs, batch.action], dim=-1))
            head = self.critic.Q1[-1]
            q1 = head(penultimate)
        return CriticProbe(
            loss_fn=lambda: _twin_loss(*self.critic(batch.obs, batch.action), target),
            params=[p for p in self.critic.parameters() if p.requires_grad],
            features={"critic_penultimate": penultimate},
            td_target=target.squeeze(-1), q=q1.squeeze(-1),
            head_weight=head.weight.detach().squeeze(0), head_bias=head.bias.detach().squeeze(0),
            critic_inputs=(batch.obs, batch.action),
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        state = {n: getattr(self, n).state_dict() for n in ("actor", "critic", "critic_target")}
        return {**state, "optimizers": {n: o.state_dict() for n, o in self._opts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n in ("actor", "critic", "critic_target"):
            getattr(self, n).load_state_dict(state[n])
        for n, o in self._opts.items():
            o.load_state_dict(state["optimizers"][n])


class StateAC(CoreAC):
    """The whole contract."""

    def layer_links(self) -> dict[str, tuple[str, ...]]:
        return {}  # every ReLU is followed by a Linear in its own Sequential

    def injection_heads(self) -> dict[str, tuple[str, ...]]:
        return {"critic": ("Q1", "Q2")}


def make_agent(seed: int = 0, **kwargs: Any) -> StateAC:
    torch.manual_seed(seed)
    return StateAC(**kwargs)


def make_replay(episodes: int = 4, length: int = 20, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer((OBS,), (ACT,), capacity=1000, frame_stack=1, nstep=1, frame_dtype=np.float32, seed=seed)
    for _ in range(episodes):
        replay.add_first(rng.normal(size=OBS).astype(np.float32))
        for t in range(length):
            action = rng.uniform(-1, 1, size=ACT).astype(np.float32)
            replay.add(action, float(rng.normal()), 1.0, rng.normal(size=OBS).astype(np.float32), last=t == length - 1)
    return replay


def params(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(module: nn.Module, expected: dict[str, Tensor]) -> None:
    got = module.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


# -- the contract ---------------------------------------------------------------------------------


def test_the_fake_agent_implements_every_protocol_and_require_names_a_missing_method():
    agent = make_agent()
    for protocol in (Agent, MonitoredAgent, ProbedAgent, ResettableAgent, RecyclableAgent, InjectableAgent):
        assert isinstance(agent, protocol)
        require(agent, protocol, "a test")
    core = CoreAC()
    with pytest.raises(ValueError, match=r"intervention\.redo needs .*RecyclableAgent.*CoreAC has no layer_links\(\)"):
        require(core, RecyclableAgent, "intervention.redo")
    with pytest.raises(ValueError, match=r"injection_heads\(\)"):
        require(core, InjectableAgent, "intervention.inject")


def test_intervention_set_refuses_an_agent_without_layer_links_at_build():
    with pytest.raises(ValueError, match=r"layer_links"):
        InterventionSet(CoreAC(), {"redo": {"modules": ["critic"], "period": 1, "batch_size": 8}})


# -- the monitor ----------------------------------------------------------------------------------


def hand_counts(agent: StateAC, batch: Batch) -> dict[str, list[tuple[int, int]]]:
    """(#(pre-activation > 0), #units) of every ReLU in the loss forwards, from the weights, no hooks."""

    def mlp_counts(seq: nn.Sequential, x: Tensor) -> list[tuple[int, int]]:
        out = []
        for i in (0, 2):
            x = F.linear(x, seq[i].weight, seq[i].bias)
            out.append((int((x > 0).sum()), x.numel()))
            x = x.clamp_min(0)
        return out

    with torch.no_grad():
        x = torch.cat([batch.obs, batch.action], dim=-1)
        return {"critic": mlp_counts(agent.critic.Q1, x) + mlp_counts(agent.critic.Q2, x),
                "actor": mlp_counts(agent.actor, batch.obs)}  # fmt: skip


def test_fau_equals_a_hand_count_of_the_loss_forwards():
    agent, replay = make_agent(), make_replay()
    monitor = make_monitor(modules=["actor", "critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    totals = {"critic": np.zeros((4, 2), dtype=np.int64), "actor": np.zeros((2, 2), dtype=np.int64)}
    for step in range(3):
        batch = replay.sample(32)
        for name, counts in hand_counts(agent, batch).items():  # the parameters the update's forwards use
            totals[name] += np.array(counts)
        agent.update(batch, step)
        monitor.after_update(agent, replay, step)
    values = {k: float(v) for k, v in monitor.log_values().items()}
    for name, layers in (("critic", ("Q1.1", "Q1.3", "Q2.1", "Q2.3")), ("actor", ("1", "3"))):
        assert values[f"plasticity/{name}/fau"] == totals[name][:, 0].sum() / totals[name][:, 1].sum()
        for layer, (pos, total) in zip(layers, totals[name], strict=True):
            assert values[f"plasticity/{name}/{layer}/fau"] == pos / total
    assert 0 < values["plasticity/critic/fau"] <= 1


def test_probe_metrics_are_finite_on_the_fake_agent():
    agent, replay = make_agent(), make_replay()
    monitor = make_monitor(modules=["actor", "critic"], metrics=["all"], probe_every_updates=0, probe_batch_size=32,
                           hessian_iters=4, hessian_directions_k=2, hutchinson_probes=2, nc_bins=4, fit_steps=3,
                           figures=False)  # fmt: skip
    monitor.attach(agent)
    agent.update(replay.sample(32), 0)
    monitor.after_update(agent, replay, 0)  # probe_at_start
    (record,) = monitor.pop_probe_records()
    assert set(record.scalars) <= set(monitor.expected_tags())
    for tag in ("critic/dormant", "actor/1/dormant", "critic/srank", "critic/hessian_max", "critic/nc1",
                "critic/fit_loss", "critic/last_layer_lambda_max", "actor/drift"):  # fmt: skip
        assert f"plasticity/{tag}" in record.scalars, tag
    bad = {tag: value for tag, value in record.scalars.items() if not math.isfinite(value)}
    assert not bad


def test_expected_tags_list_only_the_features_the_agents_probe_provides():
    agent, replay = make_agent(), make_replay()
    monitor = make_monitor(modules=["actor", "critic"], metrics=["srank"], probe_every_updates=0, figures=False,
                           probe_batch_size=16)  # fmt: skip
    monitor.attach(agent)
    agent.update(replay.sample(16), 0)
    monitor.after_update(agent, replay, 0)
    (record,) = monitor.pop_probe_records()
    assert set(monitor.expected_tags()) == set(record.scalars)


def test_an_update_without_a_loss_phase_makes_the_monitor_warn():
    agent, replay = make_agent(), make_replay()
    monitor = make_monitor(modules=["critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    agent.mark_phases = False
    agent.update(replay.sample(8), 0)
    with pytest.warns(RuntimeWarning, match=r"StateAC\.update opened no loss phase"):
        monitor.after_update(agent, replay, 0)


# -- RR controllers -------------------------------------------------------------------------------

LENGTH = 10  # agent steps (= frames here) per episode


def drive(agent: StateAC, rr: Any, episodes: int, fixed_batch: bool) -> list[float]:
    """The trainer's order: updates_due → update → after_update; at episode ends end_episode → observe."""
    replay = make_replay()
    monitor = make_monitor(modules=["actor", "critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    batch, step, values = replay.sample(16), 0, []
    for _ in range(episodes):
        for _ in range(LENGTH):
            step += 1
            for _ in range(rr.updates_due(step)):
                agent.update(batch if fixed_batch else replay.sample(16), step)
                monitor.after_update(agent, replay, step)
        monitor.end_episode()
        signals = monitor.signals()
        assert set(rr.signals_needed) <= set(signals)
        rr.observe(signals, step)
        values.append(rr.value)
    assert monitor.updates == rr.total_updates
    return values


def frozen_agent() -> StateAC:
    """lr 0 on one fixed batch: every update's FAU is the same, so the signal has plateaued exactly."""
    return make_agent(lr=0.0)


def test_static_rr_issues_exact_fractional_updates():
    rr = make_rr_controller("static", ratio=0.5)
    assert drive(make_agent(), rr, episodes=3, fixed_batch=False) == [0.5] * 3
    assert rr.total_updates == 15


def test_adaptive_rr_switches_when_the_critic_fau_plateaus_and_not_while_it_moves():
    kwargs = {"low": 0.5, "high": 2, "check_every_frames": 2 * LENGTH, "threshold": 1e-3}
    assert drive(frozen_agent(), make_rr_controller("adaptive", **kwargs), 3, fixed_batch=True) == [0.5, 2, 2]
    moving = make_rr_controller("adaptive", **{**kwargs, "threshold": 1e-9})
    assert drive(make_agent(lr=1e-2), moving, 3, fixed_batch=False) == [0.5] * 3


def test_adaptive_ref_and_ladder_move_on_a_plateau():
    ref = make_rr_controller("adaptive_ref", low=0.5, high=2, check_every_episodes=2)
    assert drive(frozen_agent(), ref, 3, fixed_batch=True) == [0.5, 2, 2]
    ladder = make_rr_controller("ladder", ratios=[0.5, 1, 2], check_every_frames=LENGTH, min_dwell_frames=0)
    assert drive(frozen_agent(), ladder, 4, fixed_batch=True) == [0.5, 1, 2, 2]


# -- interventions --------------------------------------------------------------------------------


def trained(**kwargs: Any) -> tuple[StateAC, ReplayBuffer]:
    agent, replay = make_agent(**kwargs), make_replay()
    for step in range(3):
        agent.update(replay.sample(16), step)
    return agent, replay


@pytest.mark.parametrize("name", ["reset", "heads_reset"])
def test_reset_makes_modules_a_fresh_draw_with_the_same_seed(name):
    agent, replay = trained()
    modules = ["actor", "critic"] if name == "reset" else ["critic"]
    actor_before = params(agent.actor)
    iset = InterventionSet(agent, {name: {"modules": modules, "trigger": AT_100}})
    torch.manual_seed(7)
    fired = iset.at_episode_end({}, 100, replay, "cpu")
    assert fired[name]["params"] > 0
    torch.manual_seed(7)
    fresh = {m: params(agent.fresh_module(m)) for m in modules}
    for m in modules:
        assert_same(getattr(agent, m), fresh[m])
        assert all(not agent.optimizers()[m].state.get(p) for p in getattr(agent, m).parameters())
    assert_same(agent.critic_target, fresh["critic"])
    if name == "heads_reset":
        assert_same(agent.actor, actor_before)


def test_shrink_perturb_mixes_with_a_fresh_draw():
    agent, replay = trained()
    before, target_before = params(agent.critic), params(agent.critic_target)
    iset = InterventionSet(agent, {"shrink_perturb": {"alpha": 0.8, "beta": 0.2, "modules": ["critic"],
                                                      "trigger": AT_100}})  # fmt: skip
    torch.manual_seed(3)
    iset.at_episode_end({}, 100, replay, "cpu")
    torch.manual_seed(3)
    fresh = params(agent.fresh_module("critic"))
    for key, value in agent.critic.state_dict().items():
        torch.testing.assert_close(value, 0.8 * before[key] + 0.2 * fresh[key])
        torch.testing.assert_close(agent.critic_target.state_dict()[key], 0.8 * target_before[key] + 0.2 * fresh[key])


def test_redo_recycles_dead_units():
    agent, replay = trained()
    with torch.no_grad():
        agent.critic.Q1[0].bias[:4] = -1e3  # four units of Q1.1 never fire
    iset = InterventionSet(agent, {"redo": {"tau": 0.1, "modules": ["critic"], "period": 1, "batch_size": 32}})
    torch.manual_seed(5)
    report = iset.after_update(replay, "cpu")["redo"]
    torch.manual_seed(5)
    fresh = agent.fresh_module("critic")
    assert report["critic/Q1.1"] >= 4
    q1 = agent.critic.Q1
    torch.testing.assert_close(q1[0].weight[:4], fresh.Q1[0].weight[:4], rtol=0, atol=0)
    assert torch.all(q1[0].bias[:4] == 0) and torch.all(q1[2].weight[:, :4] == 0)


def test_injection_keeps_the_output_and_the_monitor_follows_the_heads():
    agent, replay = trained()
    monitor = make_monitor(modules=["critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    batch = replay.sample(16)
    with torch.no_grad():
        before = agent.critic(batch.obs, batch.action)
    iset = InterventionSet(agent, {"inject": {"modules": ["critic"], "trigger": AT_100}}, monitor=monitor)
    iset.at_episode_end({}, 100, replay, "cpu")
    assert type(agent.critic.Q1).__name__ == "InjectedHead"
    with torch.no_grad():
        for q, q_before in zip(agent.critic(batch.obs, batch.action), before, strict=True):
            torch.testing.assert_close(q, q_before, rtol=0, atol=0)
    base = params(agent.critic.Q1.base)
    agent.update(batch, 3)
    monitor.after_update(agent, replay, 3)
    assert_same(agent.critic.Q1.base, base)  # the old head is frozen
    assert "plasticity/critic/Q1.base.1/fau" in monitor.log_values()


def test_init_anchored_regularizers_add_their_terms():
    agent, replay = trained()
    anchor = params(agent.critic)
    iset = make_interventions(agent, {"l2_init": {"targets": ["critic"], "coef": 0.1},
                                      "w2_init": {"targets": ["critic"], "coef": 0.3}}, seed=0)  # fmt: skip
    agent.update(replay.sample(16), 3)  # the critic moves away from its anchor
    now = agent.critic.state_dict()
    l2 = 0.05 * sum(float((now[k] - anchor[k]).square().sum()) for k in now)
    w2 = 0.3 * sum(float((now[k].flatten().sort().values - anchor[k].flatten().sort().values).square().sum())
                   for k in now if k.endswith("weight"))  # fmt: skip
    assert l2 > 0
    torch.testing.assert_close(float(agent.hooks.extra_loss("critic", {}).detach()), l2 + w2, rtol=1e-5, atol=0)
    assert agent.hooks.extra_loss("actor", {}) == 0.0
    assert set(iset.train_metrics()) == {"reg/l2_init/critic", "reg/w2_init/critic"}


def test_nc_reg_is_minus_coef_times_the_monitors_nc1():
    agent, replay = trained()
    make_interventions(agent, {"nc_reg": {"coef": 0.5, "num_bins": 4, "layer": "Q1.4"}})
    batch = replay.sample(32)
    target = agent.td_target(batch)
    agent.critic(batch.obs, batch.action)  # the grad-enabled critic forward the term reads
    term = agent.hooks.extra_loss("critic", {"td_target": target})
    with torch.no_grad():
        features = agent.critic.Q1[:-1](torch.cat([batch.obs, batch.action], dim=-1))
    head = agent.critic.Q1[-1]
    nc1 = neural_collapse(features, target.squeeze(-1), head.weight.detach().squeeze(0), head.bias.detach(), 4)["nc1"]
    torch.testing.assert_close(float(term.detach()), -0.5 * min(nc1, 200.0), rtol=1e-4, atol=0)
    agent.update(batch, 3)  # the agent hands it the TD target itself


def test_weight_decay_shrinks_the_critic_before_its_adam_step():
    batch = make_replay().sample(16)
    plain, decayed = make_agent(lr=1e-2), make_agent(lr=1e-2)
    before = params(decayed.critic)
    make_interventions(decayed, {"weight_decay": {"targets": ["critic"], "coef": 0.5}})
    plain.update(batch, 0)
    decayed.update(batch, 0)
    for key, value in decayed.critic.state_dict().items():
        torch.testing.assert_close(value, plain.critic.state_dict()[key] - 1e-2 * 0.5 * before[key])


def test_sam_steps_with_the_gradient_at_the_ascended_point():
    batch = make_replay().sample(16)
    plain, sharp = make_agent(lr=1e-2), make_agent(lr=1e-2)
    make_interventions(sharp, {"sam": {"rho": 0.05}})
    # the same SAM step by hand: g at θ, ε = ρ g/‖g‖, Adam's first step with ∇L(θ + ε)
    critic, target = copy.deepcopy(sharp.critic), sharp.td_target(batch)
    theta = list(critic.parameters())
    grads = torch.autograd.grad(_twin_loss(*critic(batch.obs, batch.action), target), theta)
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(theta, grads, strict=True):
            p.add_(0.05 * g / norm)
    ascended = torch.autograd.grad(_twin_loss(*critic(batch.obs, batch.action), target), theta)
    with torch.no_grad():
        for p, g in zip(theta, grads, strict=True):
            p.sub_(0.05 * g / norm)
    adam = torch.optim.Adam(theta, lr=1e-2)
    for p, g in zip(theta, ascended, strict=True):
        p.grad = g
    adam.step()
    plain.update(batch, 0)
    sharp.update(batch, 0)
    for (key, value), expected in zip(sharp.critic.state_dict().items(), theta, strict=True):
        torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-6, msg=key)
    assert any(not torch.equal(v, plain.critic.state_dict()[k]) for k, v in sharp.critic.state_dict().items())


def test_sam_refuses_an_agent_that_passes_no_loss_again():
    agent = make_agent(pass_loss_again=False)
    make_interventions(agent, {"sam": {"rho": 0.05}})
    with pytest.raises(ValueError, match="loss_again"):
        agent.update(make_replay().sample(8), 0)


# -- the example ----------------------------------------------------------------------------------


def test_the_own_agent_example_runs_and_prints_fau_and_rr():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "own_agent.py")], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    faus = [float(f) for f in re.findall(r"critic FAU (\S+)", result.stdout)]
    ratios = [float(r) for r in re.findall(r"  RR ([\d.]+)", result.stdout)]
    assert faus and all(0 < f <= 1 for f in faus), result.stdout
    assert ratios and set(ratios) <= {1.0, 2.0}, result.stdout
    assert "final RR" in result.stdout.splitlines()[-1]



class UnprobedAC(StateAC):
    """The full contract but no ``critic_probe``: FAU works, probes cannot."""

    def __getattribute__(self, name: str) -> Any:
        if name == "critic_probe":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_the_monitor_refuses_at_attach_an_agent_without_the_probe_protocol():
    torch.manual_seed(0)
    refusal = r"probe metrics \(\['srank'\]\) needs an agent with ProbedAgent.*UnprobedAC has no critic_probe\(\)"
    with pytest.raises(ValueError, match=refusal):
        make_monitor(modules=["critic"], metrics=["srank"]).attach(UnprobedAC())
    # FAU alone needs no probe
    make_monitor(modules=["critic"], metrics=["fau"], probe_every_updates=0, probe_at_start=False).attach(UnprobedAC())
