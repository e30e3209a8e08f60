"""Bad input through the CLI's error path: one ``rlplastic: error: …`` line that names the key, exit 1,
no traceback, nothing written. ``train.main(cfg)`` is the entry point's own code (Hydra passes a given
config straight through), so these run without a subprocess each; ``test_trainer.py`` runs the real
command line once.
"""

from __future__ import annotations

import ctypes.util
import json

import pytest

import train
from tests.test_trainer import STATES, compose_config

PIXELS_TINY = ["task=cheetah_run", "device=cpu", "progress=false", "save_video=false", "hidden_dim=16",
               "feature_dim=8", "batch_size=4"]  # fmt: skip


def cli_error(tmp_path, overrides: list[str], capsys) -> str:
    cfg = compose_config([*overrides, f"run_dir={tmp_path / 'run'}", "progress=false"])
    with pytest.raises(SystemExit) as caught:
        train.main(cfg)
    message = str(caught.value.code)
    assert message.startswith("rlplastic: error: ") and "\n" not in message, message
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run" / "scalars.csv").exists()
    return message.removeprefix("rlplastic: error: ")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=abc"], "seed='abc' must be an integer"),
        (["batch_size=2.5"], "batch_size=2.5 must be an integer"),
        (["num_train_frames=lots"], "num_train_frames='lots' must be an integer"),
        (["replay_buffer_size=1e9"], "replay_buffer_size=1000000000 with batch_size=256 needs about"),
        ([*STATES, "batch_size=1000000", "replay_buffer_size=10000"],
         "batch_size=1000000 is larger than the replay can ever hold (replay_buffer_size=10000)"),
        (["device=mps"], "device='mps' is not supported (rlplastic trains on CPU or CUDA)"),
        (["device=tpu"], "device='tpu' is not a torch device"),
        (["device=cuda:7"], "device='cuda:7' but CUDA is not available here"),
        ([*STATES, "intervention=redo", "intervention.redo.period=0"],
         "intervention.redo: period must be a positive int, got 0"),
        ([*STATES, "intervention=redo", "intervention.redo.tau=2"], "intervention.redo: ReDo tau=2 is outside [0, 1]"),
        (["nstep=0"], "nstep=0 must be > 0"),
        (["discount=1.5"], "discount=1.5 must be in (0, 1]"),
        (["num_threads=0"], "num_threads=0 must be auto or an int > 0"),
        (["lr=-1"], "lr=-1 must be a number > 0"),
        ([*STATES, "hidden_dim=0"], "agent.drqv2: hidden_dim=0 must be > 0"),  # the agent checks its widths
        ([*STATES, "feature_dim=-3"], "agent.drqv2: feature_dim=-3 must be > 0"),
        (["aug.name=flip"], "unknown aug 'flip': allowed are ['none', 'shift']"),
        (["+aug.size=3"], "unknown aug.shift key(s) ['size']: allowed are ['pad']"),
        (["aug.pad=-1"], "aug.shift: pad must be an int >= 0, got -1"),
        (["agent.name=sac9"], "unknown agent 'sac9': allowed are ['drqv2', 'sac']"),
        (["+agent.compile=true"], "unknown agent.drqv2 key(s) ['compile']: allowed are ['lr', 'feature_dim'"),
        (["rr.name=magic"], "unknown rr 'magic': allowed are ['static', 'adaptive', 'adaptive_ref', 'ladder']"),
        (["rr=adaptive", "+rr.speed=3"], "unknown rr.adaptive key(s) ['speed']: allowed are ['signal', 'low'"),
        ([*STATES, "rr=adaptive", "rr.signal=brain/fau"], "rr.adaptive: unknown signal 'brain/fau'"),
        ([*STATES, "rr=adaptive", "monitor.metrics=[dormant]"],
         "rr=adaptive reads 'critic/episode_fau', but the monitor does not measure 'fau': add it to monitor.metrics"),
        (["critic_target_tau=2"], "critic_target_tau=2 must be in (0, 1]"),
        (["stddev_clip=-1"], "stddev_clip=-1 must be a number >= 0"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path, capsys, overrides, expected):
    assert expected in cli_error(tmp_path, overrides, capsys)


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("glfw", "MUJOCO_GL=glfw needs a display, and DISPLAY is not set: use MUJOCO_GL=egl"),
        ("opengl", "MUJOCO_GL='opengl' is not a MuJoCo rendering backend: use one of egl (headless"),
        ("osmesa", "MUJOCO_GL=osmesa needs libOSMesa, which is not installed"),
    ],
)
def test_a_renderer_that_cannot_start_is_refused_before_dm_control_tries_it(
    tmp_path, capsys, monkeypatch, backend, expected
):
    monkeypatch.setenv("MUJOCO_GL", backend)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "OSMesa" else real(name))
    assert expected in cli_error(tmp_path, PIXELS_TINY, capsys)


