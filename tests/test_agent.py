"""DrQ-v2 agent: architecture, gradient routing, target update, schedule, modes, determinism."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agents.drqv2 import DrQV2Agent, Encoder
from rlplastic.augment import RandomShift
from rlplastic.replay import Batch
from rlplastic.utils import TruncatedNormal, schedule

PIXEL_SHAPE = (9, 84, 84)
ACTION_SHAPE = (2,)


def make_agent(obs_type: str = "pixels", seed: int = 0, **kwargs) -> DrQV2Agent:
    torch.manual_seed(seed)
    obs_shape = PIXEL_SHAPE if obs_type == "pixels" else (5,)
    defaults = dict(feature_dim=8, hidden_dim=16, stddev_schedule="linear(1.0,0.1,1000)", num_expl_steps=0)
    defaults.update(kwargs)
    aug = RandomShift(pad=4) if obs_type == "pixels" else None
    return DrQV2Agent(obs_shape, ACTION_SHAPE, obs_type=obs_type, augmentation=aug, **defaults)


def make_batch(obs_type: str = "pixels", batch_size: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    if obs_type == "pixels":
        obs = torch.randint(0, 256, (batch_size, *PIXEL_SHAPE), generator=g, dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (batch_size, *PIXEL_SHAPE), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(batch_size, 5, generator=g)
        next_obs = torch.randn(batch_size, 5, generator=g)
    action = torch.rand(batch_size, *ACTION_SHAPE, generator=g) * 2 - 1
    reward = torch.rand(batch_size, 1, generator=g)
    discount = torch.full((batch_size, 1), 0.99**3)
    return Batch(obs, action, reward, discount, next_obs)


def test_encoder_output_size_matches_reference():
    encoder = Encoder(PIXEL_SHAPE)
    assert encoder.repr_dim == 32 * 35 * 35 == 39200
    out = encoder(torch.zeros(2, *PIXEL_SHAPE, dtype=torch.uint8))
    assert out.shape == (2, 39200)


def test_init_is_orthogonal_with_zero_bias():
    agent = make_agent()
    w = agent.critic.Q1[0].weight  # (16, 8 + 2): orthogonal rows
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5) or torch.allclose(
        w.T @ w, torch.eye(w.shape[1]), atol=1e-5
    )
    assert torch.count_nonzero(agent.critic.Q1[0].bias) == 0
    conv = agent.encoder.convnet[0].weight.flatten(1)  # (32, 81): ReLU gain sqrt(2)
    assert torch.allclose(conv @ conv.T, 2.0 * torch.eye(32), atol=1e-4)


def test_update_returns_flat_metrics_on_device():
    agent = make_agent()
    metrics = agent.update(make_batch(), step=10)
    expected = {"critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss", "actor_ent", "batch_reward"}
    assert expected <= set(metrics)
    for value in metrics.values():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad


def test_actor_loss_leaves_encoder_gradients_untouched():
    agent = make_agent()
    snapshots = {}
    encoder_step = agent._optimizers["encoder"].step
    actor_step = agent._optimizers["actor"].step

    def grads() -> list[torch.Tensor]:
        return [p.grad.clone() for p in agent.encoder.parameters()]

    def record_after_critic(*args, **kwargs):
        snapshots["after_critic"] = grads()
        return encoder_step(*args, **kwargs)

    def record_after_actor(*args, **kwargs):
        snapshots["after_actor"] = grads()
        return actor_step(*args, **kwargs)

    agent._optimizers["encoder"].step = record_after_critic
    agent._optimizers["actor"].step = record_after_actor
    agent.update(make_batch(), step=0)
    assert any(g.abs().sum() > 0 for g in snapshots["after_critic"])  # the critic does train the encoder
    for before, after in zip(snapshots["after_critic"], snapshots["after_actor"], strict=True):
        assert torch.equal(before, after)


def test_target_critic_soft_update_matches_tau():
    tau = 0.05
    agent = make_agent(critic_target_tau=tau)
    with torch.no_grad():  # make target and online differ so the test can see the mix
        for p in agent.critic_target.parameters():
            p.add_(torch.randn_like(p))
    target_before = copy.deepcopy(agent.critic_target.state_dict())
    agent.update(make_batch(), step=0)
    online_after = agent.critic.state_dict()
    for name, target_after in agent.critic_target.state_dict().items():
        expected = (1 - tau) * target_before[name] + tau * online_after[name]
        assert torch.allclose(target_after, expected, atol=1e-6), name


def test_schedule_parser():
    assert schedule(0.2, 10) == 0.2
    assert schedule("0.3", 10) == 0.3
    assert schedule("linear(1.0,0.1,100)", 0) == 1.0
    assert schedule("linear(1.0,0.1,100)", 50) == pytest.approx(0.55)
    assert schedule("linear(1.0,0.1,100)", 1000) == pytest.approx(0.1)
    assert schedule("step_linear(1.0,0.5,10,0.1,10)", 15) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown schedule 'cosine"):
        schedule("cosine(1,0,5)", 0)


def test_truncated_normal_clamps_with_straight_through_gradient():
    loc = torch.tensor([0.999, -0.2], requires_grad=True)
    dist = TruncatedNormal(loc, torch.full((2,), 5.0))
    torch.manual_seed(0)
    sample = dist.sample(clip=0.3)
    assert sample.min() >= -1 + 1e-6 and sample.max() <= 1 - 1e-6
    assert (sample - loc).abs().max() <= 0.3 + 1e-6  # noise clipped at stddev_clip
    sample.sum().backward()
    assert torch.equal(loc.grad, torch.ones(2))  # the clamp passes gradients straight through
    assert torch.equal(dist.sample(clip=0.0), loc.detach())  # stddev_clip=0: the mean action, no noise


def test_act_modes():
    agent = make_agent(num_expl_steps=100)
    obs = np.random.default_rng(0).integers(0, 256, PIXEL_SHAPE, dtype=np.uint8)
    a1 = agent.act(obs, step=5000, eval_mode=True)
    a2 = agent.act(obs, step=5000, eval_mode=True)
    assert a1.shape == ACTION_SHAPE and a1.dtype == np.float32
    np.testing.assert_array_equal(a1, a2)  # eval mode is the mean
    torch.manual_seed(0)
    explore = np.stack([agent.act(obs, step=0, eval_mode=False) for _ in range(200)])
    assert explore.min() < -0.9 and explore.max() > 0.9  # uniform on [-1, 1] while exploring
    assert np.all(np.abs(explore) <= 1.0)


def test_states_mode_trains_critic_on_fixed_batch():
    agent = make_agent("states", lr=1e-3)
    assert "encoder" not in agent.optimizers()  # the identity encoder has nothing to train
    batch = make_batch("states", batch_size=32)
    torch.manual_seed(0)
    first = agent.update(batch, step=0)["critic_loss"].item()
    for _ in range(100):
        last = agent.update(batch, step=0)["critic_loss"].item()
    assert last < 0.5 * first


def test_seeded_updates_are_identical():
    def run() -> list[float]:
        agent = make_agent(seed=3)
        torch.manual_seed(3)
        return [agent.update(make_batch(seed=i), step=i)["critic_loss"].item() for i in range(3)]

    assert run() == run()


def test_state_dict_round_trip_predicts_the_same():
    agent = make_agent(seed=1)
    agent.update(make_batch(), step=0)
    clone = make_agent(seed=2)
    clone.load_state_dict(agent.state_dict())
    obs = np.random.default_rng(1).integers(0, 256, PIXEL_SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(obs, 0, True), clone.act(obs, 0, True))
    torch.manual_seed(5)
    m1 = agent.update(make_batch(seed=7), step=1)
    torch.manual_seed(5)
    m2 = clone.update(make_batch(seed=7), step=1)  # optimizer state came along too
    assert m1["critic_loss"].item() == m2["critic_loss"].item()


def test_bf16_and_channels_last_options_run_close_to_fp32():
    batch = make_batch()
    reference = make_agent(seed=4)
    fast = make_agent(seed=4, bf16=True, channels_last=True)
    torch.manual_seed(0)
    m_ref = reference.update(batch, step=0)
    torch.manual_seed(0)
    m_fast = fast.update(batch, step=0)
    assert torch.isfinite(m_fast["critic_loss"])
    assert m_fast["critic_q1"].item() == pytest.approx(m_ref["critic_q1"].item(), abs=0.05)


def _actor_step(agent: DrQV2Agent, batch) -> torch.Tensor:
    """The actor's first Adam step (≈ −lr·sign(g) per element, 0 where the gradient is exactly 0)."""
    before = [p.detach().clone() for p in agent.actor.parameters()]
    torch.manual_seed(3)
    agent._update_actor(batch.obs, 10_000)
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(agent.actor.parameters(), before, strict=True)])


