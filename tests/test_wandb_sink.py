"""The W&B sink, run offline: what it writes to the ``.wandb`` files is read back and compared with ``scalars.csv``.

Nothing here contacts the network (``mode="offline"``). The tests that need ``wandb`` skip without it; the
missing-package error is tested either way.
"""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest

from rlplastic.logger import Logger, read_scalars_csv
from rlplastic.wandb_sink import (
    ID_FILE,
    MISSING_WANDB,
    WandbSink,
    read_run_history,
    read_segment,
    run_id_for,
    segment_files,
)

# No system metrics, console capture, git or pip-freeze probing: a test run starts in about a second.
FAST = {
    "x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True, "x_save_requirements": False,
    "console": "off", "disable_git": True, "save_code": False, "silent": True,
}  # fmt: skip
CONFIG = {"agent": {"lr": 1e-4, "feature_dim": 50}, "task": "cheetah_run", "seed": 3}
# (frame, values) in logged order: several calls per frame, a tag logged only at some frames, floats that a
# lossy encoding would change, and a negative.
ROWS: list[tuple[int, dict[str, float]]] = [
    (0, {"train/critic_loss": 0.1 + 0.2, "train/actor_loss": -1 / 3}),
    (0, {"eval/episode_return": 0.0}),
    (1000, {"train/critic_loss": 1e-12, "train/actor_loss": 2.5}),
    (1000, {"plasticity/critic/dormant_frac": 0.125}),
    (2000, {"train/critic_loss": 123456.789012345, "train/actor_loss": -0.0}),
    (2000, {"eval/episode_return": 812.3456789, "plasticity/critic/dormant_frac": 0.25}),
]
IMAGE = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3) * 2


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``wandb`` importable (else skip), offline, and its settings and caches kept out of the home directory."""
    pytest.importorskip("wandb")
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("WANDB_DIR", raising=False)
        yield


def _sink(run_dir: Path, **kwargs: Any) -> WandbSink:
    return WandbSink(run_dir, CONFIG, "rlplastic", None, "offline", "test-run", None, settings=FAST, **kwargs)


def _run_record(path: Path) -> Any:
    """The first run record of a ``.wandb`` file, as wandb's protobuf message."""
    from wandb.proto import wandb_internal_pb2

    from rlplastic.wandb_sink import read_records

    for raw in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {path}")


def _scalars_only(series: dict[str, list[tuple[int, Any]]]) -> dict[str, list[tuple[int, float]]]:
    """The scalar tags of a history, values as floats (W&B's JSON writes ``5.0`` as ``5``)."""
    scalar = {tag: points for tag, points in series.items() if not isinstance(points[0][1], dict)}
    return {tag: [(frame, float(value)) for frame, value in points] for tag, points in scalar.items()}


