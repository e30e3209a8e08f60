"""Tests for envs/dmc.py: the DMC gymnasium env (pixels/states, action repeat, seeding, restore)."""

from __future__ import annotations

import os

import mujoco
import numpy as np
import pytest

from envs import dmc
from envs.dmc import TASKS, DMCEnv, make_env
from tests.factories import assert_same_rollout, checkpoint_round_trip

# dm_control through envs.dmc, which sets MUJOCO_GL before dm_control's first import.
suite = dmc.suite


def _actions(env: DMCEnv, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return rng.uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)


def _rollout(env: DMCEnv, actions: np.ndarray) -> list[tuple]:
    """Step through ``actions``, resetting at episode ends; record everything observable."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info["discount"], env.last_frame()))
        if terminated or truncated:
            out.append(env.reset())
    return out


def test_mujoco_gl_defaults_to_egl():
    assert os.environ["MUJOCO_GL"]  # set by envs.dmc before dm_control was imported
    assert "reach_duplo" in TASKS and len(TASKS) == 24


def test_pixel_spaces_and_frames():
    env = make_env("cartpole_swingup", seed=0)
    assert env.observation_space.shape == (9, 84, 84)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space.dtype == np.float32
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.frame_shape == (3, 84, 84) and env.frame_stack == 3 and env.action_repeat == 2

    obs, info = env.reset()
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8
    assert info == {}
    # The stack starts as three copies of the first frame, and that frame is camera 0's view.
    assert np.array_equal(obs[0:3], obs[3:6]) and np.array_equal(obs[3:6], obs[6:9])
    reference = env.physics.render(84, 84, camera_id=0).transpose(2, 0, 1)
    assert np.array_equal(obs[6:9], reference)

    first = obs[6:9].copy()
    obs, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert info["discount"] == 1.0
    assert np.array_equal(obs[0:3], first) and np.array_equal(obs[3:6], first)
    assert not np.array_equal(obs[6:9], first)
    assert np.array_equal(env.last_frame(), obs[6:9])
    assert env.render().shape == (84, 84, 3)
    assert np.array_equal(env.render(), obs[6:9].transpose(1, 2, 0))
    env.close()


def test_state_spaces():
    env = make_env("cartpole_swingup", obs_type="states", frame_stack=3)
    dim = sum(int(np.prod(s.shape)) for s in suite.load("cartpole", "swingup").observation_spec().values())
    assert env.observation_space.shape == (dim,) and env.observation_space.dtype == np.float32
    assert env.frame_shape == (dim,) and env.frame_stack == 1  # no stacking for states
    obs, _ = env.reset()
    assert obs.shape == (dim,) and obs.dtype == np.float32
    assert np.array_equal(env.last_frame(), obs)
    assert env.render().shape == (84, 84, 3)  # rendered on demand for eval videos


def test_action_repeat_sums_rewards_like_raw_dm_control():
    repeat = 3
    env = make_env("cartpole_swingup", obs_type="states", action_repeat=repeat, seed=5)
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": 5}, visualize_reward=False)
    obs, _ = env.reset()
    raw_step = raw.reset()
    assert np.array_equal(obs, dmc._flatten(raw_step.observation))
    for action in _actions(env, 20):
        obs, reward, *_ = env.step(action)
        total = 0.0
        for _ in range(repeat):
            raw_step = raw.step(action.astype(np.float64))
            total += raw_step.reward
        assert reward == total
        assert np.array_equal(obs, dmc._flatten(raw_step.observation))


def test_renders_once_per_agent_step(monkeypatch):
    calls = []
    original = dmc.Camera.render
    monkeypatch.setattr(dmc.Camera, "render", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    env = make_env("cartpole_balance", action_repeat=4)
    physics_steps = []
    inner_step = env._env.step
    monkeypatch.setattr(env._env, "step", lambda a: physics_steps.append(1) or inner_step(a))
    assert len(calls) == 1  # the construction-time renderer check
    env.reset()
    assert len(calls) == 2
    for action in _actions(env, 3):
        env.step(action)
    assert len(calls) == 5 and len(physics_steps) == 12
    env.render()  # pixels: reuses the last observed frame
    assert len(calls) == 5


def test_termination_stops_repeat_early(monkeypatch):
    env = make_env("cartpole_balance", obs_type="states", action_repeat=4)
    env.reset()
    physics_steps = []
    inner_step = env._env.step
    monkeypatch.setattr(env._env, "step", lambda a: physics_steps.append(1) or inner_step(a))
    monkeypatch.setattr(env._env.task, "get_termination", lambda physics: 0.0)
    _, _, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert terminated is True and truncated is False and info["discount"] == 0.0
    assert len(physics_steps) == 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))


def test_time_limit_truncates():
    env = make_env("cheetah_run", obs_type="states", action_repeat=8)
    env.reset()
    action = np.zeros(env.action_space.shape, np.float32)
    for _ in range(1000 // 8 - 1):
        _, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
    _, _, terminated, truncated, info = env.step(action)
    assert truncated is True and terminated is False and info["discount"] == 1.0


def test_seeds_reproduce_and_differ():
    a, b = make_env("reacher_easy", seed=3), make_env("reacher_easy", seed=3)
    actions = _actions(a, 4)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    assert np.array_equal(obs_a, obs_b)
    assert_same_rollout(_rollout(a, actions), _rollout(b, actions))

    c = make_env("reacher_easy", seed=4)
    assert not np.array_equal(c.reset()[0], obs_a)

    # reset(seed=k) on a used env starts the same episode as a fresh env built with seed k.
    states = make_env("reacher_easy", obs_type="states", seed=0)
    states.reset()
    _rollout(states, _actions(states, 5))
    fresh = make_env("reacher_easy", obs_type="states", seed=9)
    assert np.array_equal(states.reset(seed=9)[0], fresh.reset()[0])
    assert np.array_equal(states.reset()[0], fresh.reset()[0])  # and the streams continue alike


def test_cup_catch_is_ball_in_cup():
    env = make_env("cup_catch", obs_type="states")
    assert (env.domain, env.task_name) == ("ball_in_cup", "catch")
    raw = suite.load("ball_in_cup", "catch", task_kwargs={"random": 0}, visualize_reward=False)
    assert np.array_equal(env.reset()[0], dmc._flatten(raw.reset().observation))
    assert make_env("ball_in_cup_catch", obs_type="states").domain == "ball_in_cup"
    assert make_env("point_mass_easy", obs_type="states").domain == "point_mass"  # beyond TASKS


def test_quadruped_uses_camera_2():
    env = make_env("quadruped_walk", frame_stack=1)
    assert env.camera_id == 2
    obs, _ = env.reset()
    assert np.array_equal(obs, env.physics.render(84, 84, camera_id=2).transpose(2, 0, 1))
    assert not np.array_equal(obs, env.physics.render(84, 84, camera_id=0).transpose(2, 0, 1))


def test_reach_duplo_rescales_actions():
    env = make_env("reach_duplo", obs_type="states")
    spec = env._env.action_spec()
    sent = []
    inner_step = env._env.step
    env._env.step = lambda a: sent.append(a) or inner_step(a)
    env.reset()
    for value in (-1.0, 1.0, 0.0):
        env.step(np.full(env.action_space.shape, value, np.float32))
    assert np.allclose(sent[0], spec.minimum) and np.allclose(sent[2], spec.maximum)
    assert np.allclose(sent[4], (spec.minimum + spec.maximum) / 2)
    assert sent[0].dtype == np.float64


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="cartpole_swingupp") as info:
        make_env("cartpole_swingupp")
    assert "cheetah_run" in str(info.value) and "point_mass_easy" in str(info.value)
    with pytest.raises(ValueError, match="'rgb'") as info:
        make_env("cheetah_run", obs_type="rgb")
    assert "pixels" in str(info.value) and "states" in str(info.value)


def test_bad_action_and_step_before_reset_raise():
    env = make_env("cheetah_run", obs_type="states")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6, np.float32))
    env.reset()
    with pytest.raises(ValueError, match=r"\(3,\)"):
        env.step(np.zeros(3, np.float32))


@pytest.mark.parametrize(
    "task, obs_type, action_repeat, before, after",
    [
        # reacher moves its target in the model each episode; 120 + 20 steps cross an episode end.
        ("reacher_easy", "states", 8, 120, 20),
        ("walker_walk", "states", 2, 40, 30),  # contacts: the solver's warm start must survive
        ("reacher_hard", "pixels", 2, 15, 10),
    ],
)
def test_get_set_state_continues_bit_identically(task, obs_type, action_repeat, before, after):
    env = make_env(task, obs_type=obs_type, action_repeat=action_repeat, seed=1)
    actions = _actions(env, before + after)
    env.reset()
    _rollout(env, actions[:before])
    state = checkpoint_round_trip(env.get_state())
    expected = _rollout(env, actions[before:])

    restored = make_env(task, obs_type=obs_type, action_repeat=action_repeat, seed=123)
    restored.set_state(state)
    assert_same_rollout(_rollout(restored, actions[before:]), expected)

    env.set_state(state)  # rewinding the same env works as well
    assert_same_rollout(_rollout(env, actions[before:]), expected)


def test_set_state_rejects_other_config():
    state = make_env("cheetah_run", obs_type="states").get_state()
    with pytest.raises(ValueError, match="action_repeat"):
        make_env("cheetah_run", obs_type="states", action_repeat=4).set_state(state)


def test_fast_render_changes_pixels_only():
    slow, fast = make_env("walker_stand", frame_stack=1), make_env("walker_stand", frame_stack=1, fast_render=True)
    a, b = slow.reset()[0], fast.reset()[0]
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_renderer_failure_names_mujoco_gl(monkeypatch):
    def broken(self):
        raise mujoco.FatalError("gladLoadGL error")

    monkeypatch.setattr(DMCEnv, "_render_rgb", broken)
    with pytest.raises(RuntimeError) as info:
        make_env("cartpole_balance")
    message = str(info.value)
    assert "MUJOCO_GL" in message and repr(os.environ["MUJOCO_GL"]) in message
    assert "osmesa" in message and "libosmesa6" in message and "glfw" in message
