"""A run that cannot be lost: crashes at every step of the checkpoint commit, SIGKILLs, signals,
corrupted checkpoints and logs without a checkpoint all resume to the logs of an uninterrupted run.

"Equal logs" means: every CSV row and every TensorBoard scalar event (tag, frame, value) of every tag
but ``time/*`` (wall-clock figures), in order, equals the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rlplastic.faults
import train
from rlplastic.checkpoint import POINTER_NAME, load_checkpoint
from rlplastic.errors import NonFiniteError
from rlplastic.logger import read_scalars_csv, read_tb_scalars
from tests.test_trainer import STATES, compose_config

ROOT = Path(__file__).resolve().parents[1]
# 1000 agent steps (500 of them updating), a checkpoint every 100, so a killed process always has checkpoints
# left to make.
RUN = [*STATES, "num_train_frames=2000", "eval_every_frames=500", "num_eval_episodes=1", "save_every_frames=200",
       "log_every_frames=100"]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def csv_rows(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: rows for tag, rows in read_scalars_csv(run_dir / "scalars.csv").items() if not tag.startswith("time/")}


def tb_rows(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: rows for tag, rows in read_tb_scalars(run_dir / "tb").items() if not tag.startswith("time/")}


def run_in_process(run_dir: Path, extra: list[str] = ()) -> dict:
    return train.run(compose_config([*RUN, *extra, f"run_dir={run_dir}"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    summary = run_in_process(run_dir)
    assert summary["status"] == "complete"
    return {"summary": summary, "csv": csv_rows(run_dir), "tb": tb_rows(run_dir)}


def assert_same_logs(run_dir: Path, reference: dict) -> None:
    assert csv_rows(run_dir) == reference["csv"]
    assert tb_rows(run_dir) == reference["tb"]
    summary = json.loads((run_dir / "run_complete.json").read_text())
    assert summary["final_eval_return"] == reference["summary"]["final_eval_return"]


@pytest.fixture
def inject(monkeypatch):
    """Set RLPLASTIC_FAULT for the next in-process call, with fresh arrival counts."""

    def set_fault(spec: str | None) -> None:
        monkeypatch.setattr(rlplastic.faults, "_arrivals", {})
        if spec is None:
            monkeypatch.delenv(rlplastic.faults.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(rlplastic.faults.ENV_VAR, spec)

    return set_fault


# Every step of a commit, in order: the payload's writes, then the pointer's (its rename is the commit).
COMMIT_POINTS = [f"{stage}_{step}" for stage in ("payload", "pointer")
                 for step in ("write", "fsync", "rename", "dirsync")] + ["committed"]  # fmt: skip


def test_an_exception_at_every_step_of_the_commit_then_resume_gives_the_same_logs(tmp_path, reference, inject, capsys):
    run_dir = tmp_path / "run"
    inject("payload_write@1:raise")  # the very first save fails: logs, but no checkpoint yet
    with pytest.raises(RuntimeError, match="injected fault"):
        run_in_process(run_dir)
    assert not (run_dir / POINTER_NAME).exists() and (run_dir / "scalars.csv").stat().st_size > 0
    capsys.readouterr()
    for point in COMMIT_POINTS:
        inject(f"{point}@1:raise")
        with pytest.raises(RuntimeError, match=f"injected fault at {point}"):
            run_in_process(run_dir)
    assert "has logs but no checkpoint" in capsys.readouterr().err
    for point in ("complete_write", "complete_rename"):  # after the final checkpoint, before run_complete.json
        inject(f"{point}@1:raise")
        with pytest.raises(RuntimeError, match=f"injected fault at {point}"):
            run_in_process(run_dir)
        assert load_checkpoint(run_dir).record.frame == 2000
    inject(None)
    summary = run_in_process(run_dir)
    assert summary["status"] == "complete" and summary["resumed_from_frame"] == 2000
    assert_same_logs(run_dir, reference)


def _cli(run_dir: Path, fault: str | None = None) -> subprocess.Popen:
    env = dict(ENV) if fault is None else {**ENV, rlplastic.faults.ENV_VAR: fault}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RUN, f"run_dir={run_dir}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _pointer_frame(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / POINTER_NAME).read_text())["frame"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def _wait_for_pointer(proc: subprocess.Popen, run_dir: Path, frame: int, limit: float = 300) -> None:
    """Wait until ``proc`` has committed a checkpoint at ``frame`` or later (a hang guard, not a speed check)."""
    give_up = time.monotonic() + limit
    while _pointer_frame(run_dir) < frame:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before a checkpoint at frame {frame}: {proc.communicate()}")
        if time.monotonic() > give_up:
            proc.kill()
            pytest.fail(f"no checkpoint at frame {frame} within {limit} s: the run hangs")
        time.sleep(0.02)


def _kill_after_checkpoint(proc: subprocess.Popen, run_dir: Path, after: int, timeout: float = 300) -> None:
    """SIGKILL ``proc`` from outside once its pointer has passed frame ``after`` (between checkpoints)."""
    _wait_for_pointer(proc, run_dir, after + 1, timeout)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)


# Kills from inside the commit (the process SIGKILLs itself at that point), then from outside.
SIGKILL_POINTS = ["payload_write@2", "payload_fsync@1", "payload_rename@1", "payload_dirsync@2", "pointer_write@1",
                  "pointer_fsync@1", "pointer_rename@1", "pointer_dirsync@1", "committed@1", "payload_rename@2"]


def test_sigkill_at_twelve_points_then_resume_gives_the_same_logs(tmp_path, reference):
    run_dir = tmp_path / "run"
    for point in SIGKILL_POINTS:
        proc = _cli(run_dir, f"{point}:kill")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, err[-2000:])
    for _ in range(2):
        _kill_after_checkpoint(_cli(run_dir), run_dir, after=_pointer_frame(run_dir))
    proc = _cli(run_dir, "complete_rename@1:kill")  # killed between the final checkpoint and run_complete.json
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "run_complete.json").exists()
    final = _cli(run_dir)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]
    assert '"resumed_from_frame": 2000' in out  # the final evaluation was not repeated
    assert_same_logs(run_dir, reference)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_exits_with_the_shell_code_and_resumes(tmp_path, reference, sig, code):
    run_dir = tmp_path / "run"
    proc = _cli(run_dir)
    _wait_for_pointer(proc, run_dir, 1200)  # past the seed frames: updates have begun
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"interrupted by {signal.Signals(sig).name}" in err and "Re-run the same command to resume" in err
    assert "Traceback" not in err
    assert not (run_dir / "run_complete.json").exists()
    resumed = _cli(run_dir)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert_same_logs(run_dir, reference)


def test_a_corrupt_newest_checkpoint_resumes_from_the_previous_one(tmp_path, reference, inject, capsys):
    run_dir = tmp_path / "run"
    inject("payload_write@3:raise")  # two committed checkpoints (frames 200 and 400), then a crash
    with pytest.raises(RuntimeError):
        run_in_process(run_dir)
    newest = run_dir / json.loads((run_dir / POINTER_NAME).read_text())["current"]["file"]
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])  # same size, other bytes
    newest.write_bytes(bytes(data))
    inject(None)
    summary = run_in_process(run_dir)
    assert summary["resumed_from_frame"] == 200
    err = capsys.readouterr().err
    assert f"skipped {newest.name} (frame 400)" in err and "does not match its checksum" in err
    assert_same_logs(run_dir, reference)


def test_a_busy_run_dir_is_refused_naming_the_holder(tmp_path):
    from rlplastic.runlock import RunDirLock

    with RunDirLock(tmp_path / "run"):
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), *RUN, f"run_dir={tmp_path / 'run'}"],
                                env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert f"rlplastic: error: {tmp_path / 'run'} is in use by process {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "scalars.csv").exists()


def _trainer(run_dir: Path):
    cfg = compose_config([*RUN, f"run_dir={run_dir}"])
    train.validate(cfg)
    return train.build_trainer(cfg, run_dir)


def test_a_non_finite_loss_stops_the_run_naming_metric_frame_and_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    update, calls = trainer.agent.update, []

    def nan_after_200(batch, step):
        metrics = update(batch, step)
        calls.append(step)
        if len(calls) >= 200:  # updates start at step 500; update 200 is at step 898, frame 1796
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics

    trainer.agent.update = nan_after_200
    with pytest.raises(NonFiniteError) as caught:
        trainer.run()
    message = str(caught.value)
    assert message.startswith("the train metric train/critic_loss (window mean, nan) is not finite at frame 1800")
    assert "the last good checkpoint is checkpoint-000008-frame1600.pt (frame 1600)" in message
    assert load_checkpoint(tmp_path).record.frame == 1600  # nothing was saved after it
    assert max(frame for frame, _ in read_scalars_csv(tmp_path / "scalars.csv")["train/critic_loss"]) == 1800


def test_a_non_finite_parameter_stops_the_run_naming_it(tmp_path):
    trainer = _trainer(tmp_path)
    update, poisoned = trainer.agent.update, []

    def poison(batch, step):
        metrics = update(batch, step)
        if step >= 698 and not poisoned:  # the last update before the log at frame 1400
            poisoned.append(step)
            with torch.no_grad():
                trainer.agent.critic.Q2[0].weight[0, 0] = float("inf")
        return metrics

    trainer.agent.update = poison
    with pytest.raises(NonFiniteError, match=r"^the agent's critic\.Q2\.0\.weight is not finite at frame 1400"):
        trainer.run()


def test_the_guard_can_be_turned_off(tmp_path):
    cfg = compose_config([*RUN, "num_train_frames=1200", f"run_dir={tmp_path}", "check_finite=false"])
    train.validate(cfg)
    trainer = train.build_trainer(cfg, tmp_path)
    update = trainer.agent.update
    trainer.agent.update = lambda batch, step: {**update(batch, step), "critic_loss": torch.tensor(float("nan"))}
    assert trainer.run()["status"] == "complete"
