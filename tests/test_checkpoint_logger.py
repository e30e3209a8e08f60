"""Checkpoint atomicity and safe loading, RNG capture, logger sinks and resume truncation, run dirs."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

from rlplastic.checkpoint import (
    POINTER_NAME,
    capture_rng_state,
    load_checkpoint,
    mark_complete,
    read_complete,
    restore_rng_state,
    save_checkpoint,
)
from rlplastic.errors import CheckpointError
from rlplastic.logger import Logger, RunningMeans, read_scalars_csv
from rlplastic.rundir import run_dir_for, variant_name


def test_checkpoint_round_trip(tmp_path):
    state = {"frame": 10, "weights": torch.arange(5.0), "nested": {"a": [1, 2], "b": (3, "x")}}
    save_checkpoint(tmp_path, state, frame=10)
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded.state["weights"], state["weights"])
    assert loaded.state["nested"] == state["nested"]
    assert loaded.record.frame == 10 and loaded.notes == []
    assert json.loads((tmp_path / POINTER_NAME).read_text())["frame"] == 10
    assert not list(tmp_path.glob("*.tmp"))  # temporary files renamed away


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path) is None


def test_checkpoint_refuses_pickled_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    save_checkpoint(tmp_path, {"x": 1}, frame=0)
    pointer = json.loads((tmp_path / POINTER_NAME).read_text())
    path = tmp_path / pointer["current"]["file"]
    torch.save({"x": Evil()}, path)  # a payload with code in it, and a pointer that vouches for its bytes
    data = path.read_bytes()
    pointer["current"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (tmp_path / POINTER_NAME).write_text(json.dumps(pointer))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_checkpoint_with_mismatched_size_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"a": torch.zeros(3)}, frame=2)
    (payload,) = tmp_path.glob("checkpoint-*.pt")
    with open(payload, "ab") as f:
        f.write(b"junk")
    with pytest.raises(CheckpointError, match="vouches for"):
        load_checkpoint(tmp_path)


def test_complete_marker(tmp_path):
    assert read_complete(tmp_path) is None
    mark_complete(tmp_path, {"frame": 100, "final_eval_return": 3.5})
    assert read_complete(tmp_path)["final_eval_return"] == 3.5


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_checkpoint(tmp_path, {"rng": capture_rng_state()}, frame=0)
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path).state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_running_means_stay_tensors_until_read():
    means = RunningMeans()
    means.add({"loss": torch.tensor(1.0), "q": 2.0})
    means.add({"loss": torch.tensor(3.0), "q": 4.0})
    result = means.pop_means()
    assert isinstance(result["loss"], torch.Tensor) and result["loss"].item() == 2.0
    assert result["q"] == 3.0
    assert len(means) == 0 and means.pop_means() == {}


def test_logger_writes_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = Logger(tmp_path)
    logger.scalars({"train/loss": torch.tensor(0.5), "eval/episode_reward": 10}, frame=0)
    logger.scalars({"train/loss": 0.25}, frame=2000)
    logger.close()
    series = read_scalars_csv(tmp_path / "scalars.csv")
    assert series["train/loss"] == [(0, 0.5), (2000, 0.25)]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(0, 0.5), (2000, 0.25)]


def test_logger_resume_discards_what_came_after_the_checkpoint(tmp_path):
    logger = Logger(tmp_path, use_tb=False)
    logger.scalars({"a": 1.0}, frame=0)
    position = logger.position(frame=100)
    logger.scalars({"a": 2.0}, frame=100)  # logged by the process that then died
    logger._csv_file.write("150,a,3.")  # torn row from a SIGKILL
    logger.close()
    resumed = Logger(tmp_path, use_tb=False, resume=position)
    resumed.scalars({"a": 4.0}, frame=100)
    resumed.close()
    assert read_scalars_csv(tmp_path / "scalars.csv")["a"] == [(0, 1.0), (100, 4.0)]


def test_read_scalars_csv_raises_on_a_torn_row_unless_asked_to_skip_it(tmp_path):
    path = tmp_path / "scalars.csv"
    path.write_text("frame,tag,value\n0,a,1.0\n100,a,2.0\n150,a\n")  # a killed run's last write
    with pytest.raises(ValueError):
        read_scalars_csv(path)
    malformed: list[int] = []
    assert read_scalars_csv(path, malformed=malformed) == {"a": [(0, 1.0), (100, 2.0)]}
    assert malformed == [4]


def test_variant_name_keeps_only_overrides_that_change_the_config():
    defaults = {"aug": "shift", "rr.ratio": "0.5"}

    def changes(override: str) -> bool:
        key, value = override.lstrip("+").split("=", 1)
        return defaults.get(key) != value

    assert variant_name(["seed=3", "task=walker_walk", "device=cpu"], changes) == "default"
    assert variant_name(["rr.ratio=2", "aug=none", "seed=1"], changes) == "aug=none,rr.ratio=2"
    assert variant_name(["aug=none", "rr.ratio=2"], changes) == variant_name(["rr.ratio=2", "aug=none"], changes)
    assert variant_name(["aug=shift"], changes) == "default"  # equal to the default: same experiment
    long = variant_name([f"k{i}=v" for i in range(40)], changes)
    assert len(long) <= 120


def test_run_dir_layout(tmp_path):
    assert run_dir_for(tmp_path, "cheetah_run", "aug=none", 3) == tmp_path / "cheetah_run" / "aug=none" / "seed3"


def test_video_goes_to_mp4_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    frames = np.random.default_rng(0).integers(0, 256, (6, 84, 84, 3), dtype=np.uint8)
    logger = Logger(tmp_path)
    path = logger.video("eval/video", frames, frame=2000)
    logger.close()
    assert path == tmp_path / "videos" / "eval_video_2000.mp4" and path.stat().st_size > 0
    import imageio.v2 as imageio

    assert len(imageio.mimread(path)) == 6
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Images("eval/video")[0].step == 2000  # needs moviepy < 2, pinned in pyproject.toml
