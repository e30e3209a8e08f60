"""Hydra entry point: compose the config, build the pieces, hand them to the trainer.

    python train.py task=cheetah_run                       # the DrQ-v2 configuration
    python train.py task=walker_walk aug=none rr.ratio=2 seed=3

Re-running the same command resumes the run in its run dir (or does nothing if it finished).
Exit codes: 0 finished; 1 an error (one ``rlplastic: error: …`` line; ``RLPLASTIC_DEBUG=1`` adds the
traceback); 130 / 143 interrupted by SIGINT / SIGTERM after saving a checkpoint (re-run to resume).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from agents.drqv2 import DrQV2Agent
from agents.sac import SACAgent
from rlplastic.augment import AUGMENTATIONS, make_augmentation
from rlplastic.checkpoint import latest_checkpoint, read_complete, seed_everything
from rlplastic.errors import RunError
from rlplastic.interventions.intervention_set import make_interventions
from rlplastic.monitor import make_monitor
from rlplastic.monitor.signals import check_measured
from rlplastic.provenance import append_start, start_record
from rlplastic.registry import Registry
from rlplastic.replay import estimated_bytes
from rlplastic.replay_device import make_replay, resolve_replay_device
from rlplastic.rr import CONTROLLERS, make_rr_controller
from rlplastic.rundir import CONFIG_NAME, check_same_experiment, override_key, run_dir_for, variant_name
from rlplastic.runlock import RunDirLock
from rlplastic.system import tune_malloc
from rlplastic.trainer import Trainer, TrainerConfig

try:
    from envs.continual import SEQUENCES, make_continual_env
    from envs.dmc import TASKS, make_env
except RuntimeError as _import_error:  # mujoco refuses an unknown MUJOCO_GL as soon as it is imported
    if __name__ != "__main__":
        raise
    sys.exit(f"rlplastic: error: {_import_error}: use MUJOCO_GL=egl (headless), osmesa (software) or glfw (display)")

AGENTS: Registry[Any] = Registry("agent", "agent")
"""Agent classes by config name (``configs/agent/<name>.yaml``); built with :data:`AGENT_CONTEXT` + the agent group."""
AGENTS.register("drqv2")(DrQV2Agent)
AGENTS.register("sac")(SACAgent)
#: Constructor arguments the trainer supplies to every agent; the ``agent`` group may not set them.
AGENT_CONTEXT = ("obs_shape", "action_shape", "device", "obs_type", "augmentation", "compile")
EVAL_SEED_OFFSET = 1000


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; else ``cpu``, ``cuda`` or ``cuda:N`` where that device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "use auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a torch device: {allowed}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not supported (rlplastic trains on CPU or CUDA): {allowed}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here: use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist here")
    return device


#: Keys that count things: integers, or floats with an integral value (Hydra reads ``1e6`` as a float).
INT_KEYS = (
    "seed", "batch_size", "replay_buffer_size", "nstep", "frame_stack", "action_repeat", "num_train_frames",
    "num_seed_frames", "eval_every_frames", "num_eval_episodes", "log_every_frames", "save_every_frames",
    "feature_dim", "hidden_dim", "num_expl_steps",
)  # fmt: skip
#: The OpenGL backends MuJoCo can render with.
RENDER_BACKENDS = {"egl": "headless (default)", "osmesa": "software, needs libosmesa6", "glfw": "needs a display"}
#: Share of the available memory the replay may take (the rest: networks, batches, the checkpoint copy).
MEMORY_SHARE = 0.8


def normalize_counts(cfg: DictConfig) -> None:
    """Turn integral floats of :data:`INT_KEYS` into ints in place; refuse anything else by its key."""
    for key in INT_KEYS:
        value = cfg.get(key)
        if isinstance(value, float) and value.is_integer():
            cfg[key] = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}={value!r} must be an integer (e.g. {key}=1000 or {key}=1e6)")


def check_renderer(cfg: DictConfig) -> None:
    """Refuse a ``MUJOCO_GL`` that cannot work here before dm_control tries it."""
    if cfg.obs_type != "pixels" and not cfg.save_video:
        return
    backend = os.environ.get("MUJOCO_GL", "egl")
    choices = ", ".join(f"{name} ({what})" for name, what in RENDER_BACKENDS.items())
    if backend not in RENDER_BACKENDS:
        raise ValueError(f"MUJOCO_GL={backend!r} is not a MuJoCo rendering backend: use one of {choices}")
    if backend == "glfw" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise ValueError("MUJOCO_GL=glfw needs a display, and DISPLAY is not set: use MUJOCO_GL=egl (headless)")
    if backend == "osmesa":
        import ctypes.util

        if ctypes.util.find_library("OSMesa") is None:
            raise ValueError(
                "MUJOCO_GL=osmesa needs libOSMesa, which is not installed: apt-get install libosmesa6, "
                "or use MUJOCO_GL=egl (headless)"
            )


def available_memory() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (``None`` where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(cfg: DictConfig, frame_shape: tuple[int, ...], replay_nbytes: int) -> None:
    """Refuse a host replay (and batches) that cannot fit in this machine's available memory, before allocating.

    Args:
        replay_nbytes: what the replay allocates in host memory (0 when it lives on the GPU).
    """
    stack = int(np.prod(frame_shape)) * cfg.frame_stack * (1 if cfg.obs_type == "pixels" else 4)
    batches = 2 * cfg.batch_size * stack * 5  # obs and next_obs, as sampled and as float32
    need = replay_nbytes + batches
    free = available_memory()
    if free is not None and need > MEMORY_SHARE * free:
        per_step = max(replay_nbytes // cfg.replay_buffer_size, 1)
        fits = int(max(MEMORY_SHARE * free - batches, 0) // per_step)
        raise ValueError(
            f"replay_buffer_size={cfg.replay_buffer_size} with batch_size={cfg.batch_size} needs about "
            f"{need / 2**30:.1f} GiB ({cfg.obs_type}), but {free / 2**30:.1f} GiB of memory are available here "
            f"(at most {MEMORY_SHARE:.0%} may go to replay and batches): use replay_buffer_size<={fits:.3g} "
            "or a machine with more memory"
        )


def group_settings(group: DictConfig) -> dict[str, Any]:
    """A config group's settings without its ``name``: the keyword arguments of its builder."""
    return {key: value for key, value in OmegaConf.to_container(group, resolve=True).items() if key != "name"}


