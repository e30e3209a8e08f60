"""The target-fitting probe (rlplastic/monitor/fitting.py) and its monitor metrics fit_loss / fit_auc."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlplastic.augment import RandomShift
from rlplastic.monitor import MonitorConfig, PlasticityMonitor
from rlplastic.monitor.fitting import (
    detached_copy,
    fit_targets,
    flat_outputs,
    fresh_network_targets,
    random_projection_targets,
    standardise,
)
from rlplastic.monitor.monitor import make_monitor
from rlplastic.monitor.probe_metrics import EncoderCritic
from tests.factories import random_batch, tiny_agent

PROBE = 32


class BatchReplay:
    """A replay stand-in whose ``sample`` returns random batches drawn from the caller's generator."""

    def sample(self, batch_size, device="cpu", rng=None):
        seed = int(rng.integers(2**31)) if rng is not None else 0
        return random_batch("states", batch_size=batch_size, seed=seed)


def fit_monitor(**settings) -> PlasticityMonitor:
    config = {"metrics": ["fitting"], "probe_every_updates": 0, "probe_batch_size": PROBE, "figures": False, **settings}
    return PlasticityMonitor(MonitorConfig(**config))


def probe_fit(agent, **settings) -> dict[str, float]:
    monitor = fit_monitor(**settings)
    monitor.attach(agent)
    return monitor.probe(agent, BatchReplay(), step=0)


def saturate(critic: torch.nn.Module) -> None:
    """Drive the critic to saturation: the trunk's Tanh saturated (LayerNorm gain x50), every head ReLU dead."""
    with torch.no_grad():
        critic.trunk[1].weight.mul_(50.0)
        for head in (critic.Q1, critic.Q2):
            head[0].bias.fill_(-10.0)  # pre-activations ~ -10: both hidden layers' ReLUs output 0
            head[2].bias.fill_(-10.0)


def test_fresh_critic_fits_better_than_a_saturated_one():
    fresh = probe_fit(tiny_agent("states", seed=0), fit_lr=1e-3)
    agent = tiny_agent("states", seed=0)
    saturate(agent.critic)
    saturated = probe_fit(agent, fit_lr=1e-3)
    assert set(fresh) == {"critic/fit_loss", "critic/fit_auc"}
    assert fresh["critic/fit_loss"] < 0.8 and fresh["critic/fit_auc"] < 0.9
    # dead heads learn only their output bias: the zero-mean targets stay unfitted
    assert saturated["critic/fit_loss"] == pytest.approx(1.0, abs=1e-3)
    assert saturated["critic/fit_auc"] == pytest.approx(1.0, abs=1e-3)
    # deterministic: the same probe again gives the same numbers
    assert probe_fit(tiny_agent("states", seed=0), fit_lr=1e-3) == fresh