def test_a_pixel_replay_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "available_memory", lambda: 23 * 2**30)  # this project's 24 GiB machines
    message = cli_error(tmp_path, [*PIXELS_TINY, "replay_buffer_size=1000000", "batch_size=256"], capsys)
    assert message.startswith("replay_buffer_size=1000000 with batch_size=256 needs about 19.9 GiB (pixels), "
                              "but 23.0 GiB of memory are available here")  # fmt: skip
    assert "use replay_buffer_size<=" in message


def test_an_unreadable_checkpoint_pointer_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.json").write_text("{half")
    message = cli_error(tmp_path, [*STATES, "num_train_frames=1200"], capsys)
    assert "checkpoint.json cannot be read" in message and "to start the run over" in message


def test_counts_accept_integral_floats(tmp_path):
    cfg = compose_config([*STATES, "replay_buffer_size=2e4", "num_train_frames=1.2e3", f"run_dir={tmp_path}"])
    train.validate(cfg)
    assert cfg.replay_buffer_size == 20000 and type(cfg.replay_buffer_size) is int
    assert cfg.num_train_frames == 1200 and type(cfg.num_train_frames) is int


def test_no_evaluation_means_a_null_final_return_in_valid_json(tmp_path):
    cfg = compose_config([*STATES, "num_train_frames=1200", "num_eval_episodes=0", f"run_dir={tmp_path}"])
    summary = train.run(cfg)
    assert summary["status"] == "complete" and summary["final_eval_return"] is None
    assert json.loads((tmp_path / "run_complete.json").read_text())["final_eval_return"] is None
    assert "eval/episode_reward" not in (tmp_path / "scalars.csv").read_text()


def test_provenance_records_command_code_and_versions(tmp_path):
    cfg = compose_config([*STATES, "num_train_frames=1200", "num_eval_episodes=1", f"run_dir={tmp_path}"])
    train.run(cfg)
    (start,) = json.loads((tmp_path / "provenance.json").read_text())["starts"]
    assert set(start["packages"]) >= {"torch", "mujoco", "dm_control", "numpy"}
    assert start["packages"]["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert start["resumed_from_frame"] is None and isinstance(start["argv"], list)
    assert start["code"]["commit"] is None or len(start["code"]["commit"]) == 40


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["task=cheetah_fly"], "task=cheetah_fly is not an option of task: choose one of ['acrobot_swingup'"),
        (["aug=shift,flip"], "aug=flip is not an option of aug: choose one of ['none', 'shift']"),
        (["intervention=[redo,l3]"], "intervention=l3 is not an option of intervention"),
        (["+experiment=nope"], "experiment=nope is not an option of experiment"),
        (["task=walker_walk", "aug=none", "rr=static,adaptive", "intervention=[redo,l2_init]", "seed=3"], None),
    ],
)
def test_an_unknown_config_group_option_is_one_line_before_hydra_runs(argv, expected):
    problem = train.check_group_choices(argv)
    assert problem == expected if expected is None else problem.startswith(expected)
