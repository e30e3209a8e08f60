"""Regularizers: L2-init, Wasserstein-init (anchored.py), the anti-collapse NC regularizer (nc_reg.py),
decoupled weight decay (weight_decay.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from agents.drqv2 import DrQV2Agent
from rlplastic.interventions.anchored import L2Init, WassersteinInit
from rlplastic.interventions.base import INTERVENTIONS
from rlplastic.interventions.nc_reg import NCRegularizer
from rlplastic.interventions.weight_decay import DecoupledWeightDecay
from rlplastic.monitor.collapse import nc1_differentiable, neural_collapse, quantile_bins
from rlplastic.replay import Batch
from tests.factories import ModulesAgent, checkpoint_round_trip


def bound(reg) -> tuple[str, ...]:
    """The ``module.parameter`` names an init-anchored regularizer acts on (its θ₀'s keys)."""
    return tuple(reg.state_dict()["anchor"])


def toy_modules(seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    return {"net": net, "conv": conv, "empty": nn.Identity()}


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.1, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))


def value(term: torch.Tensor | None) -> float:
    assert term is not None
    return float(term.detach())


# -- L2-init ------------------------------------------------------------------------------------


def test_l2_init_gradient_is_coef_times_drift_and_skips_layernorm():
    modules = toy_modules()
    net = modules["net"]
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    reg = L2Init(ModulesAgent(modules), targets=["net"], coef=0.3)
    assert value(reg.extra_loss("net", {})) == 0.0  # θ = θ₀
    perturb(net)
    term = reg.extra_loss("net", {})
    term.backward()
    drift = {n: p.detach() - init[n] for n, p in net.named_parameters()}
    expected = 0.15 * sum(d.square().sum() for n, d in drift.items() if not n.startswith("1."))
    torch.testing.assert_close(term, expected)
    for name, p in net.named_parameters():
        if name.startswith("1."):  # the LayerNorm's weight and bias
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, 0.3 * drift[name])
    assert bound(reg) == ("net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias")
    assert reg.extra_loss("conv", {}) is None and reg.extra_loss("critic", {}) is None
    torch.testing.assert_close(reg.last_terms["net"], term.detach())


def test_l2_init_reset_anchor_moves_theta0_to_the_current_weights():
    modules = toy_modules()
    reg = L2Init(ModulesAgent(modules), targets=["net", "conv"], coef=1.0)
    perturb(modules["net"])
    perturb(modules["conv"])
    reg.reset_anchor(["net"])
    assert value(reg.extra_loss("net", {})) == 0.0
    assert value(reg.extra_loss("conv", {})) > 0.0


# -- Wasserstein-init ---------------------------------------------------------------------------


def test_w2_init_zero_at_init_invariant_to_permutation_positive_after_perturbation():
    modules = toy_modules()
    reg = WassersteinInit(ModulesAgent(modules), targets=["net", "conv"], coef=2.0)
    assert bound(reg) == ("net.0.weight", "net.3.weight", "conv.0.weight")  # no biases, no LayerNorm
    assert value(reg.extra_loss("net", {})) == 0.0 and value(reg.extra_loss("conv", {})) == 0.0

    with torch.no_grad():  # shuffle every entry of one layer's weight (across rows and columns)
        for layer in (modules["net"][0], modules["conv"][0]):
            w = layer.weight
            w.copy_(w.flatten()[torch.randperm(w.numel())].reshape(w.shape))
    assert value(reg.extra_loss("net", {})) == 0.0 and value(reg.extra_loss("conv", {})) == 0.0

    init = {n: p.detach().clone() for n, p in modules["net"].named_parameters()}
    perturb(modules["net"])
    term = reg.extra_loss("net", {})
    expected = 2.0 * sum(
        (torch.sort(p.detach().flatten()).values - torch.sort(init[n].flatten()).values).square().sum()
        for n, p in modules["net"].named_parameters()
        if n in ("0.weight", "3.weight")
    )
    assert value(term) > 0
    torch.testing.assert_close(term, expected)
    term.backward()
    assert modules["net"][0].weight.grad.abs().sum() > 0
    assert modules["net"][0].bias.grad is None and modules["net"][1].weight.grad is None


def test_w2_init_include_bias():
    modules = toy_modules()
    reg = WassersteinInit(ModulesAgent(modules), targets=["net"], coef=1.0, include_bias=True)
    assert "net.0.bias" in bound(reg) and "net.1.bias" not in bound(reg)  # LayerNorm never