@pytest.mark.parametrize("fit_encoder", [False, True], ids=["critic", "encoder+critic"])
def test_probe_leaves_parameters_optimizers_grads_hooks_and_rng_untouched(fit_encoder):
    agent = tiny_agent("pixels", seed=1)
    monitor = fit_monitor(metrics=["fau", "fitting"], fit_steps=5, fit_encoder=fit_encoder)
    monitor.attach(agent)
    for i in range(2):  # optimizer state and .grad fields exist
        agent.update(random_batch("pixels", batch_size=4, seed=i), step=0)
    modules = {name: getattr(agent, name) for name in ("encoder", "actor", "critic", "critic_target")}
    params = {name: copy.deepcopy(m.state_dict()) for name, m in modules.items()}
    grads = {name: [None if p.grad is None else p.grad.clone() for p in m.parameters()] for name, m in modules.items()}
    optim = {name: copy.deepcopy(opt.state_dict()) for name, opt in agent.optimizers().items()}
    hooks = {name: [len(sub._forward_hooks) for sub in m.modules()] for name, m in modules.items()}
    monitor.log_values()  # folds and zeroes the FAU counters of the updates
    torch.manual_seed(11)
    np.random.seed(11)
    torch_rng, numpy_rng = torch.get_rng_state(), np.random.get_state()

    class PixelReplay:
        def sample(self, batch_size, device="cpu", rng=None):
            return random_batch("pixels", batch_size=batch_size, seed=int(rng.integers(2**31)))

    values = monitor.probe(agent, PixelReplay(), step=0)
    assert 0.0 <= values["critic/fit_loss"] <= 1.5
    if fit_encoder:
        assert 0.0 <= values["critic/fit_loss_encoder"] <= 1.5 and 0.0 <= values["critic/fit_auc_encoder"] <= 1.5
    else:
        assert not any(key.endswith("_encoder") for key in values)
    assert torch.equal(torch.get_rng_state(), torch_rng)
    after = np.random.get_state()
    assert after[0] == numpy_rng[0] and np.array_equal(after[1], numpy_rng[1]) and after[2:] == numpy_rng[2:]
    for name, m in modules.items():
        state = m.state_dict()
        assert all(torch.equal(state[k], v) for k, v in params[name].items())
        for p, g in zip(m.parameters(), grads[name], strict=True):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)
        assert [len(sub._forward_hooks) for sub in m.modules()] == hooks[name]
    for name, opt in agent.optimizers().items():
        state, before = opt.state_dict()["state"], optim[name]["state"]
        assert state.keys() == before.keys()
        for i in state:
            assert all(torch.equal(torch.as_tensor(state[i][k]), torch.as_tensor(before[i][k])) for k in state[i])
    # the probe's fitting forwards did not reach the monitor's FAU counters
    for name in ("encoder", "critic"):
        assert all(int(total) == 0 for _, total in monitor._captures[name].counts().values())


def test_normalised_loss_is_one_without_steps_and_bounded_with_them():
    assert probe_fit(tiny_agent("states"), fit_steps=0) == {"critic/fit_loss": 1.0, "critic/fit_auc": 1.0}
    for target in ("fresh_network", "random_projection"):
        for batch in (None, 8):
            values = probe_fit(tiny_agent("states"), fit_steps=20, fit_target=target, fit_batch=batch)
            assert 0.0 <= values["critic/fit_loss"] <= 1.5 and 0.0 <= values["critic/fit_auc"] <= 1.5
            assert values["critic/fit_loss"] < 1.0  # Adam at the agent's lr makes some progress in 20 steps


def test_fit_equals_an_independent_adam_loop():
    torch.manual_seed(0)
    agent = tiny_agent("states", seed=2)
    x, action = torch.randn(16, 5), torch.rand(16, 2) * 2 - 1
    targets = fresh_network_targets(agent.fresh_module("critic"), [x, action])
    result = fit_targets(agent.critic, [x, action], targets, steps=3, lr=1e-3)

    model = copy.deepcopy(agent.critic)
    start = torch.cat(model(x, action), dim=1).detach()
    goal = start + targets
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    curve = [1.0]
    for _ in range(3):
        loss = F.mse_loss(torch.cat(model(x, action), dim=1), goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            curve.append(float(F.mse_loss(torch.cat(model(x, action), dim=1), goal) / targets.square().mean()))
    assert result.curve == pytest.approx(curve, rel=1e-5)
    assert result.loss == pytest.approx(curve[-1], rel=1e-5)
    assert result.auc == pytest.approx((0.5 * curve[0] + curve[1] + curve[2] + 0.5 * curve[3]) / 3, rel=1e-5)


def test_targets_are_standardised_and_copies_carry_no_hooks_or_grads():
    g = torch.Generator().manual_seed(0)
    x, action = torch.randn(64, 5, generator=g), torch.rand(64, 2, generator=g)
    for y in (fresh_network_targets(tiny_agent("states").fresh_module("critic"), [x, action]),
              random_projection_targets([x, action], 3, g)):  # fmt: skip
        assert torch.allclose(y.mean(0), torch.zeros(y.shape[1]), atol=1e-5)
        assert torch.allclose(y.square().mean(0), torch.ones(y.shape[1]), atol=1e-4)
    with pytest.raises(ValueError, match="constant"):
        standardise(torch.ones(4, 2))
    agent = tiny_agent("states")
    calls = []
    agent.critic.Q1[1].register_forward_hook(lambda *_: calls.append(1))
    sum(q.sum() for q in agent.critic(x, action)).backward()
    clone = detached_copy(agent.critic)
    assert len(calls) == 1 and all(p.grad is None for p in clone.parameters())
    assert torch.equal(flat_outputs(clone, [x, action]), flat_outputs(agent.critic, [x, action]))
    assert len(calls) == 2  # only the live critic's forward ran the hook
    assert all(p.grad is not None for p in agent.critic.parameters())


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("fit_steps", -1, "monitor.fit_steps=-1"),
        ("fit_lr", 0.0, "monitor.fit_lr=0.0"),
        ("fit_batch", 64, "monitor.fit_batch=64"),
        ("fit_batch", 0, "monitor.fit_batch=0"),
        ("fit_target", "bogus", "monitor.fit_target='bogus'"),
        ("fit_encoder", 1, "monitor.fit_encoder=1"),
    ],
)
def test_config_errors_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_monitor(probe_batch_size=PROBE, **{key: value})


