"""Tests for envs/continual.py: task sequences switching at episode boundaries, padding, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from envs.continual import SEQUENCES, ContinualEnv, make_continual_env, task_seed
from envs.dmc import DMCEnv
from tests.factories import assert_same_rollout, checkpoint_round_trip

# Cartpole is the cheapest domain with several tasks of one action space; 8 frames per agent step make
# a 1000-frame episode 125 steps.
CARTPOLE = ("cartpole_balance", "cartpole_swingup")
REPEAT = 8
EPISODE_STEPS = 1000 // REPEAT


def _states_env(tasks=CARTPOLE, switch_every_frames: int = 1000, seed: int = 0, **kwargs) -> ContinualEnv:
    return ContinualEnv(tasks, switch_every_frames, obs_type="states", action_repeat=REPEAT, seed=seed, **kwargs)


def _actions(env: ContinualEnv, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return rng.uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)


def _run_episode(env: ContinualEnv) -> tuple[dict, list[int]]:
    """Reset, then step zero actions to the episode's end; the reset info and every step's task index."""
    _, info = env.reset()
    action = np.zeros(env.action_space.shape, np.float32)
    indices, done = [], False
    while not done:
        _, _, terminated, truncated, step_info = env.step(action)
        indices.append(step_info["task_index"])
        done = terminated or truncated
    return info, indices


def _rollout(env: ContinualEnv, actions: np.ndarray) -> list[tuple]:
    """Step through ``actions``, resetting at episode ends; record everything observable."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info, env.last_frame().copy(), env.frame_count))
        if terminated or truncated:
            out.append(env.reset())
    return out


def test_sequences_table():
    assert SEQUENCES["continual_walker"] == ("walker_stand", "walker_walk", "walker_run")
    assert SEQUENCES["continual_quadruped"] == ("quadruped_walk", "quadruped_run", "quadruped_walk")
    assert SEQUENCES["continual_finger"] == ("finger_spin", "finger_turn_easy", "finger_turn_hard")
    env = make_continual_env("continual_walker", 1000, obs_type="states", action_repeat=REPEAT, seed=3)
    assert env.tasks == SEQUENCES["continual_walker"] and env.action_space.shape == (6,)
    assert [e.task for e in env.envs] == list(env.tasks)
    with pytest.raises(ValueError, match="Unknown continual sequence"):
        make_continual_env("continual_nope", 1000, obs_type="states")


def test_switches_at_the_first_episode_boundary_after_each_switch_point():
    # Switch points at 1500 and 3000 frames; episodes start at 0, 1000, 2000, 3000, 4000.
    env = _states_env(("cartpole_balance", "cartpole_swingup", "cartpole_balance_sparse"), 1500)
    infos = []
    for episode in range(5):
        info, indices = _run_episode(env)
        infos.append(info)
        # Never mid-episode: episode 1 passes the 1500-frame point and stays on task 0 throughout.
        assert indices == [info["task_index"]] * EPISODE_STEPS, episode
    assert [i["task_index"] for i in infos] == [0, 0, 1, 2, 2]  # stays on the last task
    assert [i["task_switch"] for i in infos] == [False, False, True, True, False]
    assert [i["task"] for i in infos] == [
        "cartpole_balance", "cartpole_balance", "cartpole_swingup", "cartpole_balance_sparse", "cartpole_balance_sparse"
    ]  # fmt: skip
    assert env.frame_count == 5000 and env.task == "cartpole_balance_sparse"
    assert [env.scheduled_index(f) for f in (0, 1499, 1500, 2999, 3000, 10**9)] == [0, 0, 1, 1, 2, 2]


def test_cycle_goes_round_again():
    env = _states_env(switch_every_frames=1000, cycle=True)
    infos = [_run_episode(env)[0] for _ in range(3)]
    assert [i["task_index"] for i in infos] == [0, 1, 0]
    assert [i["task_switch"] for i in infos] == [False, True, True]
    assert [env.scheduled_index(f) for f in (0, 1000, 2000, 3000)] == [0, 1, 0, 1]