# -- NC regularizer -----------------------------------------------------------------------------


def tiny_agent(seed: int = 0, **kwargs) -> DrQV2Agent:
    torch.manual_seed(seed)
    defaults = dict(feature_dim=8, hidden_dim=16, stddev_schedule=0.2, num_expl_steps=0)
    defaults.update(kwargs)
    return DrQV2Agent((5,), (2,), obs_type="states", **defaults)


def state_batch(batch_size: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(batch_size, 5, generator=g),
        action=torch.rand(batch_size, 2, generator=g) * 2 - 1,
        reward=torch.rand(batch_size, 1, generator=g),
        discount=torch.full((batch_size, 1), 0.97),
        next_obs=torch.randn(batch_size, 5, generator=g),
    )


def penultimate(agent: DrQV2Agent, batch: Batch) -> torch.Tensor:
    h = torch.cat([agent.critic.trunk(agent.encoder(batch.obs)), batch.action], dim=-1)
    return agent.critic.Q1[:-1](h)


def test_nc_regularizer_equals_minus_coef_clipped_nc1_of_the_monitor():
    agent = tiny_agent()
    batch = state_batch()
    reg = NCRegularizer(agent, coef=0.5, num_bins=4)
    reg.install()
    assert reg.layer == "Q1.4"  # the monitor's penultimate features: the input of Q1's last Linear
    targets = torch.linspace(-1, 2, 32)[torch.randperm(32)].unsqueeze(-1)
    agent.critic(agent.encoder(batch.obs), batch.action)  # the hook captures Q1.4's input
    term = reg.extra_loss("critic", {"td_target": targets})
    with torch.no_grad():
        h = penultimate(agent, batch)
    nc1 = neural_collapse(h, targets.squeeze(-1), agent.critic.Q1[4].weight, num_bins=4)["nc1"]
    assert 0 < nc1 < 200
    assert value(term) == pytest.approx(-0.5 * nc1, rel=1e-6)
    assert float(reg.last_nc1) == pytest.approx(nc1, rel=1e-9)

    term.backward()  # flows into h's producers, not into the head, not into Q2
    assert agent.critic.Q1[2].weight.grad.abs().sum() > 0
    assert agent.critic.trunk[0].weight.grad.abs().sum() > 0
    assert agent.critic.Q1[4].weight.grad is None
    assert all(p.grad is None for p in agent.critic.Q2.parameters())


def test_nc_regularizer_clip_caps_value_and_gradient():
    agent = tiny_agent()
    batch = state_batch()
    reg = NCRegularizer(agent, coef=0.5, clip=1e-3, num_bins=4)
    reg.install()
    agent.critic(agent.encoder(batch.obs), batch.action)
    term = reg.extra_loss("critic", {"td_target": batch.reward})
    assert value(term) == pytest.approx(-0.5e-3)
    term.backward()
    assert agent.critic.Q1[2].weight.grad.abs().sum() == 0


def test_nc1_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(23, 7, generator=g, dtype=torch.float64, requires_grad=True)  # 4 does not divide 23
    labels, _ = quantile_bins(torch.randn(23, generator=g), 4)
    assert torch.autograd.gradcheck(lambda x: nc1_differentiable(x, labels, 4), (h,))


def test_nc_hook_keeps_the_latest_grad_forward_and_refuses_stale_features():
    agent = tiny_agent()
    batch = state_batch()
    reg = NCRegularizer(agent, num_bins=4)
    reg.install()
    with pytest.raises(RuntimeError, match="no critic forward"):
        reg.extra_loss("critic", {"td_target": batch.reward})
    agent.critic(agent.encoder(batch.obs), batch.action)
    with torch.no_grad():  # probes and target computations do not overwrite the capture
        agent.critic(agent.encoder(batch.obs[:8]), batch.action[:8])
    assert reg.extra_loss("critic", {"td_target": batch.reward}) is not None
    with pytest.raises(RuntimeError, match="no critic forward"):  # used once, then dropped
        reg.extra_loss("critic", {"td_target": batch.reward})
    agent.critic(agent.encoder(batch.obs[:8]), batch.action[:8])
    with pytest.raises(RuntimeError, match="captured 8 feature rows for 32 TD targets"):
        reg.extra_loss("critic", {"td_target": batch.reward})
    assert reg.extra_loss("actor", {}) is None


# -- decoupled weight decay ---------------------------------------------------------------------


