"""Weights & Biases mirror of the :class:`~rlplastic.logger.Logger`: the same tags, the x-axis in environment frames.

``wandb`` is optional (``pip install 'rlplastic[wandb]'``) and imported only when a :class:`WandbSink` is built.

**X-axis.** Every row is logged with ``run.log(values, step=frame)``, so W&B's own step *is* the environment
frame: every panel's default x-axis, the media sliders (images, videos) and the run table's ``_step`` are in
frames, and the keys are the TensorBoard tags unchanged (W&B groups panels by the prefix before the first ``/``,
as TensorBoard does). The calls made at one frame (train scalars, then eval, then the monitor) merge into one
history row. The alternative, ``define_metric("*", step_metric="frame")``, allows frames to go backwards but
gives each call its own hidden ``_step``, so a resumed run's re-logged rows would appear twice, and the media
sliders would not be in frames. The price of ``step=frame`` is that W&B refuses a step lower than the
current one; the trainer's frames never decrease, and the sink drops (with one warning) any call that would.

**Resume.** The W&B run id lives in ``run_dir/wandb_id.txt``, so every process training a run dir continues the
same W&B run (``resume="allow"``); W&B's files go to ``run_dir/wandb/`` (one ``offline-run-*`` or ``run-*``
folder per process, all with that id; ``wandb sync run_dir/wandb/offline-run-*`` uploads them as one run).

The CSV and TensorBoard are cut back to the checkpoint when a run resumes, and the rows after it are logged
again. W&B cannot cut a run's history offline (its "rewind", ``resume_from``, is a server-side beta feature), so
the sink makes the history come out the same another way:

1. *No repeats.* Before starting, it reads the history the earlier processes wrote to their ``.wandb`` files
   under ``run_dir/wandb/`` and drops each ``(tag, frame)`` already there (a frame at or below the last one
   stored for that tag).
2. *No holes.* ``wandb-core`` writes its ``.wandb`` file only every 15 s (and at a clean finish): a SIGKILL loses
   the rows of the last seconds, which can include rows from *before* the checkpoint that the resumed process
   will not log again. :meth:`WandbSink.backfill`, given the resumed ``scalars.csv`` (cut back to the
   checkpoint, so it holds exactly the rows before it), sends the rows the earlier files lack.

The run's history, summed over its folders, then holds each ``(tag, frame)`` of the CSV once. What a user sees:

* rows between the checkpoint and the interruption that the interrupted process had written keep its values.
  The trainer's resume is exact, so these equal the CSV's; where it is not (nondeterministic GPU kernels), W&B
  shows the interrupted process's values for those frames and the CSV and TensorBoard the resumed one's;
* a frame whose row was only partly written gets its missing tags from the resumed process;
* an online run resumed where the earlier folders are gone is deduplicated by W&B alone: it ignores every step
  below the next one it expects (the sink drops those rows itself, with one warning), and backfilled rows
  below it too. Images and videos are not backfilled.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import string
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

WANDB_DIR = "wandb"
ID_FILE = "wandb_id.txt"
MODES = ("offline", "online", "disabled")
_ID_ALPHABET = string.ascii_lowercase + string.digits
MISSING_WANDB = "logger.wandb=true needs the wandb package: pip install 'rlplastic[wandb]'"

log = logging.getLogger(__name__)

# The .wandb transaction log: a 7-byte file header (":W&B", magic 0xBEE1, version 0), then LevelDB-log records
# in 32 KiB blocks, each chunk with a header (CRC-32 of type byte + data, length, type); a record split over
# blocks comes as FIRST, MIDDLE..., LAST. Each record is a serialized ``wandb_internal_pb2.Record``.
_FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
_BLOCK = 32768
_CHUNK_HEADER = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _import_wandb() -> ModuleType:
    try:
        import wandb
    except ImportError as err:
        raise ValueError(MISSING_WANDB) from err
    return wandb


def run_id_for(run_dir: str | Path, resume_id: str | None = None) -> str:
    """The W&B run id of ``run_dir``, created and stored in ``run_dir/wandb_id.txt`` on first use.

    Args:
        run_dir: the run directory.
        resume_id: continue this W&B run instead; it replaces the stored id, so later resumes keep it.
    """
    path = Path(run_dir) / ID_FILE
    stored = path.read_text().strip() if path.exists() else ""
    run_id = resume_id or stored
    if not run_id:
        run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))  # W&B's own id format
    if run_id != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(run_id + "\n")
        os.replace(tmp, path)  # a kill mid-write never leaves a torn id
    return run_id


def read_records(path: str | Path) -> Iterator[bytes]:
    """The serialized records of one ``.wandb`` file, in order, stopping quietly at a torn or unflushed tail.

    Raises:
        ValueError: the file does not start with the header of a version-0 W&B transaction log.
    """
    data = Path(path).read_bytes()
    if not data.startswith(_FILE_HEADER):
        raise ValueError(f"{path} is not a version-0 W&B transaction log (header {data[:7]!r})")
    pos, pending = len(_FILE_HEADER), None
    while True:
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER.size:  # a block's tail too short for a chunk header is zero padding
            pos += room
        if pos + _CHUNK_HEADER.size > len(data):
            return
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE and pending is not None:
            pending += chunk
        elif kind == _LAST and pending is not None:
            yield pending + chunk
            pending = None
        else:
            return


def read_segment(path: str | Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
    """One ``.wandb`` file's run record and history.

    Returns:
        ``(run, rows)``: ``run`` has ``run_id``, ``start_time`` (seconds) and ``config`` (the attached config,
        W&B's own ``_wandb`` key left out); ``rows`` is ``[(step, {tag: value})]`` in logged order, without
        W&B's ``_step``/``_runtime``/``_timestamp``. Media values are W&B's JSON descriptions (``_type``,
        ``path``...), the path relative to the folder's ``files/``.
    """
    from wandb.proto import wandb_internal_pb2

    run: dict[str, Any] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    for raw in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run" and not run:
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            config.pop("_wandb", None)
            start = record.run.start_time
            run = {"run_id": record.run.run_id, "start_time": start.seconds + start.nanos * 1e-9, "config": config}
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                path = [item.key] if item.key else list(item.nested_key)
                if path[0].startswith("_"):
                    continue
                node = row
                for key in path[:-1]:  # a media value comes as one item per field: ("eval/video", "path")...
                    node = node.setdefault(key, {})
                node[path[-1]] = json.loads(item.value_json)
            rows.append((int(record.history.step.num), row))
    return run, rows


def _start_time(path: Path) -> float:
    """When the process that wrote ``path`` started its run (0 if the file holds no run record yet)."""
    from wandb.proto import wandb_internal_pb2

    for raw in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            return record.run.start_time.seconds + record.run.start_time.nanos * 1e-9
    return 0.0


def segment_files(run_dir: str | Path, run_id: str) -> list[Path]:
    """The ``.wandb`` files of W&B run ``run_id`` under ``run_dir/wandb/`` (one per process), oldest first."""
    safe = glob.escape(run_id)
    files = [p for p in (Path(run_dir) / WANDB_DIR).glob(f"*run-*-{safe}*/run-{safe}.wandb") if p.is_file()]
    return sorted(files, key=lambda p: (_start_time(p), p.parent.name))


def read_run_history(run_dir: str | Path, run_id: str) -> dict[str, list[tuple[int, Any]]]:
    """Every process's history of W&B run ``run_id`` under ``run_dir``, as ``{tag: [(frame, value), ...]}``.

    The same shape as :func:`rlplastic.logger.read_scalars_csv`, so the two can be compared directly.
    """
    series: dict[str, list[tuple[int, Any]]] = {}
    for path in segment_files(run_dir, run_id):
        for step, row in read_segment(path)[1]:
            for tag, value in row.items():
                series.setdefault(tag, []).append((step, value))
    return series


def _wait_for_exit_record(path: Path, timeout: float) -> bool:
    """Wait until ``path`` holds an exit record (the last one a finished run writes); whether it came in time."""
    from wandb.proto import wandb_internal_pb2

    deadline, pause = time.monotonic() + timeout, 0.01
    while True:
        if path.exists():
            for raw in read_records(path):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(raw)
                if record.WhichOneof("record_type") == "exit":
                    return True
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(2 * pause, 0.25)


class WandbSink:
    """Mirrors the logger's scalars (and images, videos) to a W&B run whose history is in environment frames.

    See the module docstring for the x-axis and for what a resumed run's history holds.

    Args:
        run_dir: the run directory; W&B's files go to ``run_dir/wandb/``, its run id to ``run_dir/wandb_id.txt``.
        config: the resolved config (a plain nested dict), attached to the run.
        project: the W&B project.
        entity: the W&B entity (user or team); ``None`` for the default one.
        mode: ``"offline"`` (write locally, upload later with ``wandb sync``), ``"online"`` or ``"disabled"``
            (every call a no-op, nothing written).
        run_name: the run's display name.
        resume_id: continue this W&B run id instead of the run dir's own (it is stored as the run dir's).
        group: the W&B group, e.g. the variant, so the UI can average its seeds.
        tags: W&B tags of the run.
        settings: extra ``wandb.Settings`` fields, e.g. ``{"x_disable_stats": True, "console": "off"}``.

    Raises:
        ValueError: ``wandb`` is not installed, or ``mode`` is not one of :data:`MODES`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any],
        project: str,
        entity: str | None,
        mode: str,
        run_name: str,
        resume_id: str | None = None,
        *,
        group: str | None = None,
        tags: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {MODES}, got {mode!r}")
        self._wandb = _import_wandb()
        self.run_dir = Path(run_dir)
        self.mode = mode
        self._warned_backwards = False
        self._frame = 0
        self._stored: dict[str, int] = {}
        self._log_file: Path | None = None
        self._closed = False
        self._run: Any = None
        if mode == "disabled":  # no wandb.init at all: it could hand back another sink's active run
            self.run_id = resume_id or ""
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id_for(self.run_dir, resume_id)
        self._stored = self._stored_frames()
        self._run = self._wandb.init(
            dir=str(self.run_dir), project=project, entity=entity, name=run_name, id=self.run_id, resume="allow",
            group=group, tags=None if tags is None else list(tags), config=dict(config), mode=mode,
            reinit="create_new",
            settings=self._wandb.Settings(**{"allow_val_change": True, **(settings or {})}),
        )  # fmt: skip
        self._log_file = Path(self._run.settings.sync_file)
        if self._run.resumed:  # online: W&B itself ignores steps below the next one it expects
            self._frame = int(self._run.step)

    @property
    def run(self) -> Any:
        """The underlying ``wandb`` run (for anything the sink does not mirror); ``None`` when disabled or closed."""
        return self._run

    def _stored_frames(self) -> dict[str, int]:
        """The last frame of each tag in the earlier processes' ``.wandb`` files of this run."""
        last: dict[str, int] = {}
        try:
            for path in segment_files(self.run_dir, self.run_id):
                for step, row in read_segment(path)[1]:
                    for tag in row:
                        last[tag] = max(step, last.get(tag, step))
        except Exception as err:  # an unreadable log costs the deduplication, never the run
            log.warning("W&B: could not read the earlier history of %s (%s); resumed rows may repeat", self.run_id, err)
            return {}
        return last

    def _log(self, values: Mapping[str, Any], frame: int) -> dict[str, Any]:
        frame = int(frame)
        if self._closed:
            raise RuntimeError("WandbSink used after close()")
        if self._run is None:  # disabled
            return {}
        if frame < self._frame:
            if not self._warned_backwards:
                log.warning("W&B: dropping rows at frame %d < %d (W&B steps cannot go back)", frame, self._frame)
                self._warned_backwards = True
            return {}
        kept = {tag: value for tag, value in values.items() if frame > self._stored.get(tag, -1)}
        if kept:
            self._run.log(kept, step=frame)
            self._frame = frame
        return kept

    def scalars(self, values: Mapping[str, float], frame: int) -> dict[str, float]:
        """Log ``values`` (floats, e.g. what :meth:`Logger.scalars` returned) at ``frame``.

        Returns:
            The tags and values actually sent: those already in the run's history (a resumed run's re-logged
            rows) or at a frame lower than the last logged one are left out.
        """
        return self._log({tag: float(value) for tag, value in values.items()}, frame)

    def backfill(self, series: Mapping[str, Sequence[tuple[int, float]]]) -> int:
        """Send the rows of ``series`` that the earlier processes' ``.wandb`` files lack, in frame order.

        Call it right after building the sink of a resumed run, with the resumed logger's CSV (cut back to the
        checkpoint), ``read_scalars_csv(run_dir / "scalars.csv")``: it fills what a killed process had not
        written yet. For a new run the CSV is empty and this does nothing.

        Args:
            series: ``{tag: [(frame, value), ...]}``, the shape :func:`~rlplastic.logger.read_scalars_csv` returns.

        Returns:
            How many ``(tag, frame)`` values were sent.
        """
        rows: dict[int, dict[str, float]] = {}
        for tag, points in series.items():
            for frame, value in points:
                if frame > self._stored.get(tag, -1):
                    rows.setdefault(int(frame), {})[tag] = float(value)
        return sum(len(self._log(rows[frame], frame)) for frame in sorted(rows))

    def image(self, tag: str, image: np.ndarray, frame: int, caption: str | None = None) -> bool:
        """Log an ``(H, W, 3)`` (or ``(H, W)``) uint8 image at ``frame``; returns whether it was sent."""
        array = np.ascontiguousarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(f"image must be a (H, W[, C]) uint8 array, got {array.dtype} {array.shape}")
        if self.mode == "disabled":
            return False
        return bool(self._log({tag: self._wandb.Image(array, caption=caption)}, frame))

    def video(self, tag: str, video: str | Path | np.ndarray, frame: int, fps: int = 30) -> bool:
        """Log a video at ``frame``: a file (e.g. the mp4 :meth:`Logger.video` wrote) or ``(T, H, W, 3)`` uint8 frames.

        A file is uploaded as it is; frames are encoded by W&B, which needs ``moviepy``. Returns whether it
        was sent.
        """
        if self.mode == "disabled":
            return False
        if isinstance(video, (str, Path)):
            media = self._wandb.Video(str(video))
        else:
            array = np.asarray(video)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
                raise ValueError(f"video frames must be a (T, H, W, 3) uint8 array, got {array.dtype} {array.shape}")
            media = self._wandb.Video(np.ascontiguousarray(array.transpose(0, 3, 1, 2)), fps=fps, format="mp4")
        return bool(self._log({tag: media}, frame))

    @property
    def log_file(self) -> Path | None:
        """This process's ``.wandb`` file (``None`` when disabled)."""
        return self._log_file

    def close(self, timeout: float = 30.0) -> None:
        """Finish the run: the last row is written, and the ``.wandb`` file is complete when this returns.

        ``run.finish()`` can return before ``wandb-core`` has written its last buffered records, so this
        waits (at most ``timeout`` seconds) until the file holds the run's exit record: a sink built next,
        or ``wandb sync``, then sees the whole history. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        if self._run is None:
            return
        self._run.finish()
        self._run = None
        if self._log_file is not None and not _wait_for_exit_record(self._log_file, timeout):
            log.warning("W&B: %s is still incomplete %.0f s after finish()", self._log_file, timeout)

    def __enter__(self) -> WandbSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
