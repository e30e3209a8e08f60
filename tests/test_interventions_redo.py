"""ReDo: dormant units' incoming weights re-drawn, outgoing zeroed, the rest untouched, Adam moments zeroed."""

from __future__ import annotations

import math

import pytest
import torch

from agents.drqv2 import DrQV2Agent
from rlplastic.interventions.redo import ReDo
from rlplastic.replay import Batch
from tests.factories import random_batch, tiny_agent


def make_agent(obs_type: str = "states", seed: int = 0) -> DrQV2Agent:
    return tiny_agent(obs_type, seed)


def make_batch(obs_type: str = "states", batch_size: int = 4, seed: int = 0) -> Batch:
    return random_batch(obs_type, batch_size, seed)


def train(agent: DrQV2Agent, obs_type: str, updates: int = 2) -> dict[str, torch.Tensor]:
    metrics = {}
    for step in range(updates):
        metrics = agent.update(make_batch(obs_type, seed=step), step)
    return metrics


def params(agent: DrQV2Agent) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m in ("encoder", "actor", "critic", "critic_target")
            for k, v in getattr(agent, m).state_dict().items()}  # fmt: skip


def moments(agent: DrQV2Agent, module: str) -> dict[str, dict[str, torch.Tensor]]:
    opt = agent.optimizers()[module]
    return {k: {s: v.clone() for s, v in opt.state[p].items()} for k, p in getattr(agent, module).named_parameters()}


def test_redo_recycles_dormant_units_only_and_zeroes_their_adam_moments():
    agent = make_agent()
    train(agent, "states")
    with torch.no_grad():  # silence units 1 and 5 of the critic's first Q1 layer
        agent.critic.Q1[0].weight[[1, 5]] = 0.0
        agent.critic.Q1[0].bias[[1, 5]] = -1.0
    batch = make_batch(batch_size=64, seed=9)
    redo = ReDo(agent, tau=0.1, modules=("critic",))
    masks = {layer.producer: mask for layer, mask in redo.dormant_masks(batch).items()}
    assert sorted(masks) == ["critic.Q1.0", "critic.Q1.2", "critic.Q2.0", "critic.Q2.2"]  # never Q*.4 (output)
    assert masks["critic.Q1.0"][[1, 5]].all()
    before, adam = params(agent), moments(agent, "critic")
    torch.manual_seed(3)
    fresh = agent.fresh_module("critic").state_dict()
    torch.manual_seed(3)
    report = redo.apply(batch)

    # expected critic: recycled rows from the fresh draw with zero bias, then recycled units' columns zeroed
    expected = {k: v.clone() for k, v in before.items()}
    zeroed: dict[str, torch.Tensor] = {}  # critic parameter → entries whose moments must be zero
    for head in ("Q1", "Q2"):
        for i in (0, 2):
            rows = masks[f"critic.{head}.{i}"]
            w, b = f"{head}.{i}.weight", f"{head}.{i}.bias"
            expected[f"critic.{w}"][rows] = fresh[w][rows]
            expected[f"critic.{b}"][rows] = 0.0
            zeroed[w] = zeroed.get(w, torch.zeros_like(before[f"critic.{w}"], dtype=torch.bool)) | rows[:, None]
            zeroed[b] = rows
        for i in (0, 2):
            cols = masks[f"critic.{head}.{i}"]
            w = f"{head}.{i + 2}.weight"
            expected[f"critic.{w}"][:, cols] = 0.0
            zeroed[w] = zeroed.get(w, torch.zeros_like(before[f"critic.{w}"], dtype=torch.bool)) | cols[None, :]
    after = params(agent)
    for key, value in expected.items():  # everything else (actor, trunk, target critic) is untouched
        assert torch.equal(after[key], value), key
    assert (agent.critic.Q1[2].weight[:, [1, 5]] == 0).all()

    opt = agent.optimizers()["critic"]
    for key, p in agent.critic.named_parameters():
        mask = zeroed.get(key, torch.zeros_like(p, dtype=torch.bool))
        for s in ("exp_avg", "exp_avg_sq"):
            assert (opt.state[p][s][mask] == 0).all(), key
            assert torch.equal(opt.state[p][s][~mask], adam[key][s][~mask]), key
        # step="reset": the step count restarts for tensors with zeroed entries, and only for those
        assert int(opt.state[p]["step"]) == (0 if mask.any() else int(adam[key]["step"])), key

    recycled = {k: int(m.sum()) for k, m in masks.items()}
    assert report["critic/Q1.1"] == recycled["critic.Q1.0"] >= 2
    assert report["recycled"] == sum(recycled.values()) and report["units"] == 4 * 16
    assert all(torch.isfinite(v).all() for v in train(agent, "states", updates=1).values())


def test_redo_expands_a_dormant_conv_channel_over_the_trunk_columns():
    agent = make_agent("pixels")
    train(agent, "pixels", updates=1)
    channel, conv = 3, agent.encoder.convnet[6]  # the last conv: its channels feed both trunks
    with torch.no_grad():
        conv.weight[channel] = 0.0
        conv.bias[channel] = 0.0
    before, actor_adam = params(agent), moments(agent, "actor")
    torch.manual_seed(5)
    fresh = agent.fresh_module("encoder").state_dict()
    torch.manual_seed(5)
    report = ReDo(agent, tau=0.0, modules=("encoder",)).apply(make_batch("pixels", seed=4))

    assert report["encoder/convnet.7"] == 1 and report["recycled"] == 1  # only the silenced channel
    spatial = 35 * 35
    cols = torch.zeros(32 * spatial, dtype=torch.bool)
    cols[channel * spatial : (channel + 1) * spatial] = True
    expected = {k: v.clone() for k, v in before.items()}
    expected["encoder.convnet.6.weight"][channel] = fresh["convnet.6.weight"][channel]
    for trunk in ("actor", "critic", "critic_target"):  # the target reads the same (online) encoder
        expected[f"{trunk}.trunk.0.weight"][:, cols] = 0.0
    after = params(agent)
    for key, value in expected.items():
        assert torch.equal(after[key], value), key
    assert not torch.equal(after["encoder.convnet.6.weight"][channel], torch.zeros_like(conv.weight[channel]))

    trunk_w = agent.actor.trunk[0].weight
    state = agent.optimizers()["actor"].state[trunk_w]
    for s in ("exp_avg", "exp_avg_sq"):
        assert (state[s][:, cols] == 0).all()
        assert torch.equal(state[s][:, ~cols], actor_adam["trunk.0.weight"][s][:, ~cols])
    assert all(torch.isfinite(v).all() for v in train(agent, "pixels", updates=1).values())


@pytest.mark.parametrize("tau", [-0.1, 1.5, math.nan])
def test_redo_rejects_tau_outside_the_unit_interval(tau):
    with pytest.raises(ValueError, match=rf"tau={tau!r} is outside \[0, 1\]"):
        ReDo(tiny_agent("states"), tau=tau)