def validate(cfg: DictConfig) -> None:
    """Fail before building anything, one clear message per bad value (integral floats become ints).

    Each value is checked in one place. The registries' own checks (group names, their keys against the
    constructors) run here too, so that a typo fails before the envs are built; values that only a
    component understands are checked by that component when it is built, in its own words, prefixed
    with its config key (``agent.drqv2: hidden_dim=0 must be > 0``, ``aug.shift: pad must be ...``).
    """
    normalize_counts(cfg)
    if cfg.get("task_name") is None:
        raise ValueError(f"that task file sets no task_name (a group file?): choose task= one of {list(TASKS)}")
    if cfg.task_name not in TASKS and cfg.task_name not in SEQUENCES:
        raise ValueError(
            f"unknown task {cfg.task_name!r}: valid tasks are {list(TASKS)}, continual sequences {list(SEQUENCES)}"
        )
    continual = cfg.get("continual")
    if (cfg.task_name in SEQUENCES) != (continual is not None):
        raise ValueError(
            f"task_name={cfg.task_name!r} with continual={continual}: a continual sequence needs a continual "
            "block (use task=<sequence>), and a single task must have continual=null"
        )
    every = None if continual is None else continual.get("switch_every_frames")
    if continual is not None and (not isinstance(every, int) or isinstance(every, bool) or every <= 0):
        raise ValueError(f"continual.switch_every_frames={every} must be an int > 0")
    if cfg.replay_device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"replay_device={cfg.replay_device!r} is not supported: allowed are auto, cpu, cuda")
    if cfg.replay_prefetch not in ("auto", True, False):
        raise ValueError(f"replay_prefetch={cfg.replay_prefetch!r} is not supported: allowed are auto, true, false")
    if cfg.obs_type not in ("pixels", "states"):
        raise ValueError(f"obs_type={cfg.obs_type!r} is not supported: allowed are ['pixels', 'states']")
    AUGMENTATIONS.check(cfg.aug.name, group_settings(cfg.aug))
    if cfg.obs_type == "states" and cfg.aug.name != "none":
        raise ValueError(f"aug={cfg.aug.name} augments images but obs_type=states: use aug=none with states")
    AGENTS.check(cfg.agent.name, group_settings(cfg.agent), AGENT_CONTEXT)
    CONTROLLERS.check(cfg.rr.name, group_settings(cfg.rr))
    for key in ("batch_size", "replay_buffer_size", "nstep", "frame_stack"):
        if cfg[key] <= 0:
            raise ValueError(f"{key}={cfg[key]} must be > 0")
    if cfg.batch_size > cfg.replay_buffer_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} is larger than the replay can ever hold "
            f"(replay_buffer_size={cfg.replay_buffer_size}): lower batch_size or raise replay_buffer_size"
        )
    resolve_device(cfg.device)
    if not isinstance(cfg.get("compile", False), bool):
        raise ValueError(f"compile={cfg.compile!r} must be true or false")
    check_renderer(cfg)
    if not 0.0 < cfg.discount <= 1.0:
        raise ValueError(f"discount={cfg.discount} must be in (0, 1]")
    if cfg.num_expl_steps < 0:
        raise ValueError(f"num_expl_steps={cfg.num_expl_steps} must be >= 0")
    if not (isinstance(cfg.lr, (int, float)) and 0.0 < cfg.lr < float("inf")):
        raise ValueError(f"lr={cfg.lr!r} must be a number > 0")
    if not (isinstance(cfg.critic_target_tau, (int, float)) and 0.0 < cfg.critic_target_tau <= 1.0):
        raise ValueError(f"critic_target_tau={cfg.critic_target_tau!r} must be in (0, 1]")
    if not (isinstance(cfg.stddev_clip, (int, float)) and cfg.stddev_clip >= 0.0):
        raise ValueError(f"stddev_clip={cfg.stddev_clip!r} must be a number >= 0")
    nc_reg = (cfg.get("intervention") or {}).get("nc_reg")
    if nc_reg is not None and cfg.batch_size < nc_reg.get("num_bins", 10):
        raise ValueError(
            f"intervention.nc_reg.num_bins={nc_reg.get('num_bins', 10)} TD-target bins need at least that many "
            f"transitions per batch, but batch_size={cfg.batch_size}: lower num_bins or raise batch_size"
        )


