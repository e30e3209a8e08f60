"""Hydra entry point: compose the config, build the pieces, hand them to the trainer.

    python train.py task=cheetah_run                       # the DrQ-v2 configuration
    python train.py task=walker_walk aug=none rr.ratio=2 seed=3

Re-running the same command resumes the run in its run dir (or does nothing if it finished).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from agents.drqv2 import DrQV2Agent
from envs.dmc import TASKS, make_env
from rlplastic.augment import AUGMENTATIONS, make_augmentation
from rlplastic.checkpoint import read_complete, seed_everything
from rlplastic.monitor import make_monitor
from rlplastic.replay import ReplayBuffer
from rlplastic.rr import make_rr_controller
from rlplastic.rundir import run_dir_for, variant_name
from rlplastic.system import tune_malloc
from rlplastic.trainer import Trainer, TrainerConfig

AGENTS = {"drqv2": DrQV2Agent}
EVAL_SEED_OFFSET = 1000


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; anything else must be a device torch can use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here: use device=cpu or device=auto")
    return device


def validate(cfg: DictConfig) -> None:
    """Fail before building anything, one clear message per bad value."""
    if cfg.get("task_name") is None:
        raise ValueError(f"that task file sets no task_name (a group file?): choose task= one of {list(TASKS)}")
    if cfg.task_name not in TASKS:
        raise ValueError(f"unknown task {cfg.task_name!r}: valid tasks are {list(TASKS)}")
    if cfg.obs_type not in ("pixels", "states"):
        raise ValueError(f"obs_type={cfg.obs_type!r} is not supported: allowed are ['pixels', 'states']")
    if cfg.aug.name not in AUGMENTATIONS:
        raise ValueError(f"unknown aug {cfg.aug.name!r}: allowed are {sorted(AUGMENTATIONS)}")
    if cfg.obs_type == "states" and cfg.aug.name != "none":
        raise ValueError(f"aug={cfg.aug.name} augments images but obs_type=states: use aug=none with states")
    if cfg.agent.name not in AGENTS:
        raise ValueError(f"unknown agent {cfg.agent.name!r}: allowed are {sorted(AGENTS)}")
    for key in ("batch_size", "replay_buffer_size", "nstep", "frame_stack"):
        if cfg[key] <= 0:
            raise ValueError(f"{key}={cfg[key]} must be > 0")
    if not 0.0 < cfg.discount <= 1.0:
        raise ValueError(f"discount={cfg.discount} must be in (0, 1]")


def _changes_config(override: str, task_override: str) -> bool:
    base = hydra.compose(config_name="config", overrides=[task_override])
    try:
        changed = hydra.compose(config_name="config", overrides=[task_override, override])
    except Exception:  # noqa: BLE001 - an override Hydra cannot apply alone still names the variant
        return True
    return OmegaConf.to_container(base, resolve=True) != OmegaConf.to_container(changed, resolve=True)


def resolve_run_dir(cfg: DictConfig) -> Path:
    """The explicit ``run_dir``, or ``<run_root>/<task>/<variant>/seed<k>`` from the overrides."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    overrides = list(HydraConfig.get().overrides.task)
    task_override = f"task={HydraConfig.get().runtime.choices['task']}"
    variant = variant_name(overrides, lambda o: _changes_config(o, task_override))
    return run_dir_for(cfg.run_root, cfg.task_name, variant, cfg.seed)


def build_trainer(cfg: DictConfig, run_dir: Path) -> Trainer:
    """Construct env, eval env, augmentation, agent, replay, RR controller and monitor from the config."""
    validate(cfg)
    device = resolve_device(cfg.device)
    rr = make_rr_controller(**OmegaConf.to_container(cfg.rr))
    monitor = make_monitor(**OmegaConf.to_container(cfg.monitor, resolve=True))
    if rr.signals_needed and monitor is None:
        raise ValueError(
            f"rr={cfg.rr.name} reads {list(rr.signals_needed)} from the plasticity monitor, but monitor=off: "
            "use monitor=default or monitor=full"
        )
    trainer_config = TrainerConfig(
        num_train_frames=cfg.num_train_frames, num_seed_frames=cfg.num_seed_frames,
        action_repeat=cfg.action_repeat, eval_every_frames=cfg.eval_every_frames,
        num_eval_episodes=cfg.num_eval_episodes, batch_size=cfg.batch_size,
        log_every_frames=cfg.log_every_frames, save_every_frames=cfg.save_every_frames,
        save_replay=cfg.save_replay, save_video=cfg.save_video, use_tb=cfg.use_tb, use_csv=cfg.use_csv,
        progress=cfg.progress,
    )  # fmt: skip
    seed_everything(cfg.seed)
    env_kwargs = dict(obs_type=cfg.obs_type, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                      fast_render=cfg.fast_render)  # fmt: skip
    train_env = make_env(cfg.task_name, seed=cfg.seed, **env_kwargs)
    eval_env = make_env(cfg.task_name, seed=cfg.seed + EVAL_SEED_OFFSET, **env_kwargs)

    aug_kwargs: dict[str, Any] = OmegaConf.to_container(cfg.aug)
    augmentation = make_augmentation(aug_kwargs.pop("name"), **aug_kwargs)
    agent_kwargs: dict[str, Any] = OmegaConf.to_container(cfg.agent, resolve=True)
    agent_cls = AGENTS[agent_kwargs.pop("name")]
    agent = agent_cls(
        obs_shape=train_env.observation_space.shape, action_shape=train_env.action_space.shape,
        device=device, obs_type=cfg.obs_type, augmentation=augmentation, **agent_kwargs,
    )  # fmt: skip
    replay = ReplayBuffer(
        frame_shape=train_env.frame_shape, action_shape=train_env.action_space.shape,
        capacity=cfg.replay_buffer_size, frame_stack=train_env.frame_stack, nstep=cfg.nstep,
        discount=cfg.discount, frame_dtype=np.uint8 if cfg.obs_type == "pixels" else np.float32, seed=cfg.seed,
    )  # fmt: skip
    return Trainer(
        agent, train_env, eval_env, replay, rr, run_dir, trainer_config, device=device, seed=cfg.seed, monitor=monitor
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip a finished run) and return the trainer's summary."""
    tune_malloc()
    validate(cfg)
    run_dir = resolve_run_dir(cfg)
    finished = read_complete(run_dir)
    if finished is not None:
        print(f"rlplastic: {run_dir} already finished at frame {finished['frame']}; nothing to do")
        return finished
    trainer = build_trainer(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    print(f"rlplastic: run dir {run_dir}")
    summary = trainer.run()
    print(f"rlplastic: {json.dumps(summary)}")
    return summary


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ValueError as error:  # bad input: one clear message, no traceback
        sys.exit(f"rlplastic: error: {error}")


if __name__ == "__main__":
    main()
