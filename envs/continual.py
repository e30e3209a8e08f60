"""Continual DMC: one run chains tasks of one domain that share observation and action spaces.

The setting where plasticity loss shows (the "Continual DMC" of Plasticine and C-CHAIN, Tang et al.
2025): the agent trains on task 0 for ``switch_every_frames`` frames, then on task 1, and so on, with
one network and one replay buffer. ``ContinualEnv`` looks to the trainer exactly like
``envs.dmc.DMCEnv``; it holds one ``DMCEnv`` per entry of the sequence (built once, each with its own
seed derived from the run seed) and counts the frames stepped (agent steps x ``action_repeat``).

A switch happens only at an episode boundary: the first ``reset`` at or after a switch point
``k * switch_every_frames`` moves to the task the schedule names (task ``k``; after the last task the
env stays on it, or with ``cycle=True`` goes round again) and reports it in the reset's info::

    {"task": "walker_walk", "task_index": 1, "task_switch": True}

State observations of different sizes (finger_spin has 9 dims, finger_turn_* 12) are padded with
zeros at the end to the largest dimension of the sequence, so every task's vector starts with the
same (shared) quantities and the agent's input size never changes. Pixel observations have the same
shape for every task already.

``get_state`` / ``set_state`` capture the frame counter, the current task, and every sub-env's full
state as torch tensors and Python scalars, so a checkpoint loaded with
``torch.load(weights_only=True)`` resumes bit-identically, across a switch included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.dmc import DMCEnv

__all__ = ["SEQUENCES", "ContinualEnv", "make_continual_env", "task_seed"]

#: Named task sequences (``make_continual_env(name)``). A task may appear more than once; each entry
#: gets its own ``DMCEnv``.
SEQUENCES: dict[str, tuple[str, ...]] = {
    "continual_walker": ("walker_stand", "walker_walk", "walker_run"),
    "continual_quadruped": ("quadruped_walk", "quadruped_run", "quadruped_walk"),
    "continual_finger": ("finger_spin", "finger_turn_easy", "finger_turn_hard"),
}


def task_seed(seed: int, index: int) -> int:
    """The seed of entry ``index`` of a sequence run with ``seed``: distinct per entry, reproducible.

    Derived with ``numpy.random.SeedSequence`` (not ``seed + index``), so the entries of one run do not
    share seeds with those of a neighbouring run seed or with the eval env's ``seed + 1000``.
    """
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(1)[0])


class ContinualEnv(gym.Env):
    """A sequence of DMC tasks behind one ``gymnasium.Env``, switching at episode boundaries.

    :param tasks: the sequence, ``domain_task`` names (at least one). Their action spaces must be equal.
    :param switch_every_frames: frames (agent steps x ``action_repeat``) spent on each task.
    :param obs_type: ``"pixels"`` or ``"states"`` (states are zero-padded to the largest dimension).
    :param frame_stack: frames stacked on the channel axis (pixels only).
    :param action_repeat: physics control steps per agent step.
    :param seed: run seed; entry ``i`` is built with ``task_seed(seed, i)``.
    :param img_size: height and width of rendered frames.
    :param fast_render: render without shadows and reflections (see ``DMCEnv``).
    :param cycle: after the last task, start the sequence again instead of staying on the last task.
    :param auto_switch: follow the frame schedule. An evaluation env is built with ``False`` and
        pointed at a task with ``set_task``; its own frames then never move it.
    :raises ValueError: empty sequence, bad ``switch_every_frames``, or tasks whose action spaces (or,
        for pixels, observation spaces) differ.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        tasks: Sequence[str],
        switch_every_frames: int,
        obs_type: str = "pixels",
        frame_stack: int = 3,
        action_repeat: int = 2,
        seed: int = 0,
        img_size: int = 84,
        fast_render: bool = False,
        cycle: bool = False,
        auto_switch: bool = True,
    ) -> None:
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("A continual env needs at least one task.")
        if isinstance(switch_every_frames, bool) or int(switch_every_frames) != switch_every_frames:
            raise ValueError(f"switch_every_frames must be a positive integer, got {switch_every_frames!r}.")
        if switch_every_frames < 1:
            raise ValueError(f"switch_every_frames must be a positive integer, got {switch_every_frames!r}.")
        self.tasks: tuple[str, ...] = tasks
        self.switch_every_frames = int(switch_every_frames)
        self.cycle = bool(cycle)
        self.auto_switch = bool(auto_switch)
        self.obs_type = obs_type
        self.render_mode = "rgb_array"

        self._envs: list[DMCEnv] = []
        try:
            for index, task in enumerate(tasks):
                self._envs.append(
                    DMCEnv(
                        task,
                        obs_type=obs_type,
                        frame_stack=frame_stack,
                        action_repeat=action_repeat,
                        seed=task_seed(seed, index),
                        img_size=img_size,
                        fast_render=fast_render,
                    )
                )
            self._check_spaces()
        except BaseException:
            self.close()
            raise

        first = self._envs[0]
        self.action_space = first.action_space
        self.action_repeat = first.action_repeat
        self.frame_stack = first.frame_stack
        if obs_type == "states":
            self.state_dims: tuple[int, ...] = tuple(env.frame_shape[0] for env in self._envs)
            dim = max(self.state_dims)
            self.frame_shape: tuple[int, ...] = (dim,)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        else:
            self.state_dims = ()
            self.frame_shape = first.frame_shape
            self.observation_space = first.observation_space
        self.metadata = {**self.metadata, "render_fps": first.metadata["render_fps"]}

        self._index = 0  # the task being played (or to be played by the next reset)
        self._frame_count = 0  # frames stepped, all tasks together
        self._episode_index: int | None = None  # task of the latest episode; None before the first reset
        self._pending_seeds: list[int | None] = [None] * len(tasks)  # from reset(seed=...), used at next reset
        self._needs_reset = True
        self._last_frame: np.ndarray | None = None  # padded copy of the sub-env's last frame (states)

    # ---------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode, first moving to the task the schedule names if a switch point was passed.

        :param seed: if given, every entry ``i`` is reseeded with ``task_seed(seed, i)`` at its next
            reset (this one for the current task), as if the env had been built with ``seed``. The
            frame counter and the current task are kept: reseeding is not a restart of the sequence.
        :param options: unused.
        :return: the first observation and ``{"task", "task_index", "task_switch"}``; ``task_switch``
            is true when this episode's task differs from the previous episode's.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._pending_seeds = [task_seed(seed, i) for i in range(len(self.tasks))]
        if self.auto_switch:
            self._index = self.scheduled_index(self._frame_count)
        env = self._envs[self._index]
        obs, _ = env.reset(seed=self._pending_seeds[self._index])
        self._pending_seeds[self._index] = None
        switched = self._episode_index is not None and self._episode_index != self._index
        self._episode_index = self._index
        self._needs_reset = False
        self._update_last_frame()
        info = {"task": self.task, "task_index": self._index, "task_switch": switched}
        return self._pad(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step the current task (see ``DMCEnv.step``) and count ``action_repeat`` frames.

        :return: observation, reward, terminated, truncated, info with ``"discount"`` and
            ``"task_index"``.
        """
        if self._needs_reset:
            raise RuntimeError(
                "step() called before reset(), after the episode ended or after set_task(); call reset()."
            )
        obs, reward, terminated, truncated, info = self._envs[self._index].step(action)
        self._frame_count += self.action_repeat
        self._needs_reset = bool(terminated or truncated)
        self._update_last_frame()
        return self._pad(obs), reward, terminated, truncated, {**info, "task_index": self._index}

    def render(self) -> np.ndarray:
        """The current task's view as an ``(img_size, img_size, 3)`` uint8 array (``DMCEnv.render``)."""
        return self._envs[self._index].render()

    def close(self) -> None:
        """Close every task's env (idempotent)."""
        for env in self._envs:
            env.close()

    # ---------------------------------------------------------------- for the trainer

    @property
    def task(self) -> str:
        """Name of the current task."""
        return self.tasks[self._index]

    @property
    def task_index(self) -> int:
        """Position of the current task in ``tasks``."""
        return self._index

    @property
    def frame_count(self) -> int:
        """Frames stepped so far (agent steps x ``action_repeat``), all tasks together."""
        return self._frame_count

    @property
    def envs(self) -> tuple[DMCEnv, ...]:
        """The per-entry ``DMCEnv`` instances, in sequence order."""
        return tuple(self._envs)

    @property
    def physics(self):
        """The current task's live ``dm_control`` Physics."""
        return self._envs[self._index].physics

    def scheduled_index(self, frame: int) -> int:
        """The task the schedule names at ``frame``: ``frame // switch_every_frames``, clamped or cycled."""
        phase = int(frame) // self.switch_every_frames
        return phase % len(self.tasks) if self.cycle else min(phase, len(self.tasks) - 1)

    def set_task(self, task: int | str) -> None:
        """Play ``task`` (an index into ``tasks``, or a name: its first occurrence) from the next reset.

        For an evaluation env (built with ``auto_switch=False``): point it at the train env's
        ``task_index`` before each evaluation, or at each task in turn to evaluate on all. Moving to a
        different task abandons the current episode (``step`` raises until ``reset``); setting the
        current task changes nothing.

        :raises RuntimeError: the env follows its frame schedule (``auto_switch=True``).
        :raises ValueError: unknown name or index out of range.
        """
        if self.auto_switch:
            raise RuntimeError(
                "set_task() needs an env built with auto_switch=False; this one follows its frame schedule."
            )
        index = self._task_index_of(task)
        if index != self._index:
            self._index = index
            self._needs_reset = True
            self._last_frame = None

    def last_frame(self) -> np.ndarray:
        """The newest single frame: uint8 ``frame_shape`` for pixels, the padded float32 state vector.

        Read-only and shared, like ``DMCEnv.last_frame``; copy it before modifying.
        """
        if self._last_frame is None:
            raise RuntimeError("last_frame() called before reset(); call reset().")
        return self._last_frame

    def get_state(self) -> dict[str, Any]:
        """Everything the future depends on, as torch tensors and Python scalars.

        Safe for ``torch.save`` and ``torch.load(weights_only=True)``; ``set_state`` on an env made
        with the same arguments (any seed) continues bit-identically, across a switch included.
        """
        return {
            "config": self._config(),
            "index": self._index,
            "frame_count": self._frame_count,
            "episode_index": self._episode_index,
            "pending_seeds": list(self._pending_seeds),
            "needs_reset": self._needs_reset,
            "has_frame": self._last_frame is not None,
            "envs": [env.get_state() for env in self._envs],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` dict into this env.

        :raises ValueError: the state was saved from an env with a different sequence or settings.
        """
        if state["config"] != self._config():
            raise ValueError(f"State was saved from an env with {state['config']}, this env has {self._config()}.")
        for env, env_state in zip(self._envs, state["envs"], strict=True):
            env.set_state(env_state)
        self._index = int(state["index"])
        self._frame_count = int(state["frame_count"])
        episode_index = state["episode_index"]
        self._episode_index = None if episode_index is None else int(episode_index)
        self._pending_seeds = [None if s is None else int(s) for s in state["pending_seeds"]]
        self._needs_reset = bool(state["needs_reset"])
        self._last_frame = None
        if state["has_frame"]:
            self._update_last_frame()

    # ---------------------------------------------------------------- internals

    def _check_spaces(self) -> None:
        first = self._envs[0]
        for env in self._envs[1:]:
            if env.action_space != first.action_space:
                raise ValueError(
                    f"Tasks of a continual sequence must share the action space: {first.task} has "
                    f"{first.action_space}, {env.task} has {env.action_space}."
                )
            if self.obs_type == "pixels" and env.observation_space != first.observation_space:
                raise ValueError(
                    f"Tasks of a continual sequence must share the observation space: {first.task} has "
                    f"{first.observation_space}, {env.task} has {env.observation_space}."
                )

    def _task_index_of(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.tasks:
                raise ValueError(f"Task {task!r} is not in this sequence: {', '.join(self.tasks)}.")
            return self.tasks.index(task)
        if isinstance(task, bool) or int(task) != task or not 0 <= task < len(self.tasks):
            raise ValueError(f"Task index {task!r} out of range for a sequence of {len(self.tasks)} tasks.")
        return int(task)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_type != "states" or obs.shape == self.frame_shape:
            return obs
        padded = np.zeros(self.frame_shape, dtype=obs.dtype)
        padded[: obs.shape[0]] = obs
        return padded

    def _update_last_frame(self) -> None:
        frame = self._envs[self._index].last_frame()
        if self.obs_type == "states" and frame.shape != self.frame_shape:
            frame = self._pad(frame)
            frame.flags.writeable = False
        self._last_frame = frame

    def _config(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "switch_every_frames": self.switch_every_frames,
            "cycle": self.cycle,
            "auto_switch": self.auto_switch,
        }


def make_continual_env(
    name: str | Sequence[str],
    switch_every_frames: int,
    obs_type: str = "pixels",
    frame_stack: int = 3,
    action_repeat: int = 2,
    seed: int = 0,
    fast_render: bool = False,
    img_size: int = 84,
    cycle: bool = False,
    auto_switch: bool = True,
) -> ContinualEnv:
    """Build a continual env from a ``SEQUENCES`` name or an explicit list of tasks.

    See ``ContinualEnv`` for the arguments.

    :raises ValueError: unknown sequence name, or tasks that cannot share one agent.
    """
    if isinstance(name, str):
        if name not in SEQUENCES:
            raise ValueError(f"Unknown continual sequence {name!r}. Valid sequences: {', '.join(SEQUENCES)}.")
        tasks = SEQUENCES[name]
    else:
        tasks = tuple(name)
    return ContinualEnv(
        tasks,
        switch_every_frames,
        obs_type=obs_type,
        frame_stack=frame_stack,
        action_repeat=action_repeat,
        seed=seed,
        img_size=img_size,
        fast_render=fast_render,
        cycle=cycle,
        auto_switch=auto_switch,
    )