def _changes_config(override: str, task_override: str) -> bool:
    base = hydra.compose(config_name="config", overrides=[task_override])
    try:
        changed = hydra.compose(config_name="config", overrides=[task_override, override])
    except Exception:  # noqa: BLE001 - an override Hydra cannot apply alone still names the variant
        return True
    return OmegaConf.to_container(base, resolve=True) != OmegaConf.to_container(changed, resolve=True)


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def resolve_run_dir(cfg: DictConfig) -> Path:
    """The explicit ``run_dir``, or ``<root>/<task>/<variant>/seed<k>`` from the overrides.

    ``<root>`` is ``run_root``, or in a sweep (``-m``) the sweep dir ``<sweep_root>/<sweep_name>``. In a
    sweep the variant names only the overrides that vary across its jobs: what every job shares (e.g.
    ``+experiment=aug_rr_smoke num_train_frames=4000``) belongs to the sweep, and is in each run's
    ``config.yaml``.
    """
    if cfg.run_dir:
        return Path(cfg.run_dir)
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if _in_sweep():
        shared = _shared_sweep_keys(Path(hydra_cfg.sweep.dir))
        overrides = [o for o in overrides if override_key(o) not in shared]
    task_override = f"task={hydra_cfg.runtime.choices['task']}"
    variant = variant_name(overrides, lambda o: _changes_config(o, task_override))
    root = hydra_cfg.sweep.dir if _in_sweep() else cfg.run_root
    return run_dir_for(root, cfg.task_name, variant, cfg.seed)