def test_the_target_function_is_the_same_at_every_probe_and_for_every_monitor_with_the_seed():
    agent = tiny_agent("states")
    monitor = fit_monitor(fit_steps=3)
    monitor.attach(agent)
    monitor.probe(agent, BatchReplay(), step=0)
    net = monitor._probe_cache["fit_target_net"]
    monitor.probe(agent, BatchReplay(), step=1)
    assert monitor._probe_cache["fit_target_net"] is net and not any(p.requires_grad for p in net.parameters())
    other = fit_monitor(fit_steps=3)  # a new monitor (as after a resume) builds the same network
    other.attach(agent)
    other.probe(agent, BatchReplay(), step=0)
    state = other._probe_cache["fit_target_net"].state_dict()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    reseeded = fit_monitor(fit_steps=3, seed=1)
    reseeded.attach(agent)
    reseeded.probe(agent, BatchReplay(), step=0)
    assert not torch.equal(reseeded._probe_cache["fit_target_net"].Q1[0].weight, net.Q1[0].weight)


# -- the encoder+critic variant (monitor.fit_encoder) --------------------------------------------------


class PixelReplay:
    """A replay stand-in whose ``sample`` returns random pixel batches drawn from the caller's generator."""

    def sample(self, batch_size, device="cpu", rng=None):
        return random_batch("pixels", batch_size=batch_size, seed=int(rng.integers(2**31)))


def probe_pixels(agent, **settings) -> dict[str, float]:
    monitor = fit_monitor(fit_encoder=True, **settings)
    monitor.attach(agent)
    return monitor.probe(agent, PixelReplay(), step=0)


def kill_encoder(encoder: torch.nn.Module) -> None:
    """Every conv ReLU of the encoder dead: the features are all zero, whatever the observation."""
    with torch.no_grad():
        for conv in encoder.convnet[::2]:
            conv.bias.fill_(-1e3)


def test_drqv2_probe_carries_the_encoders_frozen_input():
    agent = tiny_agent("pixels", augmentation=RandomShift(pad=4))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        probe = agent.critic_probe(random_batch("pixels", batch_size=4), step=0)
    (obs,) = probe.encoder_inputs
    assert obs.dtype == torch.float32 and obs.shape == (4, 9, 84, 84) and not obs.requires_grad
    features, action = probe.critic_inputs
    torch.testing.assert_close(agent.encoder(obs), features)  # the augmentation draw of the probe, kept
    assert torch.equal(flat_outputs(EncoderCritic(agent.encoder, agent.critic), [obs, action]),
                       flat_outputs(agent.critic, [features, action]))  # fmt: skip