@pytest.fixture(scope="module")
def offline_run(wandb_env: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One offline run: :data:`ROWS` through the Logger (CSV) and the sink; then an image, a video, a frame back."""
    run_dir = tmp_path_factory.mktemp("run")
    video_file = run_dir / "clip.mp4"
    imageio.mimwrite(video_file, [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(4)], fps=4, macro_block_size=1)
    logger = Logger(run_dir, use_tb=False, use_csv=True)
    sink = _sink(run_dir, group="default", tags=["cheetah_run", "seed3"])
    sent = [sink.scalars(logger.scalars(values, frame), frame) for frame, values in ROWS]
    image_sent = sink.image("eval/frame", IMAGE, 2000)
    video_sent = sink.video("eval/video", video_file, 2000)
    backwards = sink.scalars({"train/critic_loss": 9.0}, 1000)
    run_id = sink.run_id
    sink.close()
    logger.close()
    return {
        "run_dir": run_dir, "run_id": run_id, "sent": sent, "image_sent": image_sent, "video_sent": video_sent,
        "backwards": backwards, "video_file": video_file,
    }  # fmt: skip


def test_history_equals_the_csv(offline_run: dict[str, Any]) -> None:
    run_dir, run_id = offline_run["run_dir"], offline_run["run_id"]
    assert offline_run["sent"] == [values for _, values in ROWS]
    (path,) = segment_files(run_dir, run_id)
    assert path.parent.parent == run_dir / "wandb" and path.parent.name.startswith("offline-run-")
    csv = read_scalars_csv(run_dir / "scalars.csv")
    assert _scalars_only(read_run_history(run_dir, run_id)) == csv
    assert csv["train/critic_loss"] == [(0, 0.1 + 0.2), (1000, 1e-12), (2000, 123456.789012345)]
    # One history row per frame, the frame being W&B's step.
    assert [step for step, _ in read_segment(path)[1]] == [0, 1000, 2000]


def test_a_frame_going_back_is_dropped(offline_run: dict[str, Any]) -> None:
    assert offline_run["backwards"] == {}
    history = read_run_history(offline_run["run_dir"], offline_run["run_id"])
    assert [f for f, _ in history["train/critic_loss"]] == [0, 1000, 2000]


def test_wandb_own_reader_agrees(offline_run: dict[str, Any]) -> None:
    """``wandb leet inspect --json`` (wandb-core's reader) sees the same history rows as :func:`read_segment`."""
    (path,) = segment_files(offline_run["run_dir"], offline_run["run_id"])
    done = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"wandb leet inspect unavailable: {done.stderr[-300:]}")
    theirs = []
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "history":
            item = {k: v for k, v in record["history"]["item"].items() if not k.startswith("_")}
            theirs.append((int(record["history"]["step"]["num"]), item))

    def flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in row.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    assert theirs == [(step, flat(row)) for step, row in read_segment(path)[1]]


def test_config_and_id_are_attached(offline_run: dict[str, Any]) -> None:
    run_dir, run_id = offline_run["run_dir"], offline_run["run_id"]
    assert (run_dir / ID_FILE).read_text().strip() == run_id
    (path,) = segment_files(run_dir, run_id)
    run = read_segment(path)[0]
    assert run["run_id"] == run_id
    assert run["config"] == CONFIG
    record = _run_record(path)
    assert (record.display_name, record.project, record.run_group) == ("test-run", "rlplastic", "default")
    assert list(record.tags) == ["cheetah_run", "seed3"]


def test_image_and_video_are_stored_at_their_frame(offline_run: dict[str, Any]) -> None:
    assert offline_run["image_sent"] and offline_run["video_sent"]
    (path,) = segment_files(offline_run["run_dir"], offline_run["run_id"])
    step, row = read_segment(path)[1][-1]
    assert step == 2000
    files = path.parent / "files"
    image, video = row["eval/frame"], row["eval/video"]
    assert image["_type"] == "image-file" and (image["height"], image["width"]) == IMAGE.shape[:2]
    np.testing.assert_array_equal(imageio.imread(files / image["path"])[..., :3], IMAGE)
    assert video["_type"] == "video-file"
    assert (files / video["path"]).read_bytes() == offline_run["video_file"].read_bytes()


def test_a_resumed_run_continues_the_run_and_holds_each_tag_frame_once(wandb_env: None, tmp_path: Path) -> None:
    """Checkpoint at frame 2000, interruption after frame 3000: the resumed process logs 2000 and 3000 again."""

    def rows(upto: int) -> list[tuple[int, dict[str, float]]]:
        out = []
        for frame in range(0, upto + 1, 1000):
            out.append((frame, {"train/loss": frame / 7, "time/fps": 100.0 + frame}))
            if frame % 2000 == 0:
                out.append((frame, {"eval/return": -frame / 3}))
        return out

    logger = Logger(tmp_path, use_tb=False)
    sink = _sink(tmp_path)
    position = None
    for frame, values in rows(3000):
        if frame == 2000 and position is None:
            position = logger.position(2000)  # the checkpoint, taken before anything at 2000 is logged
        sink.scalars(logger.scalars(values, frame), frame)
    first_id = sink.run_id
    sink.close()
    logger.close()

    logger = Logger(tmp_path, use_tb=False, resume=position)
    sink = _sink(tmp_path)
    assert sink.run_id == first_id
    assert sink.backfill(read_scalars_csv(tmp_path / "scalars.csv")) == 0  # the earlier file holds them all
    sent = [sink.scalars(logger.scalars(values, frame), frame) for frame, values in rows(4000) if frame >= 2000]
    sink.close()
    logger.close()

    # What W&B already held from the interrupted process is not sent again; the rest is.
    assert sent == [{}, {}, {}, {"time/fps": 4100.0, "train/loss": 4000 / 7}, {"eval/return": -4000 / 3}]
    first, second = segment_files(tmp_path, first_id)
    assert read_segment(first)[0]["run_id"] == read_segment(second)[0]["run_id"] == first_id
    assert [step for step, _ in read_segment(second)[1]] == [4000]
    history = _scalars_only(read_run_history(tmp_path, first_id))
    assert history == read_scalars_csv(tmp_path / "scalars.csv")
    assert [f for f, _ in history["eval/return"]] == [0, 2000, 4000]


def test_rows_a_killed_process_never_wrote_are_backfilled_from_the_csv(wandb_env: None, tmp_path: Path) -> None:
    """A SIGKILL loses what wandb-core had not flushed, here everything after frame 0, checkpoint (2000) included."""
    logger = Logger(tmp_path, use_tb=False)
    sink = _sink(tmp_path)
    for frame in (0, 1000, 2000, 3000):
        if frame == 2000:
            position = logger.position(frame)
        sink.scalars(logger.scalars({"train/loss": frame / 7, "eval/return": -frame / 3}, frame), frame)
    sink.close()
    logger.close()
    (log_file,) = segment_files(tmp_path, sink.run_id)
    data = log_file.read_bytes()
    cut = next(n for n in range(len(data), 0, -1) if [f for f, _ in read_segment_bytes(tmp_path, data[:n])] == [0])
    log_file.write_bytes(data[:cut])  # the file as the kill left it: the rows after frame 0 never reached disk

    logger = Logger(tmp_path, use_tb=False, resume=position)
    sink = _sink(tmp_path)
    assert sink.backfill(read_scalars_csv(tmp_path / "scalars.csv")) == 2  # frame 1000's two tags
    for frame in (2000, 3000, 4000):
        assert sink.scalars(logger.scalars({"train/loss": frame / 7, "eval/return": -frame / 3}, frame), frame)
    sink.close()
    logger.close()
    history = _scalars_only(read_run_history(tmp_path, sink.run_id))
    assert history == read_scalars_csv(tmp_path / "scalars.csv")
    assert [f for f, _ in history["train/loss"]] == [0, 1000, 2000, 3000, 4000]


def read_segment_bytes(tmp_path: Path, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """:func:`read_segment` of a file holding ``data``."""
    path = tmp_path / "probe.wandb"
    path.write_bytes(data)
    return read_segment(path)[1]


def test_the_partly_logged_frame_gets_its_missing_tags(wandb_env: None, tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.scalars({"train/loss": 1.0}, 0)
    sink.scalars({"train/loss": 2.0}, 1000)  # interrupted before eval/return at 1000
    sink.close()
    sink = _sink(tmp_path)
    assert sink.scalars({"train/loss": 2.0}, 1000) == {}
    assert sink.scalars({"eval/return": 5.0}, 1000) == {"eval/return": 5.0}
    sink.close()
    history = _scalars_only(read_run_history(tmp_path, sink.run_id))
    assert history == {"train/loss": [(0, 1.0), (1000, 2.0)], "eval/return": [(1000, 5.0)]}


def test_run_id_is_stored_once_and_resume_id_replaces_it(tmp_path: Path) -> None:
    first = run_id_for(tmp_path)
    assert len(first) == 8 and first.isalnum()
    assert run_id_for(tmp_path) == first
    assert run_id_for(tmp_path, "given123") == "given123"
    assert run_id_for(tmp_path) == "given123"
    assert (tmp_path / ID_FILE).read_text() == "given123\n"


def test_a_torn_log_reads_up_to_the_tear(offline_run: dict[str, Any], tmp_path: Path) -> None:
    (path,) = segment_files(offline_run["run_dir"], offline_run["run_id"])
    whole = read_segment(path)[1]
    data = path.read_bytes()
    torn = tmp_path / "torn.wandb"
    for cut in (len(data) // 3, len(data) - 5):
        torn.write_bytes(data[:cut])
        rows = read_segment(torn)[1]
        assert rows == whole[: len(rows)]
    torn.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a version-0 W&B transaction log"):
        read_segment(torn)


def test_disabled_mode_writes_nothing(wandb_env: None, tmp_path: Path) -> None:
    sink = WandbSink(tmp_path / "run", CONFIG, "rlplastic", None, "disabled", "test-run", None)
    assert sink.scalars({"train/loss": 1.0}, 0) == {}
    assert not sink.image("eval/frame", IMAGE, 0)
    assert sink.run is None
    sink.close()
    assert not (tmp_path / "run").exists()
    with pytest.raises(RuntimeError, match="after close"):
        sink.scalars({"train/loss": 1.0}, 1)


def test_a_bad_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wandb mode must be one of"):
        WandbSink(tmp_path, CONFIG, "rlplastic", None, "sometimes", "test-run", None)


def test_missing_wandb_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_wandb(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ValueError) as err:
        WandbSink(tmp_path, CONFIG, "rlplastic", None, "offline", "test-run", None)
    assert str(err.value) == "logger.wandb=true needs the wandb package: pip install 'rlplastic[wandb]'"
    assert str(err.value) == MISSING_WANDB
    assert not list(tmp_path.iterdir())  # failed before touching the run dir


def test_module_imports_without_wandb() -> None:
    code = "import sys; sys.modules['wandb'] = None; import rlplastic.wandb_sink; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_training_run_with_logger_wandb_mirrors_its_csv(wandb_env: None, tmp_path: Path) -> None:
    """End to end through train.py's code: ``logger.wandb=true`` puts every CSV row into the offline W&B run."""
    import train
    from tests.test_trainer import STATES, compose_config

    cfg = compose_config([*STATES, "num_train_frames=2000", "eval_every_frames=1000", "num_eval_episodes=1",
                          "logger.wandb=true", "logger.wandb_mode=offline", f"run_dir={tmp_path}"])  # fmt: skip
    assert train.run(cfg)["status"] == "complete"
    history = _scalars_only(read_run_history(tmp_path, run_id_for(tmp_path)))
    csv = read_scalars_csv(tmp_path / "scalars.csv")
    assert history == {tag: rows for tag, rows in csv.items()}
    assert {"train/critic_loss", "eval/episode_reward", "plasticity/critic/fau", "rr/value"} <= set(history)
