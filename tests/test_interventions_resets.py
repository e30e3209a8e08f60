"""Resets (full, heads) and shrink-and-perturb: what is re-drawn, what is kept, optimizer state, targets."""

from __future__ import annotations

import torch

from agents.drqv2 import DrQV2Agent
from rlplastic.interventions.resets import FullReset, HeadsReset, ShrinkPerturb
from rlplastic.replay import Batch
from tests.factories import random_batch, tiny_agent

SCHEDULE = {"kind": "schedule", "every_frames": 1000}


def make_agent(obs_type: str = "pixels", seed: int = 0) -> DrQV2Agent:
    return tiny_agent(obs_type, seed)


def make_batch(obs_type: str = "pixels", batch_size: int = 4, seed: int = 0) -> Batch:
    return random_batch(obs_type, batch_size, seed)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def train(agent: DrQV2Agent, obs_type: str, updates: int = 2) -> dict[str, torch.Tensor]:
    metrics = {}
    for step in range(updates):
        metrics = agent.update(make_batch(obs_type, seed=step), step)
    return metrics


def assert_training_continues(agent: DrQV2Agent, obs_type: str, names: tuple[str, ...], reset: tuple[str, ...]) -> None:
    before = {name: snapshot(agent.named_modules_for_monitor()[name]) for name in names}
    metrics = train(agent, obs_type, updates=1)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    for name in names:
        module = agent.named_modules_for_monitor()[name]
        assert any(not torch.equal(module.state_dict()[k], v) for k, v in before[name].items()), name
    for name in reset:
        for p in agent.named_modules_for_monitor()[name].parameters():  # state re-created by that one step
            assert int(agent.optimizers()[name].state[p]["step"]) == 1


def test_heads_reset_keeps_encoder_redraws_heads_and_clears_their_optimizer_state():
    agent = make_agent()
    train(agent, "pixels")
    encoder_before = snapshot(agent.encoder)
    encoder_state = {
        id(p): agent.optimizers()["encoder"].state[p]["exp_avg"].clone() for p in agent.encoder.parameters()
    }
    torch.manual_seed(123)
    expected = {name: snapshot(agent.fresh_module(name)) for name in ("actor", "critic")}
    torch.manual_seed(123)
    reset = HeadsReset(agent, trigger=SCHEDULE)
    report = reset.apply()

    assert reset.name == "heads_reset"
    assert_same(agent.encoder, encoder_before)
    for p in agent.encoder.parameters():  # the encoder keeps its Adam state
        assert torch.equal(agent.optimizers()["encoder"].state[p]["exp_avg"], encoder_state[id(p)])
    assert_same(agent.actor, expected["actor"])
    assert_same(agent.critic, expected["critic"])
    assert_same(agent.critic_target, expected["critic"])
    for name in ("actor", "critic"):
        optimizer = agent.optimizers()[name]
        assert len(optimizer.state) == 0
        # values were copied in place: the optimizer still holds the module's own parameters
        assert [id(p) for p in optimizer.param_groups[0]["params"]] == [
            id(p) for p in getattr(agent, name).parameters()
        ]
    n_critic = sum(p.numel() for p in agent.critic.parameters())
    assert report["params/critic"] == report["target_params/critic"] == n_critic
    assert "params/encoder" not in report
    assert_training_continues(agent, "pixels", ("encoder", "actor", "critic"), reset=("actor", "critic"))


def test_full_reset_redraws_encoder_too_and_syncs_the_target():
    agent = make_agent()
    train(agent, "pixels")
    torch.manual_seed(7)
    expected = {name: snapshot(agent.fresh_module(name)) for name in ("encoder", "actor", "critic")}
    torch.manual_seed(7)
    report = FullReset(agent, trigger=SCHEDULE).apply()

    for name, state in expected.items():
        assert_same(agent.named_modules_for_monitor()[name], state)
        assert len(agent.optimizers()[name].state) == 0
    assert_same(agent.critic_target, expected["critic"])
    assert report["params/encoder"] == sum(p.numel() for p in agent.encoder.parameters())
    assert_training_continues(agent, "pixels", ("encoder", "actor", "critic"), reset=("encoder", "actor", "critic"))


def test_shrink_perturb_is_alpha_theta_plus_beta_fresh():
    agent = make_agent("states")
    train(agent, "states")
    before = {name: snapshot(m) for name, m in (("actor", agent.actor), ("critic", agent.critic))}
    target_before = snapshot(agent.critic_target)
    torch.manual_seed(11)  # the fresh draws, reproduced: one per module, in the order given
    fresh = {name: snapshot(agent.fresh_module(name)) for name in ("actor", "critic")}
    torch.manual_seed(11)
    report = ShrinkPerturb(agent, alpha=0.8, beta=0.2, modules=("actor", "critic"), trigger=SCHEDULE).apply()

    for name in ("actor", "critic"):
        expected = {k: 0.8 * v + 0.2 * fresh[name][k] for k, v in before[name].items()}
        state = agent.named_modules_for_monitor()[name].state_dict()
        for key, value in expected.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-7)
        assert len(agent.optimizers()[name].state) == 0
    for key, value in agent.critic_target.state_dict().items():  # same map, same fresh draw
        torch.testing.assert_close(value, 0.8 * target_before[key] + 0.2 * fresh["critic"][key], rtol=0, atol=1e-7)
    assert report["params"] == sum(p.numel() for m in (agent.actor, agent.critic) for p in m.parameters())
    assert_training_continues(agent, "states", ("actor", "critic"), reset=("actor", "critic"))