def test_decoupled_weight_decay_on_adam_equals_adamw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    twin = copy.deepcopy(model)
    extra = nn.Parameter(torch.ones(2))  # no gradient: AdamW leaves it alone, so must we
    adam = torch.optim.Adam([*model.parameters(), extra], lr=0.05)
    adamw = torch.optim.AdamW([*twin.parameters(), nn.Parameter(torch.ones(2))], lr=0.05, weight_decay=0.3)
    DecoupledWeightDecay(ModulesAgent(optimizers={"critic": adam}), targets=["critic"], coef=0.3).install()
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(5):
        for net, opt in ((model, adam), (twin, adamw)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert torch.equal(extra, torch.ones(2))


# -- state, validation, factory -----------------------------------------------------------------


@pytest.mark.parametrize("cls", [L2Init, WassersteinInit])
def test_anchor_state_round_trip(cls):
    modules = toy_modules(seed=0)
    reg = cls(ModulesAgent(modules), targets=["net", "conv"], coef=1.0)
    perturb(modules["net"])
    before = value(reg.extra_loss("net", {}))
    other_modules = copy.deepcopy(modules)
    other = cls(ModulesAgent(other_modules), targets=["net", "conv"], coef=1.0)  # anchored at the perturbed weights
    assert value(other.extra_loss("net", {})) == 0.0
    other.load_state_dict(checkpoint_round_trip(reg.state_dict()))
    assert value(other.extra_loss("net", {})) == pytest.approx(before)
    with pytest.raises(ValueError, match="missing .*'conv.0.weight'"):
        cls(ModulesAgent(modules), targets=["net"], coef=1.0).load_state_dict(reg.state_dict())
    wrong = "w2_init" if cls is L2Init else "l2_init"
    with pytest.raises(ValueError, match=f"holds a '{wrong}' regularizer"):
        reg.load_state_dict({"name": wrong, "anchor": {}})


def test_stateless_round_trips():
    agent = tiny_agent()
    nc = NCRegularizer(agent)
    nc.load_state_dict(checkpoint_round_trip(nc.state_dict()))
    wd = DecoupledWeightDecay(agent, targets=["critic"], coef=1e-4)
    wd.load_state_dict(checkpoint_round_trip(wd.state_dict()))
    with pytest.raises(ValueError, match="holds a 'nc_reg' regularizer, this one is 'weight_decay'"):
        wd.load_state_dict(nc.state_dict())


def test_validation_errors():
    modules = ModulesAgent(toy_modules())
    with pytest.raises(ValueError, match=r"l2_init.coef=-1 must be a finite number >= 0"):
        L2Init(modules, targets=["net"], coef=-1)
    with pytest.raises(
        ValueError, match=r"unknown module name\(s\) \['critc'\]: allowed are \['net', 'conv', 'empty'\]"
    ):
        WassersteinInit(modules, targets=["critc"], coef=1.0)
    with pytest.raises(ValueError, match="non-empty list"):
        L2Init(modules, targets=[], coef=1.0)
    with pytest.raises(ValueError, match="have no parameters"):
        L2Init(modules, targets=["empty"], coef=1.0)
    agent = tiny_agent()
    with pytest.raises(ValueError, match=r"layer='Q1.3' is not a Linear layer of the critic: allowed are \['trunk.0'"):
        NCRegularizer(agent, layer="Q1.3")
    with pytest.raises(ValueError, match="num_bins=1 must be an int >= 2"):
        NCRegularizer(agent, num_bins=1)
    with pytest.raises(ValueError, match="the agent has no 'critic'"):
        NCRegularizer(modules)
    with pytest.raises(
        ValueError, match=r"unknown optimizer name\(s\) \['decoder'\]: allowed are \['actor', 'critic'\]"
    ):
        DecoupledWeightDecay(agent, targets=["decoder"], coef=1e-4)
    with pytest.raises(ValueError, match="unknown intervention 'l1'"):
        INTERVENTIONS.build("l1", {}, agent=modules, monitor=None)
    refused = r"unknown intervention.l2_init key\(s\) \['clip'\]: allowed are \['targets', 'coef'\]"
    with pytest.raises(ValueError, match=refused):
        INTERVENTIONS.build("l2_init", {"targets": ["net"], "clip": 1.0}, agent=modules, monitor=None)
    with pytest.raises(ValueError, match=r"intervention.l2_init needs key\(s\) \['targets'\]"):
        INTERVENTIONS.build("l2_init", {}, agent=modules, monitor=None)


def test_the_registry_builds_each():
    agent = tiny_agent()

    def build(name, **settings):
        return INTERVENTIONS.build(name, settings, agent=agent, monitor=None)

    assert isinstance(build("l2_init", targets=("actor", "critic")), L2Init)
    assert isinstance(build("w2_init", targets=["critic"]), WassersteinInit)
    assert isinstance(build("nc_reg", num_bins=4, layer="Q2.4"), NCRegularizer)
    assert isinstance(build("weight_decay", targets=["encoder", "critic"]), DecoupledWeightDecay)


# -- end to end in the agent --------------------------------------------------------------------


def run_update(agent: DrQV2Agent, batch: Batch, state: dict) -> dict[str, float]:
    agent.load_state_dict(copy.deepcopy(state))
    torch.manual_seed(123)  # the same policy-noise draws in every run
    return {k: float(v) for k, v in agent.update(batch, step=0).items()}


@pytest.mark.parametrize("kind", ["l2_init", "w2_init", "nc_reg"])
def test_agent_loss_moves_by_exactly_the_regularizer_term(kind):
    agent = tiny_agent()
    batch = state_batch()
    if kind == "nc_reg":
        reg = NCRegularizer(agent, coef=0.1, num_bins=4)
    else:  # the states-mode encoder has no parameters: skipped, not an error
        reg = INTERVENTIONS.build(kind, {"targets": ["encoder", "critic"], "coef": 0.5}, agent=agent, monitor=None)
    perturb(agent.critic, scale=0.05)  # away from θ₀, so the init-anchored terms are non-zero
    state = copy.deepcopy(agent.state_dict())
    with torch.no_grad():  # what the critic-loss forward will see: its features and the TD target
        h = penultimate(agent, batch)
        torch.manual_seed(123)
        target = agent.td_target(batch.next_obs, batch.reward, batch.discount, 0)

    plain = run_update(agent, batch, state)
    reg.install()
    regularized = run_update(agent, batch, state)
    term = float(reg.last_terms["critic"])
    assert term != 0.0
    assert regularized["critic_loss"] - plain["critic_loss"] == pytest.approx(term, rel=1e-4, abs=1e-6)
    if kind == "nc_reg":  # the capture was the critic-loss forward, not the actor loss's later one
        nc1 = neural_collapse(h, target.squeeze(-1), agent.critic.Q1[4].weight, num_bins=4)["nc1"]
        assert term == pytest.approx(-0.1 * min(nc1, 200.0), rel=1e-5)


def test_agent_actor_term():
    agent = tiny_agent()
    batch = state_batch()
    reg = L2Init(agent, targets=["actor"], coef=0.5)
    perturb(agent.actor, scale=0.05)
    state = copy.deepcopy(agent.state_dict())
    plain = run_update(agent, batch, state)
    reg.install()
    regularized = run_update(agent, batch, state)
    assert regularized["critic_loss"] == plain["critic_loss"]  # critic untouched
    assert regularized["actor_loss"] - plain["actor_loss"] == pytest.approx(float(reg.last_terms["actor"]), rel=1e-4)


def test_agent_weight_decay_equals_an_adamw_critic():
    batch = state_batch()
    decayed, adamw, plain = tiny_agent(lr=1e-2), tiny_agent(lr=1e-2), tiny_agent(lr=1e-2)
    DecoupledWeightDecay(decayed, targets=["critic"], coef=0.5).install()
    adamw._optimizers["critic"] = torch.optim.AdamW(adamw.critic.parameters(), lr=1e-2, weight_decay=0.5)
    for agent in (decayed, adamw, plain):
        torch.manual_seed(123)
        agent.update(batch, step=0)
    for a, b in zip(decayed.critic.parameters(), adamw.critic.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # the decay is visible (on the weights; the zero-initialised biases shrink 0 to 0 on a first step)
    assert not torch.equal(decayed.critic.Q1[0].weight, plain.critic.Q1[0].weight)
    for a, b in zip(decayed.actor.parameters(), adamw.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)  # only the critic's optimizer decays


def test_frozen_parameters_are_not_bound():
    modules = toy_modules()
    modules["net"][3].requires_grad_(False)
    assert bound(L2Init(ModulesAgent(modules), targets=["net"], coef=1.0)) == ("net.0.weight", "net.0.bias")
    assert bound(WassersteinInit(ModulesAgent(modules), targets=["net"], coef=1.0)) == ("net.0.weight",)
