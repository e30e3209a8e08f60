"""The training loop of docs/design.md. It receives constructed pieces and imports no agent or env module.

One iteration, in DrQ-v2's order::

    checkpoint if due            ← nothing has been logged at this frame yet, so a resume is exact
    episode over? log it, reset, replay.add_first
    evaluation due? run it
    act ; k = rr.updates_due(step) updates (after the seed frames) ; env.step ; replay.add

Every piece of state — agent and optimizers, replay, counters, RNGs, both environments, the RR
controller, the open metric window and the log position — goes into the checkpoint, so killing a run
at any moment and re-running the same command gives the same result as never stopping.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlplastic.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    mark_complete,
    restore_rng_state,
    save_checkpoint,
)
from rlplastic.errors import NonFiniteError, RunError
from rlplastic.logger import Logger, RunningMeans
from rlplastic.protocols import Agent, Env, Interventions, Monitor, Replay, RRController
from rlplastic.replay_prefetch import PrefetchingSampler
from rlplastic.wandb_sink import WandbSink


@dataclass
class TrainerConfig:
    """Loop settings. Frame counts are environment frames (agent steps × action repeat).

    Args:
        num_train_frames: training budget; the run ends at this frame (after a last evaluation if due).
        num_seed_frames: frames of uniform random acting before the first update.
        action_repeat: frames per agent step (the env repeats actions; used to convert counts).
        eval_every_frames: evaluate at frame 0 and every this many frames.
        num_eval_episodes: episodes per evaluation (mean action), on the separate eval env.
        batch_size: replay batch per update.
        log_every_frames: train metrics are averaged on device over this window and logged at its end.
        save_every_frames: checkpoint period (0 turns periodic checkpoints off; SIGINT/SIGTERM still save).
        save_replay: include the replay buffer in checkpoints (off for huge buffers: a resume then
            refills replay from scratch and is no longer exact).
        save_video: record the first episode of each evaluation as an mp4.
        use_tb: write TensorBoard events.
        use_csv: write ``scalars.csv``.
        progress: show a progress bar.
        eval_all_tasks: with a continual env (one with ``set_task``), every evaluation also plays each
            task of the sequence and logs ``eval_task/<task>/episode_reward``; ``eval/*`` is always the
            train env's current task.
        prefetch: assemble the next replay batch on a worker thread while the agent acts or updates
            (:class:`~rlplastic.replay_prefetch.PrefetchingSampler`; same batches as without). Pays
            off when the device is a GPU; on a CPU the worker competes with the update for the cores.
        check_finite: stop the run with :class:`~rlplastic.errors.NonFiniteError` when a train metric
            (the losses among them), a parameter or optimizer state, or an action is NaN/Inf. Losses and
            parameters are checked at log time from the on-device window, actions (already on the host)
            at every step.
    """

    num_train_frames: int
    num_seed_frames: int = 4000
    action_repeat: int = 2
    eval_every_frames: int = 10000
    num_eval_episodes: int = 10
    batch_size: int = 256
    log_every_frames: int = 1000
    save_every_frames: int = 100000
    save_replay: bool = True
    save_video: bool = True
    use_tb: bool = True
    use_csv: bool = True
    progress: bool = True
    eval_all_tasks: bool = False
    prefetch: bool = False
    check_finite: bool = True

    def __post_init__(self) -> None:
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat={self.action_repeat} must be >= 1")
        positive = ("num_train_frames", "eval_every_frames", "batch_size", "log_every_frames")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("num_seed_frames", "num_eval_episodes", "save_every_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        frame_counts = ("num_train_frames", "num_seed_frames", "eval_every_frames", "log_every_frames")
        for name in (*frame_counts, "save_every_frames"):
            if getattr(self, name) % self.action_repeat:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not a multiple of action_repeat={self.action_repeat}: "
                    "frame counts must fall on agent steps"
                )
        if self.num_seed_frames >= self.num_train_frames:
            raise ValueError(
                f"num_seed_frames={self.num_seed_frames} leaves no training: it must be < "
                f"num_train_frames={self.num_train_frames}"
            )


class Stopwatch:
    """Cumulative wall time and call counts per phase of the loop (``act``, ``sample``, ``update``, ...).

    Host-side timing only: on CUDA the update phase measures launch time unless something syncs, so
    GPU figures from it are read over long windows (the loop syncs once per log).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextmanager
    def time(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            self.counts[phase] = self.counts.get(phase, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """A copy of the totals, to difference against later."""
        return {"seconds": dict(self.seconds), "counts": dict(self.counts), "wall": time.perf_counter()}

    def since(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Totals accumulated after ``snapshot``: seconds and counts per phase, and the wall time."""
        seconds = {k: v - snapshot["seconds"].get(k, 0.0) for k, v in self.seconds.items()}
        counts = {k: v - snapshot["counts"].get(k, 0) for k, v in self.counts.items()}
        return {"seconds": seconds, "counts": counts, "wall": time.perf_counter() - snapshot["wall"]}


@dataclass
class _Counters:
    """Loop position; all plain ints/floats so that it checkpoints as-is."""

    step: int = 0
    episode: int = 0
    episode_step: int = 0
    episode_return: float = 0.0
    episode_done: bool = True  # no episode running yet: the first iteration starts one
    last_save_frame: int = 0
    last_log_frame: int = 0
    last_eval_return: float = float("nan")
    last_eval_frame: int = -1  # an evaluation at the resumed frame is not run twice


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``.

    Args:
        agent: an agent with the :class:`~rlplastic.protocols.Agent` protocol (the monitor and the
            interventions need more of the contract; they check it when they are built).
        train_env: environment for acting and learning.
        eval_env: a separate instance with its own seed, used only for evaluation.
        replay: the replay buffer.
        rr: the replay-ratio controller.
        run_dir: where logs, videos and the checkpoint live.
        config: loop settings.
        device: device the batches are sampled onto.
        seed: seed of the first training episode (the eval env is seeded by its maker).
        monitor: optional plasticity monitor; it hooks the agent now, sees every update, and its
            values are logged with the train metrics.
        interventions: optional intervention set, already built on ``agent``: asked after every
            update and at every episode end; what fires is logged as ``events/<name>``.
        wandb: optional :class:`~rlplastic.wandb_sink.WandbSink` mirroring every logged scalar.
    """

    def __init__(
        self,
        agent: Agent,
        train_env: Env,
        eval_env: Env,
        replay: Replay,
        rr: RRController,
        run_dir: str | Path,
        config: TrainerConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
        monitor: Monitor | None = None,
        interventions: Interventions | None = None,
        wandb: WandbSink | None = None,
    ) -> None:
        self.agent = agent
        self.wandb = wandb
        self.interventions = interventions
        self.monitor = monitor
        if monitor is not None:
            monitor.attach(agent)
        self.train_env = train_env
        self.eval_env = eval_env
        self.replay = replay
        self.rr = rr
        self.run_dir = Path(run_dir)
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.counters = _Counters()
        self.metric_window = RunningMeans()
        self._obs: np.ndarray | None = None
        self._stop_signal: int | None = None
        self.stopwatch = Stopwatch()
        self._log_snapshot = self.stopwatch.snapshot()
        self._updates_started: dict[str, Any] | None = None
        self._started = time.perf_counter()
        self._fps: float | None = None  # the last log window's frames per second (one figure, console and logs)
        self._eval_std = float("nan")
        self.logger: Logger | None = None
        self.sampler: PrefetchingSampler | None = None

    # -- public -----------------------------------------------------------------------------------

    @property
    def frame(self) -> int:
        """Environment frames so far."""
        return self.counters.step * self.config.action_repeat

    def run(self) -> dict[str, Any]:
        """Train to ``num_train_frames``, resuming from the run dir's newest valid checkpoint if there is one.

        Returns a summary: ``status`` (``complete`` or ``interrupted``), ``signal`` (the signal number
        that interrupted it, else ``None``), ``frame``, ``episode``, ``final_eval_return`` (``None``
        when no evaluation ran) and ``resumed_from_frame``.

        Raises:
            CheckpointError: the run dir has a checkpoint pointer but no payload that verifies.
            NonFiniteError: see ``TrainerConfig.check_finite``; the checkpoints on disk are from before.
        """
        checkpoint = load_checkpoint(self.run_dir, map_location=self.device)
        resumed_from = None
        if checkpoint is not None:
            for note in checkpoint.notes:
                tqdm.write(f"rlplastic: warning: {note}; resuming from {checkpoint.record.file} instead",
                           file=sys.stderr)
            self._restore(checkpoint.state)
            resumed_from = int(checkpoint.state["frame"])
            tqdm.write(f"rlplastic: resuming from frame {resumed_from} ({checkpoint.record.file})")
        elif Logger.has_logs(self.run_dir):
            tqdm.write(f"rlplastic: warning: {self.run_dir} has logs but no checkpoint (an earlier process stopped "
                       "before its first checkpoint): clearing them and starting over", file=sys.stderr)  # fmt: skip
        self.logger = Logger(
            self.run_dir, use_tb=self.config.use_tb, use_csv=self.config.use_csv,
            resume=None if checkpoint is None else checkpoint.state["logger"], wandb=self.wandb,
        )  # fmt: skip
        del checkpoint
        try:
            self.logger.update_layout(self.frame, [] if self.monitor is None else self.monitor.expected_tags())
            status = self._run_loop()
        finally:
            self.logger.close()
        c = self.counters
        summary = {
            "status": status,
            "signal": self._stop_signal,
            "frame": self.frame,
            "episode": c.episode,
            "final_eval_return": None if np.isnan(c.last_eval_return) else c.last_eval_return,
            "resumed_from_frame": resumed_from,
        }
        if status == "complete":
            mark_complete(self.run_dir, summary)
        return summary

    def _run_loop(self) -> str:
        total_steps = self.config.num_train_frames // self.config.action_repeat
        bar = tqdm(
            total=self.config.num_train_frames, initial=self.frame, unit="frame", dynamic_ncols=True,
            disable=not self.config.progress, mininterval=1.0,
            # no tqdm rate: the fps in the postfix is the one figure, the same as time/fps
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip
        self.sampler = PrefetchingSampler(self.replay, self.config.batch_size, self.device,
                                          background=self.config.prefetch)  # fmt: skip
        try:
            with self._signals_saved():
                return self._loop(total_steps, bar)
        finally:
            self.sampler.close()
            bar.close()

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self, total_steps: int, bar: tqdm) -> str:
        cfg, c = self.config, self.counters
        seed_steps = cfg.num_seed_frames // cfg.action_repeat
        while True:
            if self._stop_signal is not None:
                self.save()
                return "interrupted"
            if cfg.save_every_frames and self.frame - c.last_save_frame >= cfg.save_every_frames:
                self.save()
            if c.episode_done:
                self._finish_episode()
                self._start_episode()
            last = c.step >= total_steps  # the last frame is always evaluated, whatever the period
            if (self.frame % cfg.eval_every_frames == 0 or last) and c.last_eval_frame != self.frame:
                with self.stopwatch.time("eval"):
                    self.evaluate()
                self._say_evaluation(bar)
            if last:
                self._log_probes()
                if c.last_save_frame != self.frame or latest_checkpoint(self.run_dir) is None:
                    self.save()
                return "complete"

            due = self.rr.updates_due(c.step) if c.step >= seed_steps else 0
            if due:  # nothing is added before these updates: the first batch may be assembled while acting
                self.sampler.prefetch()
            with self.stopwatch.time("act"):
                action = self._act(self._obs, eval_mode=False)
            if due:
                self._run_updates(due)
            self._env_step(action)
            bar.update(cfg.action_repeat)
            if self.frame - c.last_log_frame >= cfg.log_every_frames:
                self._log_train(bar)

    def _run_updates(self, count: int) -> None:
        if self._updates_started is None:
            self._updates_started = self.stopwatch.snapshot()
        batches = self.sampler.burst(count)  # batch i + 1 is assembled while update i runs
        for _ in range(count):
            with self.stopwatch.time("sample"):
                batch = next(batches)
            with self.stopwatch.time("update"):
                self.metric_window.add(self.agent.update(batch, self.counters.step))
            if self.monitor is not None:
                with self.stopwatch.time("monitor"):
                    self._monitor_update()
            if self.interventions is not None:
                self.metric_window.add(self.interventions.train_metrics())
                with self.stopwatch.time("intervention"):
                    self._log_events(self.interventions.after_update(self.replay, self.device))

    def _monitor_update(self) -> None:
        try:
            self.monitor.after_update(self.agent, self.replay, self.counters.step)
        except torch.linalg.LinAlgError as err:  # a probe's decomposition of degenerate (diverged) features
            if self.config.check_finite:
                self._check_agent_finite()  # a NaN/Inf parameter is the clearer message
            raise RunError(
                f"the plasticity monitor's probe failed at frame {self.frame} ({str(err).splitlines()[0][:120]}): "
                f"the networks' features are degenerate, which usually means training diverged (check lr); "
                f"{self._last_good()}. monitor=off runs without probes"
            ) from None

    def _act(self, obs: np.ndarray, eval_mode: bool) -> np.ndarray:
        action = self.agent.act(obs, self.counters.step, eval_mode=eval_mode)
        if self.config.check_finite and not np.isfinite(action).all():
            self._non_finite(f"the {'evaluation' if eval_mode else 'training'} action {action.tolist()}")
        return action

    def _last_good(self) -> str:
        last = latest_checkpoint(self.run_dir)
        return f"the last good checkpoint is {last.file} (frame {last.frame})" if last else "no checkpoint was written"

    def _non_finite(self, what: str) -> None:
        raise NonFiniteError(
            f"{what} is not finite at frame {self.frame}: training diverged (a learning rate too high?); "
            f"{self._last_good()}. "
            "Fix the cause and start a new run dir, or resume from that checkpoint with other settings "
            "(check_finite=false turns this check off)"
        )

    def _check_finite(self, floats: dict[str, float]) -> None:
        """Stop on a non-finite train metric or agent tensor (one host sync for all tensors)."""
        bad = sorted(tag for tag, value in floats.items() if tag.startswith("train/") and not np.isfinite(value))
        if bad:
            self._non_finite(f"the train metric {bad[0]} (window mean, {floats[bad[0]]})")
        self._check_agent_finite()

    def _check_agent_finite(self) -> None:
        """Stop when a parameter or optimizer state of the agent is NaN/Inf (one host sync for all tensors)."""
        named = [(name, t) for name, t in _named_tensors(self.agent.state_dict()) if t.is_floating_point()]
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]) if named else None
        if finite is not None and not bool(finite.all()):
            names = [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]
            self._non_finite(f"the agent's {names[0]}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else ""))

    def _env_step(self, action: np.ndarray) -> None:
        c = self.counters
        with self.stopwatch.time("env"):
            self._obs, reward, terminated, truncated, info = self.train_env.step(action)
        c.episode_done = bool(terminated or truncated)
        with self.stopwatch.time("replay_add"):
            self.replay.add(action, reward, info.get("discount", 0.0 if terminated else 1.0),
                            self.train_env.last_frame(), last=c.episode_done)  # fmt: skip
        c.episode_return += reward
        c.episode_step += 1
        c.step += 1

    def _start_episode(self) -> None:
        c = self.counters
        # Seeding only the very first reset makes every later episode follow from that one seed.
        self._obs, info = self.train_env.reset(seed=self.seed if c.step == 0 else None)
        if info.get("task_switch"):  # a continual env moved on to its next task (envs/continual.py)
            self.logger.scalars({"events/task_switch": float(info["task_index"])}, self.frame)
            tqdm.write(f"rlplastic: task -> {info['task']} (index {info['task_index']}) at frame {self.frame}")
        self.replay.add_first(self.train_env.last_frame())
        c.episode_return, c.episode_step, c.episode_done = 0.0, 0, False

    def _finish_episode(self) -> None:
        c = self.counters
        if c.episode_step == 0:
            return
        c.episode += 1
        if self.monitor is not None:  # closes the episode's FAU account before controllers read it
            self.monitor.end_episode()
        needed = self.rr.signals_needed or (self.interventions is not None and self.interventions.signals_needed)
        signals = self.monitor.signals() if needed and self.monitor is not None else {}
        if self.rr.signals_needed and self.rr.observe(signals, self.frame):
            self.logger.scalars({"events/rr_switch": self.rr.value, "rr/value": self.rr.value}, self.frame)
            tqdm.write(f"rlplastic: replay ratio -> {self.rr.value:g} at frame {self.frame}")
        if self.interventions is not None:
            with self.stopwatch.time("intervention"):
                self._log_events(self.interventions.at_episode_end(signals, self.frame, self.replay, self.device))
        self.logger.scalars({
            "train/episode_reward": c.episode_return,
            "train/episode_length": c.episode_step * self.config.action_repeat,
            "train/episode": c.episode,
            "train/buffer_size": len(self.replay),
        }, self.frame)  # fmt: skip

    def _set_postfix(self, bar: tqdm) -> None:
        """The bar's one fps figure (the last log window's), the last evaluation and the replay ratio."""
        c = self.counters
        bar.set_postfix(fps=f"{self._fps:.1f}" if self._fps is not None else "-",
                        eval=f"{c.last_eval_return:.4g}", rr=f"{self.rr.value:g}", refresh=False)  # fmt: skip

    def _say_evaluation(self, bar: tqdm) -> None:
        """One console line per evaluation: frame, mean ± std return, fps, elapsed, RR, critic FAU."""
        self._set_postfix(bar)
        if self.counters.last_eval_frame != self.frame:  # evaluation off
            return
        elapsed = time.perf_counter() - self._started
        fau = "" if self.monitor is None else self.monitor.signals().get("critic/fau")
        parts = [
            f"eval at frame {self.frame:,}: return {self.counters.last_eval_return:.4g} ± {self._eval_std:.3g}",
            "fps -" if self._fps is None else f"{self._fps:.1f} fps",
            f"elapsed {_clock(elapsed)}",
            f"rr {self.rr.value:g}",
        ]
        if isinstance(fau, float):
            parts.append(f"critic FAU {fau:.3f}")
        tqdm.write("rlplastic: " + " | ".join(parts))

    def _log_probes(self) -> None:
        """Log every probe since the last call at the frame it was measured at, with its figures."""
        if self.monitor is None:
            return
        for record in self.monitor.pop_probe_records():
            frame = record.step * self.config.action_repeat
            self.logger.scalars(record.scalars, frame)
            for tag, image in record.images.items():
                self.logger.image(tag, image, frame)

    def _log_events(self, fired: dict[str, dict[str, float]]) -> None:
        for name, report in fired.items():
            values = {f"events/{name}": 1.0, **{f"events/{name}/{key}": value for key, value in report.items()}}
            self.logger.scalars(values, self.frame)
            details = ", ".join(f"{key}={value:g}" for key, value in report.items() if "/" not in key)
            tqdm.write(f"rlplastic: {name} at frame {self.frame}" + (f" ({details})" if details else ""))

    def _log_train(self, bar: tqdm) -> None:
        c = self.counters
        window = self.stopwatch.since(self._log_snapshot)
        values: dict[str, Any] = {f"train/{k}": v for k, v in self.metric_window.pop_means().items()}
        values.update({
            "time/fps": (self.frame - c.last_log_frame) / max(window["wall"], 1e-9),
            "rr/value": self.rr.value,
            "rr/updates": self.rr.total_updates,
        })  # fmt: skip
        if self.monitor is not None:
            values.update(self.monitor.log_values())
            self._log_probes()
        for phase in ("env", "sample", "update", "monitor", "intervention"):
            if window["counts"].get(phase):
                values[f"time/{phase}_s"] = window["seconds"][phase] / window["counts"][phase]
        floats = self.logger.scalars(values, self.frame)
        if self.config.check_finite:
            self._check_finite(floats)
        self._fps = floats["time/fps"]
        self._set_postfix(bar)
        c.last_log_frame = self.frame
        self.logger.update_layout(self.frame)
        self.logger.flush()
        self._log_snapshot = self.stopwatch.snapshot()

    def profile(self) -> dict[str, Any] | None:
        """Time split since the first update (excluding nothing): per-phase seconds and counts, wall time.

        ``None`` before updates start. ``bench/throughput.py`` prints this.
        """
        return None if self._updates_started is None else self.stopwatch.since(self._updates_started)

    def evaluate(self) -> float:
        """Run ``num_eval_episodes`` with the mean action on the eval env; log and return the mean return.

        A continual eval env (one with ``set_task``) is first pointed at the train env's current task;
        with ``eval_all_tasks`` each task of the sequence is then played too (``eval_task/<task>/*``).
        """
        cfg = self.config
        if cfg.num_eval_episodes == 0:  # evaluation turned off
            return float("nan")
        continual = hasattr(self.eval_env, "set_task")
        if continual:
            self.eval_env.set_task(self.train_env.task_index)
        returns, lengths, video = self._eval_episodes(record=cfg.save_video)
        mean_return = float(np.mean(returns))
        self.counters.last_eval_return = mean_return
        self.counters.last_eval_frame = self.frame
        self._eval_std = float(np.std(returns))
        values = {
            "eval/episode_reward": mean_return,
            "eval/episode_reward_std": float(np.std(returns)),
            "eval/episode_length": float(np.mean(lengths)),
        }
        if continual:
            values["eval/task_index"] = float(self.train_env.task_index)
            if cfg.eval_all_tasks:
                current = self.train_env.task
                for name in dict.fromkeys(self.eval_env.tasks):  # each task once (a sequence may repeat one)
                    if name == current:
                        task_returns = returns
                    else:
                        self.eval_env.set_task(name)
                        task_returns, _, _ = self._eval_episodes(record=False)
                    values[f"eval_task/{name}/episode_reward"] = float(np.mean(task_returns))
        self.logger.scalars(values, self.frame)
        if video:
            self.logger.video("eval/video", np.stack(video), self.frame)
        return mean_return

    def _eval_episodes(self, record: bool) -> tuple[list[float], list[int], list[np.ndarray]]:
        """``num_eval_episodes`` mean-action episodes on the eval env: returns, lengths in frames, video."""
        cfg = self.config
        returns, lengths, video = [], [], []
        for episode in range(cfg.num_eval_episodes):
            obs, _ = self.eval_env.reset()
            recording = record and episode == 0
            if recording:
                video.append(self.eval_env.render())
            total, steps, done = 0.0, 0, False
            while not done:
                action = self._act(obs, eval_mode=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                total += reward
                steps += 1
                done = terminated or truncated
                if recording:
                    video.append(self.eval_env.render())
            returns.append(total)
            lengths.append(steps * cfg.action_repeat)
        return returns, lengths, video

    # -- checkpointing ----------------------------------------------------------------------------

    def save(self) -> Path:
        """Write the checkpoint for the current frame (nothing has been logged at it yet)."""
        c = self.counters
        c.last_save_frame = self.frame
        state = {
            "frame": self.frame,
            "counters": asdict(c),
            "agent": self.agent.state_dict(),
            "replay": self.replay.state_dict() if self.config.save_replay else None,
            "rr": self.rr.state_dict(),
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
            "interventions": None if self.interventions is None else self.interventions.state_dict(),
            "rng": capture_rng_state(),
            "train_env": self.train_env.get_state(),
            "eval_env": self.eval_env.get_state(),
            "obs": None if self._obs is None else torch.from_numpy(np.array(self._obs)),
            "metric_window": self.metric_window.state_dict(),
            "logger": self.logger.position(self.frame),
            "config": asdict(self.config),
        }
        with self.stopwatch.time("checkpoint"):
            return save_checkpoint(self.run_dir, state, self.frame)

    def _restore(self, state: dict[str, Any]) -> None:
        self.counters = _Counters(**state["counters"])
        if self.interventions is not None:  # injected heads first, or the saved agent state does not fit
            self.interventions.restore_structure(state["agent"])
        self.agent.load_state_dict(state["agent"])
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
        elif self.counters.step:
            # Without the stored replay the current episode cannot continue: start a fresh one.
            self.counters.episode_done = True
            self.counters.episode_step = 0
        self.rr.load_state_dict(state["rr"])
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        if self.interventions is not None:
            self.interventions.load_state_dict(state["interventions"])
        restore_rng_state(state["rng"])
        self.train_env.set_state(state["train_env"])
        self.eval_env.set_state(state["eval_env"])
        self._obs = None if state["obs"] is None else state["obs"].numpy()
        self.metric_window.load_state_dict(state["metric_window"])

    @contextmanager
    def _signals_saved(self) -> Iterator[None]:
        """On SIGINT/SIGTERM finish the current step, checkpoint and return; a second SIGINT aborts."""

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _named_tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted.path, tensor)`` for every tensor in nested dicts/lists (a state dict)."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _named_tensors(value, f"{prefix}.{i}")



def _clock(seconds: float) -> str:
    """``1h02m03s`` / ``2m03s`` / ``3s``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