def test_fresh_encoder_critic_fits_better_than_a_saturated_one():
    settings = {"fit_lr": 1e-3, "fit_steps": 15}
    fresh = probe_pixels(tiny_agent("pixels", seed=0), **settings)
    agent = tiny_agent("pixels", seed=0)
    kill_encoder(agent.encoder)
    saturate(agent.critic)
    saturated = probe_pixels(agent, **settings)
    keys = {"critic/fit_loss", "critic/fit_auc", "critic/fit_loss_encoder", "critic/fit_auc_encoder"}
    assert set(fresh) == set(saturated) == keys
    assert fresh["critic/fit_loss_encoder"] < 0.8 and fresh["critic/fit_auc_encoder"] < 0.9
    # dead units pass no gradient back: only the output biases learn, the zero-mean targets stay unfitted
    assert saturated["critic/fit_loss_encoder"] == pytest.approx(1.0, abs=1e-3)
    assert saturated["critic/fit_auc_encoder"] == pytest.approx(1.0, abs=1e-3)
    # deterministic: the same probe again gives the same numbers
    assert probe_pixels(tiny_agent("pixels", seed=0), **settings) == fresh


def test_the_encoder_fit_changes_no_other_value_and_is_absent_without_a_trainable_encoder():
    settings = {"metrics": ["all"], "fit_steps": 3, "hessian_iters": 3, "hessian_directions_k": 2,
                "hutchinson_probes": 2, "collapse_recent": False}  # fmt: skip
    without = fit_monitor(**settings)
    agent = tiny_agent("pixels", seed=3)
    without.attach(agent)
    before = without.probe(agent, PixelReplay(), step=0)
    with_encoder = fit_monitor(fit_encoder=True, **settings)
    with_encoder.attach(agent)
    after = with_encoder.probe(agent, PixelReplay(), step=0)
    new = ["critic/fit_loss_encoder", "critic/fit_auc_encoder"]
    assert list(after) == [*before, *new]  # written last, after every existing key
    assert {k: v for k, v in after.items() if k not in new} == before
    assert [t for t in with_encoder.expected_tags() if "_encoder" in t] == [f"plasticity/{k}" for k in new]
    # a states-mode agent's identity encoder has no parameters: no encoder+critic tags, none written
    states = fit_monitor(fit_encoder=True, fit_steps=3)
    agent = tiny_agent("states")
    states.attach(agent)
    assert set(states.probe(agent, BatchReplay(), step=0)) == {"critic/fit_loss", "critic/fit_auc"}
    assert not any("_encoder" in tag for tag in states.expected_tags())
    # only the enabled fitting metrics get an encoder variant; k = 0 reads 1.0 as the critic-only fit
    only_loss = probe_pixels(tiny_agent("pixels"), metrics=["fit_loss"], fit_steps=0)
    assert only_loss == {"critic/fit_loss": 1.0, "critic/fit_loss_encoder": 1.0}


def test_the_encoder_fit_on_random_projections_and_minibatches_makes_progress():
    values = probe_pixels(tiny_agent("pixels"), fit_steps=10, fit_target="random_projection", fit_batch=16)
    assert 0.0 <= values["critic/fit_loss_encoder"] < 1.0 and 0.0 <= values["critic/fit_auc_encoder"] <= 1.5


def test_the_encoder_critic_target_function_is_the_same_at_every_probe_and_apart_from_the_critic_only_one():
    agent = tiny_agent("pixels")
    monitor = fit_monitor(fit_steps=1, fit_encoder=True)
    monitor.attach(agent)
    monitor.probe(agent, PixelReplay(), step=0)
    net = monitor._probe_cache["fit_encoder_target_net"]
    monitor.probe(agent, PixelReplay(), step=1)
    assert monitor._probe_cache["fit_encoder_target_net"] is net and not any(p.requires_grad for p in net.parameters())
    other = fit_monitor(fit_steps=1, fit_encoder=True)  # as after a resume: the same network again
    other.attach(agent)
    other.probe(agent, PixelReplay(), step=0)
    state = other._probe_cache["fit_encoder_target_net"].state_dict()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    critic_only = monitor._probe_cache["fit_target_net"]
    assert not torch.equal(net.critic.Q1[0].weight, critic_only.Q1[0].weight)  # its own seed stream
