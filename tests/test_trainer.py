"""The training loop end to end through train.py: tags, determinism, learning, resume, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import train
from rlplastic.logger import read_scalars_csv

ROOT = Path(__file__).resolve().parents[1]

# A states run small enough for a test: cartpole_balance, small networks, short schedule, no video.
STATES = [
    "task=cartpole_balance", "obs_type=states", "aug=none", "device=cpu", "progress=false", "save_video=false",
    "hidden_dim=64", "feature_dim=32", "batch_size=64", "num_seed_frames=1000", "num_expl_steps=500",
    "stddev_schedule='linear(1.0,0.1,3000)'", "log_every_frames=500", "replay_buffer_size=20000",
]  # fmt: skip


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_train(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[dict, dict]:
    cfg = compose_config([*overrides, f"run_dir={tmp_path / name}"])
    summary = train.run(cfg)
    return summary, read_scalars_csv(tmp_path / name / "scalars.csv")


def test_tiny_pixel_run_writes_the_documented_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary, series = run_train(tmp_path, [
        "task=cheetah_run", "device=cpu", "progress=false", "action_repeat=8", "num_seed_frames=400",
        "num_train_frames=1200", "eval_every_frames=600", "num_eval_episodes=1", "batch_size=4", "hidden_dim=16",
        "feature_dim=8", "replay_buffer_size=1000", "log_every_frames=200",
    ])  # fmt: skip
    assert summary["status"] == "complete" and summary["frame"] == 1200
    expected = {
        "train/critic_loss", "train/critic_q1", "train/critic_target_q", "train/actor_loss", "train/actor_ent",
        "train/batch_reward", "train/episode_reward", "eval/episode_reward", "eval/episode_length", "time/fps",
        "time/update_s", "time/env_s", "rr/value", "rr/updates",
    }  # fmt: skip
    assert expected <= set(series)
    assert [frame for frame, _ in series["eval/episode_reward"]] == [0, 600, 1200]  # x-axis in frames
    assert series["eval/episode_length"][0][1] == 1000  # a DMC episode is 1000 frames
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert expected <= set(acc.Tags()["scalars"])
    assert series["train/episode_reward"][0][0] == 1000  # logged when the 1000-frame episode ends
    assert (tmp_path / "run" / "videos" / "eval_video_600.mp4").stat().st_size > 0
    # RR 0.5 from the first post-seed step: 100 agent steps after 50 seed steps → 50 updates.
    assert series["rr/updates"][-1] == (1200, 50.0)


def test_states_run_learns_cartpole_balance(tmp_path):
    # A uniform random policy scores 330 ± 55 (max 420 over 10 episodes) on cartpole_balance.
    # Learning is asserted, never the clock: wall time belongs to bench/, not to a test on a shared machine.
    summary, series = run_train(tmp_path, [
        *STATES, "action_repeat=4", "hidden_dim=128", "batch_size=128", "rr.ratio=2", "lr=3e-4",
        "stddev_schedule='linear(1.0,0.1,2500)'", "num_train_frames=20000", "eval_every_frames=10000",
        "num_eval_episodes=3", "monitor=off",
    ])  # fmt: skip
    assert summary["final_eval_return"] > 700, series["eval/episode_reward"]


def test_same_seed_gives_identical_runs_and_another_seed_does_not(tmp_path):
    overrides = [*STATES, "num_train_frames=3000", "eval_every_frames=1500", "num_eval_episodes=1"]
    _, a = run_train(tmp_path, [*overrides, "seed=5"], "a")
    _, b = run_train(tmp_path, [*overrides, "seed=5"], "b")
    _, c = run_train(tmp_path, [*overrides, "seed=6"], "c")
    for tag in ("eval/episode_reward", "train/critic_loss", "train/episode_reward"):
        assert a[tag] == b[tag], tag
    assert a["train/critic_loss"] != c["train/critic_loss"]


def test_finished_run_is_not_trained_again(tmp_path):
    overrides = [*STATES, "num_train_frames=1200", "eval_every_frames=1200", "num_eval_episodes=1"]
    first, _ = run_train(tmp_path, overrides)
    size = (tmp_path / "run" / "scalars.csv").stat().st_size
    again, _ = run_train(tmp_path, overrides)
    assert again == json.loads((tmp_path / "run" / "run_complete.json").read_text())
    assert again["final_eval_return"] == first["final_eval_return"]
    assert (tmp_path / "run" / "scalars.csv").stat().st_size == size


def test_adaptive_rr_switches_in_a_run_and_logs_the_event(tmp_path):
    _, series = run_train(tmp_path, [
        *STATES, "num_train_frames=4000", "eval_every_frames=4000", "num_eval_episodes=1", "rr=adaptive",
        "rr.check_every_frames=2000", "rr.threshold=1.0",  # any change is a "plateau": switch at the first check
    ])  # fmt: skip
    assert series["events/rr_switch"] == [(2000, 2.0)]
    # RR 0.5 for agent steps 500-999 (250 updates), then RR 2 for steps 1000-1999 (2000 updates).
    assert series["rr/updates"][-1] == (4000, 2250.0)
    assert series["rr/value"][-1] == (4000, 2.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rr.ratio=0"], "rr.ratio=0"),
        (["rr.ratio=-1"], "rr.ratio=-1"),
        (["batch_size=0"], "batch_size=0 must be > 0"),
        (["task=easy"], "sets no task_name"),
        (["obs_type=rgb"], "obs_type='rgb'"),
        (["obs_type=states"], "aug=shift augments images but obs_type=states"),
        (["num_seed_frames=5000", "num_train_frames=4000"], "num_seed_frames=5000 leaves no training"),
        (["num_train_frames=1001"], "num_train_frames=1001 is not a multiple of action_repeat=2"),
        (["eval_every_frames=0"], "eval_every_frames=0 must be > 0"),
        (["device=cuda:7"], "device='cuda:7'"),
        (["stddev_schedule=fast"], "unknown schedule 'fast'"),
        (["rr=adaptive", "monitor=off"], "rr=adaptive reads .*critic/episode_fau.* but monitor=off"),
        (["rr=ladder", "rr.ratios=[]"], "rr.ratios=.* is empty"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, overrides, message):
    # a replay this machine can hold, so the memory check does not answer first
    cfg = compose_config(["replay_buffer_size=10000", *overrides, f"run_dir={tmp_path / 'bad'}", "progress=false"])
    pattern = message if ".*" in message else re.escape(message)
    with pytest.raises(ValueError, match=pattern):
        train.run(cfg)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


@pytest.mark.parametrize(("override", "valid"), [("aug=flip", "shift"), ("task=cheetah_fly", "cheetah_run")])
def test_unknown_config_group_option_names_the_choices(override, valid):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=rf"(?s){override.split('=')[1]}.*Available options.*{valid}"):
        compose_config([override])


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "batch_size=-3", f"run_dir={tmp_path}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "rlplastic: error: batch_size=-3 must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