def test_bf16_actor_update_follows_fp32_when_the_policy_saturates():
    # Pre-tanh outputs near 5: float32 tanh is 0.9999 (gradient 2e-4, which Adam turns into a full step);
    # a bf16 tanh rounds to exactly 1 and froze the policy. Under bf16=true the actor runs in float32.
    fp32 = make_agent("states", hidden_dim=32)
    with torch.no_grad():
        fp32.actor.policy[-1].bias.fill_(5.0)
    bf16 = copy.deepcopy(fp32)
    bf16.bf16 = True
    batch = make_batch(obs_type="states", batch_size=64)
    step32, step16 = _actor_step(fp32, batch), _actor_step(bf16, batch)
    moved = step32 != 0
    assert moved.float().mean() > 0.95
    head_bias = slice(step32.numel() - ACTION_SHAPE[0], None)  # the saturated outputs' own parameters
    assert (step16[head_bias] != 0).all()
    # the same direction: the signs of the Adam steps agree on >= 95% of the elements fp32 moves
    assert ((step16.sign() == step32.sign()) & moved).sum() >= 0.95 * moved.sum()


def test_bf16_leaves_q_values_and_td_targets_in_float32():
    # Q near 25, as on cartpole from pixels: bf16 stores such a value to ±0.06, which is about what Q differs
    # by between actions, so a bf16 critic's TD errors drowned in rounding (the pixel learning failure).
    fp32 = make_agent(seed=4, hidden_dim=64, feature_dim=32)
    with torch.no_grad():
        for net in (fp32.critic, fp32.critic_target):
            net.Q1[-1].bias.fill_(25.0)
            net.Q2[-1].bias.fill_(25.0)
    bf16 = copy.deepcopy(fp32)
    bf16.bf16 = True
    batch = make_batch(batch_size=64)
    with torch.no_grad():
        next_features = fp32.encoder(batch.next_obs.float())
    targets = []
    for agent in (fp32, bf16):
        torch.manual_seed(1)
        targets.append(agent.td_target(next_features, batch.reward, batch.discount, step=10_000))
    assert torch.equal(targets[0], targets[1])  # a bf16 target critic rounded these to multiples of 1/8
    losses = []
    for agent in (fp32, bf16):
        torch.manual_seed(0)
        losses.append(agent.update(batch, step=10_000)["critic_loss"].item())
    # what is left is the encoder's bf16 rounding: the loss agrees to 1e-3 (a bf16 critic was 2.5% off)
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"obs_type": "rgb"}, "obs_type='rgb'"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"critic_target_tau": 1.5}, "critic_target_tau=1.5"),
        ({"stddev_clip": -0.1}, "stddev_clip=-0.1 must be >= 0"),
        ({"stddev_schedule": "exp(1)"}, "unknown schedule 'exp"),
    ],
)
def test_bad_agent_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        DrQV2Agent((5,), ACTION_SHAPE, **{"obs_type": "states", **kwargs})


def test_stddev_clip_zero_is_accepted_where_train_py_accepts_it():
    # train.py allows stddev_clip >= 0; the agent must not refuse later what the early check let through.
    agent = DrQV2Agent((5,), ACTION_SHAPE, obs_type="states", stddev_clip=0.0)
    assert agent.stddev_clip == 0.0


def test_critic_probe_is_frozen_and_consistent():
    agent = make_agent(seed=6)
    before = copy.deepcopy(agent.critic.state_dict())
    probe = agent.critic_probe(make_batch(batch_size=8), step=0)
    first = probe.loss_fn()
    assert torch.equal(first, probe.loss_fn())  # same augmentation draw and targets every call
    pen = probe.features["critic_penultimate"]
    assert pen.shape == (8, 16)
    assert torch.allclose(pen @ probe.head_weight + probe.head_bias, probe.q, atol=1e-6)
    grads = torch.autograd.grad(first, probe.params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for name, value in agent.critic.state_dict().items():
        assert torch.equal(value, before[name])