def _shared_sweep_keys(sweep_dir: Path) -> set[str]:
    """Keys the sweep command set to one value for every job, read from Hydra's ``multirun.yaml``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = sweep_dir / "multirun.yaml"
    if not saved.exists():
        return set()
    command = list(OmegaConf.load(saved).hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(command)
    return {override_key(o.input_line) for o in parsed if not o.is_sweep_override()}


def configure_threads(setting: int | str) -> int:
    """Set torch's CPU threads: an int, or ``auto`` (torch's default; in a local sweep, cores / parallel jobs).

    Parallel jobs that each use every core slow each other down several-fold (OpenMP threads spin), so
    a local sweep gives each of its ``n_jobs`` workers an equal share of the cores.
    """
    if setting == "auto":
        if not _in_sweep():
            return torch.get_num_threads()
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        cores = os.cpu_count() or 1
        if not isinstance(n_jobs, int) or n_jobs == 0:
            return torch.get_num_threads()  # not a local parallel launcher (e.g. SLURM: one job per allocation)
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        threads = max(1, cores // parallel)
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        threads = setting
    else:
        raise ValueError(f"num_threads={setting!r} must be auto or an int > 0")
    torch.set_num_threads(threads)
    return threads


def build_trainer(cfg: DictConfig, run_dir: Path) -> Trainer:
    """Construct env, eval env, augmentation, agent, replay, RR controller, monitor and interventions."""
    validate(cfg)
    device = resolve_device(cfg.device)
    rr = make_rr_controller(**OmegaConf.to_container(cfg.rr, resolve=True))
    monitor = make_monitor(**OmegaConf.to_container(cfg.monitor, resolve=True))
    augmentation = make_augmentation(cfg.aug.name, **group_settings(cfg.aug))  # draws nothing: before the envs
    if rr.signals_needed and monitor is None:
        raise ValueError(
            f"rr={cfg.rr.name} reads {list(rr.signals_needed)} from the plasticity monitor, but monitor=off: "
            "use monitor=default or monitor=full"
        )
    for signal_name in rr.signals_needed:  # a signal the monitor never measures would leave RR where it starts
        check_measured(signal_name, monitor.config, f"rr={cfg.rr.name}")
    trainer_config = TrainerConfig(
        num_train_frames=cfg.num_train_frames, num_seed_frames=cfg.num_seed_frames,
        action_repeat=cfg.action_repeat, eval_every_frames=cfg.eval_every_frames,
        num_eval_episodes=cfg.num_eval_episodes, batch_size=cfg.batch_size,
        log_every_frames=cfg.log_every_frames, save_every_frames=cfg.save_every_frames,
        save_replay=cfg.save_replay, save_video=cfg.save_video, use_tb=cfg.use_tb, use_csv=cfg.use_csv,
        progress=cfg.progress, check_finite=cfg.check_finite,
        eval_all_tasks=bool(cfg.get("continual") and cfg.continual.get("eval_all_tasks", False)),
        prefetch=device.type == "cuda" if cfg.replay_prefetch == "auto" else cfg.replay_prefetch,
    )  # fmt: skip
    seed_everything(cfg.seed)
    env_kwargs = dict(obs_type=cfg.obs_type, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                      fast_render=cfg.fast_render)  # fmt: skip
    if cfg.get("continual") is not None:
        schedule = dict(switch_every_frames=cfg.continual.switch_every_frames, cycle=cfg.continual.get("cycle", False))
        train_env = make_continual_env(cfg.task_name, seed=cfg.seed, **schedule, **env_kwargs)
        # The eval env never follows its own frames: the trainer points it at a task before each evaluation.
        eval_env = make_continual_env(
            cfg.task_name, seed=cfg.seed + EVAL_SEED_OFFSET, auto_switch=False, **schedule, **env_kwargs
        )
    else:
        train_env = make_env(cfg.task_name, seed=cfg.seed, **env_kwargs)
        eval_env = make_env(cfg.task_name, seed=cfg.seed + EVAL_SEED_OFFSET, **env_kwargs)

    frame_dtype = np.uint8 if cfg.obs_type == "pixels" else np.float32
    nbytes = estimated_bytes(cfg.replay_buffer_size, train_env.frame_shape, train_env.action_space.shape, frame_dtype)
    placement = resolve_replay_device(cfg.replay_device, device, nbytes)
    print(f"rlplastic: {placement.reason}")
    check_memory(cfg, train_env.frame_shape, nbytes if placement.device.type == "cpu" else 0)
    agent = AGENTS.build(
        cfg.agent.name, group_settings(cfg.agent), obs_shape=train_env.observation_space.shape,
        action_shape=train_env.action_space.shape, device=device, obs_type=cfg.obs_type, augmentation=augmentation,
        compile=bool(cfg.get("compile", False)),
    )  # fmt: skip
    replay = make_replay(
        frame_shape=train_env.frame_shape, action_shape=train_env.action_space.shape,
        capacity=cfg.replay_buffer_size, frame_stack=train_env.frame_stack, nstep=cfg.nstep,
        discount=cfg.discount, frame_dtype=frame_dtype, seed=cfg.seed, storage_device=placement.device,
    )  # fmt: skip
    intervention_cfg = OmegaConf.to_container(cfg.intervention, resolve=True) if cfg.get("intervention") else {}
    interventions = make_interventions(agent, intervention_cfg, seed=cfg.seed, monitor=monitor)
    return Trainer(
        agent, train_env, eval_env, replay, rr, run_dir, trainer_config, device=device, seed=cfg.seed,
        monitor=monitor, interventions=interventions,
    )  # fmt: skip


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip a finished run) and return the trainer's summary.

    The run dir is locked for the whole call (:class:`~rlplastic.runlock.RunDirLock`).
    """
    tune_malloc()
    validate(cfg)
    configure_threads(cfg.num_threads)
    run_dir = resolve_run_dir(cfg)
    with RunDirLock(run_dir):
        resolved = OmegaConf.to_container(cfg, resolve=True)
        check_same_experiment(run_dir, resolved)
        finished = read_complete(run_dir)
        if finished is not None:
            print(f"rlplastic: {run_dir} already finished at frame {finished['frame']}; nothing to do")
            return finished
        trainer = build_trainer(cfg, run_dir)
        (run_dir / CONFIG_NAME).write_text(OmegaConf.to_yaml(resolved))
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        last = latest_checkpoint(run_dir)
        append_start(run_dir, start_record(sys.argv, overrides, Path(__file__).resolve().parent,
                                           None if last is None else last.frame))  # fmt: skip
        print(f"rlplastic: run dir {run_dir}\nrlplastic: watch it with: {tensorboard_command(run_dir)}")
        if cfg.logger.wandb:
            trainer.wandb = make_wandb_sink(cfg, run_dir, resolved)
        summary = trainer.run()
    print(f"rlplastic: {json.dumps(summary)}")  # one machine-readable line (also in run_complete.json when complete)
    print(readable_summary(summary, run_dir))
    return summary