def test_rewards_after_a_switch_are_the_new_tasks():
    seed = 4
    env = make_continual_env("continual_walker", 16, obs_type="states", action_repeat=REPEAT, seed=seed)
    env.reset(seed=seed)
    env.step(np.zeros(6, np.float32))
    with pytest.raises(RuntimeError, match="auto_switch=False"):
        env.set_task(1)  # a training env follows its schedule only
    env.step(np.zeros(6, np.float32))  # frame 16, the switch point: the next reset moves to walker_walk
    assert env.task == "walker_stand" and env.frame_count == 16

    obs, info = env.reset()
    assert info == {"task": "walker_walk", "task_index": 1, "task_switch": True}
    # A plain walker_walk env with the entry's seed starts the same episode and gets the same rewards;
    # walker_stand from the same physics (same seed, same initial-state sampler) gets other rewards.
    walk = DMCEnv("walker_walk", obs_type="states", action_repeat=REPEAT, seed=task_seed(seed, 1))
    stand = DMCEnv("walker_stand", obs_type="states", action_repeat=REPEAT, seed=task_seed(seed, 1))
    assert np.array_equal(obs, walk.reset()[0]) and np.array_equal(obs, stand.reset()[0])
    walk_rewards, stand_rewards = [], []
    for action in _actions(env, 15):
        obs, reward, *_ = env.step(action)
        walk_obs, walk_reward, *_ = walk.step(action)
        stand_obs, stand_reward, *_ = stand.step(action)
        assert np.array_equal(obs, walk_obs) and np.array_equal(obs, stand_obs)  # the same physics
        walk_rewards.append(walk_reward)
        stand_rewards.append(stand_reward)
        assert reward == walk_reward
    assert walk_rewards != stand_rewards


def test_states_are_zero_padded_to_the_largest_dimension():
    env = make_continual_env(
        "continual_finger", 1000, obs_type="states", action_repeat=REPEAT, seed=1, auto_switch=False
    )
    assert env.state_dims == (9, 12, 12)
    assert env.observation_space.shape == (12,) and env.frame_shape == (12,) and env.frame_stack == 1
    spin = DMCEnv("finger_spin", obs_type="states", action_repeat=REPEAT, seed=task_seed(1, 0))
    obs, _ = env.reset()
    assert obs.shape == (12,) and obs.dtype == np.float32
    assert np.array_equal(obs[:9], spin.reset()[0]) and np.array_equal(obs[9:], np.zeros(3, np.float32))
    action = _actions(env, 1)[0]
    obs, *_ = env.step(action)
    assert np.array_equal(obs[:9], spin.step(action)[0]) and not obs[9:].any()
    frame = env.last_frame()
    assert np.array_equal(frame, obs) and not frame.flags.writeable

    env.set_task("finger_turn_easy")
    turn = DMCEnv("finger_turn_easy", obs_type="states", action_repeat=REPEAT, seed=task_seed(1, 1))
    obs, info = env.reset()
    assert info["task_switch"] and np.array_equal(obs, turn.reset()[0])  # full size: no padding
    assert np.array_equal(env.last_frame(), obs)


def test_mismatched_action_spaces_are_refused():
    with pytest.raises(ValueError, match="share the action space: cartpole_balance .* finger_spin"):
        ContinualEnv(["cartpole_balance", "finger_spin"], 1000, obs_type="states")
    with pytest.raises(ValueError, match="at least one task"):
        ContinualEnv([], 1000)
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match="switch_every_frames"):
            _states_env(switch_every_frames=bad)


