"""Plasticity injection: unchanged output at injection, frozen original head, state round trip."""

from __future__ import annotations

import pytest
import torch

from agents.drqv2 import DrQV2Agent
from rlplastic.interventions.injection import InjectedHead, inject, injected_heads, reinject_from_state
from rlplastic.replay import Batch
from tests.factories import checkpoint_round_trip


def make_agent(seed: int = 0) -> DrQV2Agent:
    torch.manual_seed(seed)
    return DrQV2Agent((5,), (2,), obs_type="states", feature_dim=8, hidden_dim=16, num_expl_steps=0)


def make_batch(batch_size: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randn(batch_size, 5, generator=g), torch.randn(batch_size, 5, generator=g)
    action = torch.rand(batch_size, 2, generator=g) * 2 - 1
    return Batch(obs, action, torch.rand(batch_size, 1, generator=g), torch.full((batch_size, 1), 0.97), next_obs)


def train(agent: DrQV2Agent, updates: int = 2, start: int = 0) -> dict[str, torch.Tensor]:
    metrics = {}
    for step in range(start, start + updates):
        metrics = agent.update(make_batch(seed=step), step)
    return metrics


@torch.no_grad()
def outputs(agent: DrQV2Agent, batch: Batch) -> list[torch.Tensor]:
    features = agent.encoder(batch.obs)
    return [*agent.critic(features, batch.action), *agent.critic_target(features, batch.action),
            agent.actor(features, 0.5).mean]  # fmt: skip


@pytest.mark.parametrize("module", ["critic", "actor"])
def test_injection_keeps_the_output_and_the_original_head_gets_no_gradient(module):
    agent = make_agent()
    train(agent)
    batch = make_batch(seed=99)
    before = outputs(agent, batch)
    heads = {"critic": ("Q1", "Q2"), "actor": ("policy",)}[module]
    original = {h: getattr(getattr(agent, module), h) for h in heads}
    original_values = {h: [p.detach().clone() for p in m.parameters()] for h, m in original.items()}
    report = inject(agent, module)

    for b, a in zip(before, outputs(agent, batch), strict=True):
        assert torch.equal(a, b)  # bit-identical, not merely close
    assert injected_heads(agent) == {module: heads}
    assert report["heads"] == len(heads)
    optimizer = agent.optimizers()[module]
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["lr"] == optimizer.param_groups[0]["lr"]
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}

    train(agent, updates=2, start=2)
    for h, head in original.items():
        wrapped = getattr(getattr(agent, module), h)
        assert isinstance(wrapped, InjectedHead) and wrapped.base is head
        for p, value in zip(head.parameters(), original_values[h], strict=True):
            assert p.grad is None and not p.requires_grad and id(p) not in held
            assert torch.equal(p, value)
        for p in wrapped.frozen.parameters():
            assert p.grad is None and id(p) not in held
        assert all(p.grad is not None and id(p) in held for p in wrapped.trainable.parameters())
        assert not torch.equal(wrapped.trainable[0].weight, wrapped.frozen[0].weight)  # the new head learns
    if module == "critic":  # the monitor's probe still reads penultimate features and the last layer
        probe = agent.critic_probe(batch, 4)
        assert probe.features["critic_penultimate"].shape == (8, 3 * 16)
        torch.testing.assert_close(
            probe.q, agent.critic(agent.encoder(batch.obs), batch.action)[0].squeeze(-1).detach()
        )
        assert all(p.requires_grad for p in probe.params)


def test_injected_agent_state_round_trips_into_a_fresh_agent():
    agent = make_agent()
    train(agent)
    inject(agent, "critic")
    inject(agent, "actor")
    train(agent, updates=2, start=2)
    state = checkpoint_round_trip(agent.state_dict())

    restored = make_agent(seed=1)
    assert reinject_from_state(restored, state) == {"actor": ("policy",), "critic": ("Q1", "Q2")}
    restored.load_state_dict(state)
    batch = make_batch(seed=42)
    for a, b in zip(outputs(agent, batch), outputs(restored, batch), strict=True):
        assert torch.equal(a, b)
    for twin in (agent, restored):  # identical optimizer state: identical next updates
        torch.manual_seed(0)
        train(twin, updates=1, start=4)
    for a, b in zip(agent.state_dict()["critic"].values(), restored.state_dict()["critic"].values(), strict=True):
        assert torch.equal(a, b)
    assert reinject_from_state(make_agent(), make_agent().state_dict()) == {}
