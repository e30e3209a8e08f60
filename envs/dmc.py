"""DeepMind Control as a ``gymnasium.Env`` for pixels or states, with exact save/restore.

The stack, in the order an action travels (it reproduces facebookresearch/drqv2's ``dmc.py``):

1. an action in [-1, 1] is rescaled linearly to the task's action bounds;
2. it is applied ``action_repeat`` times; rewards are summed and the repeat stops early when the
   episode ends;
3. the observation is taken once, after the last physics step: one 84x84 RGB render from camera 0
   (quadruped: camera 2), or the flattened state vector;
4. pixel frames are stacked on the channel axis; ``reset`` fills the stack with the first frame.

DMC's time limit ends an episode with discount 1, which is a truncation; discount 0 is a
termination. ``get_state`` / ``set_state`` capture everything the future depends on (task RNG,
MuJoCo integration state, per-episode model edits, step counters, frame stack) as torch tensors
and Python scalars, so a checkpoint loaded with ``torch.load(weights_only=True)`` resumes
bit-identically, mid-episode included.
"""

from __future__ import annotations

import os

# dm_control picks its OpenGL backend once, when it is first imported; EGL works headless on CPU
# (Mesa llvmpipe) and on NVIDIA GPUs, the two kinds of machine this project runs on.
os.environ.setdefault("MUJOCO_GL", "egl")

import collections  # noqa: E402
from collections.abc import Iterator, Mapping  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlplastic.errors import RunError  # noqa: E402

try:
    from dm_control import suite
    from dm_control.mujoco.engine import Camera
    from dm_control.rl.control import PhysicsError
except Exception as err:  # a broken backend fails at import; report it from make_env instead
    _DM_CONTROL_IMPORT_ERROR: Exception | None = err
else:
    _DM_CONTROL_IMPORT_ERROR = None

__all__ = ["TASKS", "DMCEnv", "make_env"]

#: The DrQ-v2 benchmark tasks (easy, medium, hard). Any other dm_control suite task is also
#: accepted as ``domain_task`` (e.g. ``point_mass_easy``).
TASKS: tuple[str, ...] = (
    # easy
    "cartpole_balance",
    "cartpole_balance_sparse",
    "cartpole_swingup",
    "cup_catch",
    "finger_spin",
    "hopper_stand",
    "pendulum_swingup",
    "walker_stand",
    "walker_walk",
    # medium
    "acrobot_swingup",
    "cartpole_swingup_sparse",
    "cheetah_run",
    "finger_turn_easy",
    "finger_turn_hard",
    "hopper_hop",
    "quadruped_walk",
    "quadruped_run",
    "reach_duplo",
    "reacher_easy",
    "reacher_hard",
    "walker_run",
    # hard
    "humanoid_stand",
    "humanoid_walk",
    "humanoid_run",
)

OBS_TYPES: tuple[str, ...] = ("pixels", "states")

# reach_duplo comes from dm_control.manipulation (a composer environment), not the suite. The
# reference loads the "_vision" variant and keeps only its "front_close" camera; the "_features"
# variant renders that camera bit-identically when asked, so we load it and render once per agent
# step ourselves instead of letting composer render on every control step.
_MANIPULATION_TASKS = {"reach_duplo": ("reach_duplo_features", "front_close")}
_MANIPULATION = "manipulation"

# The quadruped's camera 0 is too far away for 84x84 pixels; DrQ-v2 zooms in with camera 2.
_CAMERA_BY_DOMAIN = {"quadruped": 2}

_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


def _renderer_error(err: BaseException) -> RunError:
    """Turn an OpenGL start-up failure into a message that says which knob to turn."""
    backend = os.environ.get("MUJOCO_GL")
    return RunError(
        f"MuJoCo could not render with MUJOCO_GL={backend!r} ({type(err).__name__}: {err}). "
        "Set MUJOCO_GL before dm_control is first imported, e.g. `MUJOCO_GL=egl python train.py`: "
        "'egl' renders headless on CPU (Mesa EGL) and on NVIDIA GPUs; 'osmesa' is pure software "
        "and needs libosmesa6 (apt-get install libosmesa6); 'glfw' needs a display."
    )


def _require_dm_control() -> None:
    if _DM_CONTROL_IMPORT_ERROR is not None:
        raise _renderer_error(_DM_CONTROL_IMPORT_ERROR) from _DM_CONTROL_IMPORT_ERROR


def _suite_names() -> dict[str, tuple[str, str]]:
    names = {f"{domain}_{task}": (domain, task) for domain, task in suite.ALL_TASKS}
    # drqv2 writes ball_in_cup as "cup", the only benchmark domain whose name has underscores.
    for domain, task in suite.ALL_TASKS:
        if domain == "ball_in_cup":
            names[f"cup_{task}"] = (domain, task)
    return names