def test_set_task_points_an_eval_env_at_any_task():
    env = _states_env(("cartpole_balance", "cartpole_swingup", "cartpole_balance"), 8, auto_switch=False)
    info, _ = _run_episode(env)
    info, _ = _run_episode(env)  # far past the switch points: without auto_switch the task stays
    assert info == {"task": "cartpole_balance", "task_index": 0, "task_switch": False}

    env.reset()
    env.set_task(1)  # a different task abandons the episode
    assert env.task == "cartpole_swingup" and env.task_index == 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        env.last_frame()
    assert env.reset()[1] == {"task": "cartpole_swingup", "task_index": 1, "task_switch": True}
    env.set_task(1)  # the current task: changes nothing, the episode goes on
    env.step(np.zeros(1, np.float32))
    env.set_task("cartpole_balance")  # a name: its first occurrence
    assert env.task_index == 0
    for bad in (3, -1, True, "walker_walk"):
        with pytest.raises(ValueError, match="not in this sequence|out of range"):
            env.set_task(bad)


def test_seeding_is_deterministic_per_task():
    seeds = [task_seed(0, i) for i in range(3)] + [task_seed(1, 0), task_seed(1000, 0)]
    assert len(set(seeds)) == len(seeds) and task_seed(0, 1) == task_seed(0, 1)
    a, b, c = _states_env(seed=7), _states_env(seed=7), _states_env(seed=8, auto_switch=False)
    obs_a, obs_b, obs_c = a.reset()[0], b.reset()[0], c.reset()[0]
    assert np.array_equal(obs_a, obs_b) and not np.array_equal(obs_a, obs_c)
    # reset(seed=k) reseeds every entry as if built with k, the not-yet-played ones included.
    c.set_task(1)
    fresh = _states_env(seed=7, auto_switch=False)
    fresh.set_task(1)
    assert np.array_equal(c.reset(seed=7)[0], fresh.reset()[0])
    c.set_task(0)
    assert np.array_equal(c.reset()[0], obs_a)


def test_resume_is_exact_across_a_switch():
    env = _states_env(switch_every_frames=1000, seed=2)
    env.reset(seed=2)
    actions = _actions(env, 2 * EPISODE_STEPS + 10, seed=1)
    _rollout(env, actions[: EPISODE_STEPS - 5])  # 5 steps before the first episode (and task) ends
    saved = checkpoint_round_trip(env.get_state())

    resumed = _states_env(switch_every_frames=1000, seed=99)  # another seed: the state overrides it
    resumed.set_state(saved)
    assert resumed.frame_count == env.frame_count and resumed.task_index == 0
    assert np.array_equal(resumed.last_frame(), env.last_frame())
    rest = actions[EPISODE_STEPS - 5 :]
    a, b = _rollout(env, rest), _rollout(resumed, rest)
    assert_same_rollout(a, b)
    resets = [x[1] for x in a if len(x) == 2]
    assert [r["task_index"] for r in resets] == [1, 1] and [r["task_switch"] for r in resets] == [True, False]

    other = _states_env(("cartpole_balance", "cartpole_balance_sparse"), 1000)
    with pytest.raises(ValueError, match="State was saved"):
        other.set_state(saved)


def test_pixels_shape_and_resume_across_a_switch():
    def make(seed: int) -> ContinualEnv:
        return make_continual_env(CARTPOLE, 1000, obs_type="pixels", frame_stack=3, action_repeat=REPEAT,
                                  seed=seed, fast_render=True)  # fmt: skip

    env = make(0)
    assert env.observation_space.shape == (9, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.frame_shape == (3, 84, 84) and env.frame_stack == 3
    obs, _ = env.reset()
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8
    actions = _actions(env, EPISODE_STEPS + 3)
    _rollout(env, actions[: EPISODE_STEPS - 2])
    saved = checkpoint_round_trip(env.get_state())
    resumed = make(5)
    resumed.set_state(saved)
    a, b = _rollout(env, actions[EPISODE_STEPS - 2 :]), _rollout(resumed, actions[EPISODE_STEPS - 2 :])
    assert_same_rollout(a, b)
    assert a[2][1]["task_switch"] and env.task == "cartpole_swingup"
    assert np.array_equal(env.render(), env.last_frame().transpose(1, 2, 0))
    env.close()
    resumed.close()