def make_wandb_sink(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any]) -> Any:
    """The W&B mirror of this run's logs (``logger.wandb=true``), one W&B run per run dir."""
    from rlplastic.wandb_sink import WandbSink

    variant = run_dir.parent.name
    return WandbSink(
        run_dir, resolved, project=cfg.logger.wandb_project, entity=cfg.logger.wandb_entity,
        mode=cfg.logger.wandb_mode, run_name=f"{cfg.task_name}/{variant}/{run_dir.name}", resume_id=None,
        group=f"{cfg.task_name}/{variant}", tags=[cfg.task_name, variant],
    )  # fmt: skip


def tensorboard_command(run_dir: Path) -> str:
    """The command that opens this run in TensorBoard (the venv's tensorboard when there is one)."""
    local = Path(sys.executable).parent / "tensorboard"
    return f"{local if local.exists() else 'tensorboard'} --logdir {run_dir}"


def readable_summary(summary: dict[str, Any], run_dir: Path) -> str:
    """What a person reads at the end of a run: how it ended, the final return, where everything is."""
    final = summary.get("final_eval_return")
    result = "no evaluation" if final is None else f"final eval return {final:.4g}"
    how = "finished" if summary["status"] == "complete" else f"stopped ({summary['status']})"
    resumed = summary.get("resumed_from_frame")
    lines = [
        f"rlplastic: {how} at frame {summary['frame']:,} after {summary['episode']} episodes; {result}"
        + (f" (resumed from frame {resumed:,})" if resumed else ""),
        f"rlplastic: logs in {run_dir} (scalars.csv, tb/, videos/); {tensorboard_command(run_dir)}",
    ]
    return "\n".join(lines)