def _resolve_task(name: str) -> tuple[str, str]:
    """Map ``domain_task`` to the (domain, task) pair dm_control loads."""
    if name in _MANIPULATION_TASKS:
        return _MANIPULATION, name
    # Matching whole names (not splitting on "_") handles point_mass, humanoid_CMU, ball_in_cup.
    names = _suite_names()
    if name not in names:
        others = sorted(set(names) - set(TASKS))
        raise ValueError(
            f"Unknown task {name!r}. Valid tasks: {', '.join(TASKS)}; "
            f"also any dm_control suite task: {', '.join(others)}."
        )
    return names[name]


def _flatten(observation: Mapping) -> np.ndarray:
    # Key order is the task's own (an OrderedDict), so the layout is stable across runs.
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # Copy: callers pass views of live MuJoCo buffers, and the state must not change under them.
    return torch.from_numpy(np.array(array, copy=True))


def _to_numpy(value: torch.Tensor | np.ndarray | list) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class _ModelSnapshot:
    """The numeric ``MjModel`` arrays as compiled, before any episode edited them.

    Tasks write their per-episode randomisation into the model, not the data (reacher's target is
    ``geom_pos``, finger_turn's a ``site_pos``), so ``mjSTATE_INTEGRATION`` alone cannot restore
    an episode. Saving only the arrays that differ from this snapshot keeps checkpoints small:
    the full model carries megabytes of textures that never change.
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        self._arrays = {name: array.copy() for name, array in self._model_arrays(model)}

    @staticmethod
    def _model_arrays(model: mujoco.MjModel) -> Iterator[tuple[str, np.ndarray]]:
        for name in dir(model):
            if name.startswith("_"):
                continue
            value = getattr(model, name)
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.flags.writeable:
                yield name, value

    def diff(self, model: mujoco.MjModel) -> dict[str, np.ndarray]:
        """Arrays of ``model`` that no longer equal the snapshot (copies)."""
        return {
            name: array.copy()
            for name, array in self._model_arrays(model)
            if not np.array_equal(array, self._arrays[name])
        }

    def restore(self, model: mujoco.MjModel, diff: dict[str, np.ndarray]) -> None:
        """Make ``model`` equal the snapshot plus ``diff``."""
        for name, array in self._model_arrays(model):
            target = diff.get(name, self._arrays[name])
            if not np.array_equal(array, target):
                np.copyto(array, np.asarray(target, dtype=array.dtype).reshape(array.shape))


class DMCEnv(gym.Env):
    """A dm_control task as a ``gymnasium.Env`` with DrQ-v2's action repeat and frame stacking.

    Observations are uint8 ``(3 * frame_stack, img_size, img_size)`` stacks for pixels, or a
    float32 ``(D,)`` vector for states. Actions are float32 in [-1, 1]. An episode of DMC's 1000
    frames is ``1000 / action_repeat`` agent steps and ends with ``truncated=True``.

    :param task: ``domain_task`` name, one of ``TASKS`` or any dm_control suite task.
    :param obs_type: ``"pixels"`` or ``"states"``.
    :param frame_stack: number of frames stacked on the channel axis (pixels only).
    :param action_repeat: physics control steps per agent step.
    :param seed: seed of the task's random state, used by the first ``reset()``.
    :param img_size: height and width of rendered frames.
    :param fast_render: render without shadows and reflections (4-5x faster on CPU, but the agent
        sees different images than in the reference, so it is off by default).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        obs_type: str = "pixels",
        frame_stack: int = 3,
        action_repeat: int = 2,
        seed: int = 0,
        img_size: int = 84,
        fast_render: bool = False,
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"Unknown obs_type {obs_type!r}; allowed: {', '.join(OBS_TYPES)}.")
        for arg, value in (("frame_stack", frame_stack), ("action_repeat", action_repeat), ("img_size", img_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        _require_dm_control()
        domain, task_name = _resolve_task(task)

        self.task = task
        self.domain = domain
        self.task_name = task_name
        self.obs_type = obs_type
        self.frame_stack = int(frame_stack) if obs_type == "pixels" else 1
        self.action_repeat = int(action_repeat)
        self.img_size = int(img_size)
        self.fast_render = bool(fast_render)
        self.render_mode = "rgb_array"

        self._composer = domain == _MANIPULATION
        if self._composer:
            from dm_control import manipulation  # imported on demand: it is slow to import

            env_name, self.camera_id = _MANIPULATION_TASKS[task]
            self._env = manipulation.load(env_name, seed=seed)
            # Composer recompiles the model every episode; snapshot each fresh compilation.
            self._env.add_extra_hook("after_compile", self._on_compile)
        else:
            self._env = suite.load(domain, task_name, task_kwargs={"random": seed}, visualize_reward=False)
            self.camera_id = _CAMERA_BY_DOMAIN.get(domain, 0)
        self._model_snapshot = _ModelSnapshot(self.physics.model)

        # The same affine map as dm_control's action_scale.Wrapper, in float64 like the reference.
        spec = self._env.action_spec()
        low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
        self._action_scale = (high - low) / 2.0
        self._action_offset = low + self._action_scale
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)

        if obs_type == "pixels":
            self.frame_shape: tuple[int, ...] = (3, self.img_size, self.img_size)
            stacked = (3 * self.frame_stack, self.img_size, self.img_size)
            self.observation_space = gym.spaces.Box(0, 255, shape=stacked, dtype=np.uint8)
        else:
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            self.frame_shape = (dim,)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self.metadata = {**self.metadata, "render_fps": round(1.0 / (self._env.control_timestep() * action_repeat))}

        self._camera: Camera | None = None
        self._camera_physics = None
        self._closed = False
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=self.frame_stack)
        self._needs_reset = True
        if obs_type == "pixels":
            # Fail here, with advice, rather than deep inside the first training step.
            try:
                self._render_rgb()
            except Exception as err:
                raise _renderer_error(err) from err

    # ---------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode.

        :param seed: if given, reseed the task's random state as ``np.random.RandomState(seed)``
            (the same as constructing with that seed); otherwise continue its stream.
        :param options: unused.
        :return: the first observation (stack of copies of the first frame) and an empty info.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._random_state().seed(seed)
        time_step = self._env.reset()
        self._frames.clear()
        self._observe(time_step.observation)
        while len(self._frames) < self.frame_stack:
            self._frames.append(self._frames[-1])
        self._needs_reset = False
        return self._stacked(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` for ``action_repeat`` control steps and observe once.

        :param action: float array in [-1, 1] of shape ``action_space.shape``.
        :return: observation, summed reward, terminated (discount 0), truncated (time limit),
            info with ``"discount"`` (the environment's discount of the last control step).
        """
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset().")
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(f"Action has shape {action.shape}; expected {self.action_space.shape} for {self.task}.")
        scaled = self._action_offset + self._action_scale * action.astype(np.float64)

        reward = 0.0
        for _ in range(self.action_repeat):
            try:
                time_step = self._env.step(scaled)
            except PhysicsError as err:
                raise RunError(
                    f"the MuJoCo simulation of {self.task} became unstable ({err}) under the action "
                    f"{action.tolist()}: the agent's actions diverged"
                ) from None
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        discount = float(time_step.discount)
        terminated = bool(time_step.last() and discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        self._needs_reset = time_step.last()

        self._observe(time_step.observation)
        return self._stacked(), reward, terminated, truncated, {"discount": discount}

    def render(self) -> np.ndarray:
        """The current view as an ``(img_size, img_size, 3)`` uint8 array.

        For pixels this is the newest observed frame (no extra render); for states a fresh render
        from the same camera.
        """
        if self.obs_type == "pixels" and self._frames:
            return np.ascontiguousarray(self._frames[-1].transpose(1, 2, 0))
        try:
            return self._render_rgb()
        except Exception as err:
            raise _renderer_error(err) from err

    def close(self) -> None:
        """Free the camera's scene and the renderer's GL contexts (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
        physics = self._env.physics
        if physics is not None:
            physics.free()

    # ---------------------------------------------------------------- for the trainer

    @property
    def physics(self):
        """The live ``dm_control`` Physics (replaced every episode for composer tasks)."""
        return self._env.physics

    def last_frame(self) -> np.ndarray:
        """The newest single frame: uint8 ``frame_shape`` for pixels, float32 state vector.

        The replay buffer stores single frames and stacks at sample time; the returned array is
        read-only and shared, so copy it before modifying.
        """
        return self._frames[-1]

    def get_state(self) -> dict[str, Any]:
        """Everything the future depends on, as torch tensors and Python scalars.

        Safe for ``torch.save`` and ``torch.load(weights_only=True)``; ``set_state`` on an env
        made with the same arguments (any seed) continues bit-identically, mid-episode included.
        """
        physics = self.physics
        integration = np.empty(mujoco.mj_stateSize(physics.model.ptr, _INTEGRATION), np.float64)
        mujoco.mj_getState(physics.model.ptr, physics.data.ptr, integration, _INTEGRATION)
        kind, keys, pos, has_gauss, cached_gaussian = self._random_state().get_state()
        return {
            "config": self._config(),
            "random_state": (kind, _to_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)),
            "integration": _to_tensor(integration),
            "model_diff": {k: _to_tensor(v) for k, v in self._model_snapshot.diff(physics.model).items()},
            "counters": self._env_counters(),
            "frames": [_to_tensor(f) for f in self._frames],
            "needs_reset": self._needs_reset,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` dict (tensors, or arrays/lists) into this env."""
        if state["config"] != self._config():
            raise ValueError(f"State was saved from an env with {state['config']}, this env has {self._config()}.")
        if self._composer and self._env._reset_next_step:
            # A composer env is only fully built (observation buffers, per-episode model) by a reset.
            self._env.reset()
        physics = self.physics
        diff = {k: _to_numpy(v) for k, v in state["model_diff"].items()}
        self._model_snapshot.restore(physics.model, diff)
        integration = _to_numpy(state["integration"]).astype(np.float64)
        mujoco.mj_setState(physics.model.ptr, physics.data.ptr, integration, _INTEGRATION)
        # Recompute the derived quantities (positions, contacts) that the next step starts from.
        physics.forward()

        kind, keys, pos, has_gauss, cached_gaussian = state["random_state"]
        self._random_state().set_state(
            (kind, _to_numpy(keys).astype(np.uint32), int(pos), int(has_gauss), float(cached_gaussian))
        )
        self._set_env_counters(state["counters"])
        self._frames.clear()
        for frame in state["frames"]:
            self._keep(np.array(_to_numpy(frame), dtype=self._frame_dtype()))
        self._needs_reset = bool(state["needs_reset"])

    # ---------------------------------------------------------------- internals

    def _observe(self, observation: Mapping) -> None:
        if self.obs_type == "pixels":
            self._keep(np.ascontiguousarray(self._render_rgb().transpose(2, 0, 1)))
        else:
            self._keep(_flatten(observation))

    def _keep(self, frame: np.ndarray) -> None:
        # Read-only, so the frame shared by the stack and last_frame() cannot be edited in place.
        frame.flags.writeable = False
        self._frames.append(frame)

    def _stacked(self) -> np.ndarray:
        if self.obs_type == "states":
            return self._frames[-1].copy()
        return np.concatenate(self._frames, axis=0)

    def _frame_dtype(self) -> type:
        return np.uint8 if self.obs_type == "pixels" else np.float32

    def _render_rgb(self) -> np.ndarray:
        """Render (H, W, 3) uint8 from the task camera; a new array each call."""
        # One cached Camera renders the same pixels as physics.render() but skips rebuilding the
        # scene every frame (~30% faster at 84x84); composer swaps its Physics each episode.
        if self._camera is None or self._camera_physics is not self.physics:
            if self._camera is not None:
                self._camera.scene.free()
            self._camera = Camera(self.physics, self.img_size, self.img_size, self.camera_id)
            self._camera_physics = self.physics
            if self.fast_render:
                self._camera.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
                self._camera.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        # Camera.render returns a view of its reusable pixel buffer.
        return self._camera.render().copy()

    def _random_state(self) -> np.random.RandomState:
        return self._env.random_state if self._composer else self._env.task.random

    def _on_compile(self, physics, random_state: np.random.RandomState) -> None:
        self._model_snapshot = _ModelSnapshot(physics.model)

    def _env_counters(self) -> dict[str, Any]:
        env = self._env
        if self._composer:
            return {
                "reset_next_step": bool(env._reset_next_step),
                "episode_step_count": int(env._hooks._episode_step_count),
            }
        return {"reset_next_step": bool(env._reset_next_step), "step_count": int(env._step_count)}

    def _set_env_counters(self, counters: dict[str, Any]) -> None:
        env = self._env
        env._reset_next_step = bool(counters["reset_next_step"])
        if self._composer:
            env._hooks._episode_step_count = int(counters["episode_step_count"])
        else:
            env._step_count = int(counters["step_count"])

    def _config(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "obs_type": self.obs_type,
            "frame_stack": self.frame_stack,
            "action_repeat": self.action_repeat,
            "img_size": self.img_size,
            "fast_render": self.fast_render,
        }


def make_env(
    task: str,
    obs_type: str = "pixels",
    frame_stack: int = 3,
    action_repeat: int = 2,
    seed: int = 0,
    img_size: int = 84,
    fast_render: bool = False,
) -> DMCEnv:
    """Build a DMC environment the way DrQ-v2 does (see ``DMCEnv`` for the arguments).

    :raises ValueError: unknown task or obs_type.
    :raises RuntimeError: no OpenGL renderer could start (the message says which MUJOCO_GL to try).
    """
    return DMCEnv(
        task,
        obs_type=obs_type,
        frame_stack=frame_stack,
        action_repeat=action_repeat,
        seed=seed,
        img_size=img_size,
        fast_render=fast_render,
    )