#: Exit status of a run stopped by a signal: the shell's 128 + signal number.
INTERRUPTED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def error_message(error: BaseException) -> str:
    """The one line a user sees for ``error``: what went wrong, and what to do."""
    if isinstance(error, (ValueError, RunError)):
        return str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {error.filename}" if error.filename else ""
        return (f"no space left on the device{where}. Free some space and re-run the same command: it resumes "
                "from the last checkpoint")  # fmt: skip
    if isinstance(error, MemoryError):
        return "out of memory: lower replay_buffer_size or batch_size, or use a machine with more memory"
    if isinstance(error, OSError):
        return f"{error.strerror or error} ({error.filename})" if error.filename else str(error)
    return (f"unexpected {type(error).__name__}: {error} (a bug in rlplastic or a library it uses; "
            "RLPLASTIC_DEBUG=1 shows the traceback)")  # fmt: skip


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        summary = run(cfg)
    except Exception as error:  # noqa: BLE001 - one line per failure, no traceback (RLPLASTIC_DEBUG shows it)
        if os.environ.get("RLPLASTIC_DEBUG"):
            traceback.print_exc()
        sys.exit(f"rlplastic: error: {error_message(error)}")
    if summary.get("status") == "interrupted":
        signum = summary.get("signal") or signal.SIGINT
        name = signal.Signals(signum).name
        print(f"rlplastic: interrupted by {name} at frame {summary['frame']}; the checkpoint is saved. "
              "Re-run the same command to resume", file=sys.stderr)  # fmt: skip
        sys.exit(INTERRUPTED_EXIT.get(signum, 128 + int(signum)))


#: Config groups a command line picks an option of (``task=cheetah_run``, ``+experiment=aug_rr_smoke``).
CHOICE_GROUPS = ("task", "agent", "aug", "rr", "monitor", "intervention", "experiment")


def check_group_choices(argv: list[str]) -> str | None:
    """The one-line error for a config-group option that does not exist (``task=cheetah_fly``), else ``None``.

    Hydra reports these itself, over several lines, before any of this file's code runs; checking the
    command line first gives the same one-line error as every other bad value. Sweep lists
    (``aug=shift,none``) and intervention lists (``intervention=[redo,l2_init]``) are checked item by item.
    """
    configs = Path(__file__).resolve().parent / "configs"
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in CHOICE_GROUPS or any(c in value for c in "(){}$"):
            continue
        names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        options = sorted(p.stem for p in (configs / key).glob("*.yaml"))
        unknown = [name for name in names if name not in options and name != "null"]
        if unknown:
            return f"{key}={unknown[0]} is not an option of {key}: choose one of {options}"
    return None


if __name__ == "__main__":
    problem = check_group_choices(sys.argv[1:])
    if problem is not None:
        sys.exit(f"rlplastic: error: {problem}")
    main()
