"""TensorBoard and CSV sinks sharing one tag namespace, with the x-axis in environment frames.

Tag namespaces (docs/design.md): ``train/…``, ``eval/…``, ``time/…``, ``plasticity/<module>/…``,
``rr/…``, ``events/…``. The CSV sink is long-format (``frame,tag,value``) so any tag, present or
future, lands in the same file and tools can read every run the same way.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from rlplastic.wandb_sink import WandbSink

CSV_NAME = "scalars.csv"
TB_DIR = "tb"
VIDEO_DIR = "videos"
_EVENTS_GLOB = "events.out.tfevents.*"


def _to_floats(values: Mapping[str, float | int | torch.Tensor]) -> dict[str, float]:
    """Convert scalars to floats with a single host sync for all tensors."""
    tensor_keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if tensor_keys:
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in tensor_keys])
        out.update(zip(tensor_keys, stacked.cpu().tolist(), strict=True))
    return out


class RunningMeans:
    """Sums per-update metrics on their device and hands back the means at log time.

    Adding is device arithmetic only, so calling :meth:`add` every update costs no host sync.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor | float] = {}
        self._count = 0

    def add(self, metrics: Mapping[str, float | torch.Tensor]) -> None:
        for key, value in metrics.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def state_dict(self) -> dict[str, Any]:
        """The open window, so a resumed run logs the same means as an uninterrupted one."""
        return {"sums": dict(self._sums), "count": self._count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._sums, self._count = dict(state["sums"]), int(state["count"])

    def pop_means(self) -> dict[str, float | torch.Tensor]:
        """Means since the last call (still on device), then reset."""
        means = {key: total / self._count for key, total in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means


class Logger:
    """Writes scalars to TensorBoard (``run_dir/tb``) and ``run_dir/scalars.csv``, videos to ``run_dir/videos``.

    Args:
        run_dir: the run directory.
        use_tb: write TensorBoard event files.
        use_csv: write the long-format CSV.
        resume: the :meth:`position` stored in the checkpoint being resumed. Whatever the
            interrupted process logged after it is discarded byte for byte: the CSV and the event file
            that was open are cut back to their sizes at the checkpoint, and event files begun after it
            are deleted. A resumed run's logs then hold exactly the rows of an uninterrupted run.
            ``None``: a fresh start; logs left by a process that died before its first checkpoint are
            cleared (:meth:`clear`), so a run never holds two starts.
    """

    def __init__(
        self, run_dir: str | Path, use_tb: bool = True, use_csv: bool = True, resume: Mapping[str, Any] | None = None,
        wandb: WandbSink | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume is None:
            self.clear(self.run_dir)
        else:
            _cut_back(self.run_dir, resume)
        self._tb = None
        if use_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / TB_DIR))
        # tags the dashboard charts, and tags logged since (update_layout re-charts when they differ)
        self._charted: set[str] = set() if resume is None else set(resume.get("charted", ()))
        self._seen: set[str] = set(self._charted)
        self._csv_file = None
        if use_csv:
            path = self.run_dir / CSV_NAME
            new = not path.exists() or path.stat().st_size == 0
            self._csv_file = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(["frame", "tag", "value"])
        self._wandb = wandb
        if wandb is not None and resume is not None and use_csv:
            wandb.backfill(read_scalars_csv(self.run_dir / CSV_NAME))  # the rows a killed process had not sent

    @staticmethod
    def has_logs(run_dir: str | Path) -> bool:
        """Whether ``run_dir`` holds logs (CSV rows, event files or videos) of an earlier process."""
        run_dir = Path(run_dir)
        csv_path = run_dir / CSV_NAME
        return ((csv_path.exists() and csv_path.stat().st_size > 0) or any((run_dir / TB_DIR).glob(_EVENTS_GLOB))
                or any((run_dir / VIDEO_DIR).glob("*")))  # fmt: skip

    @staticmethod
    def clear(run_dir: str | Path) -> None:
        """Delete the logs of ``run_dir`` (CSV, event files, videos)."""
        run_dir = Path(run_dir)
        (run_dir / CSV_NAME).unlink(missing_ok=True)
        for path in [*(run_dir / TB_DIR).glob(_EVENTS_GLOB), *(run_dir / VIDEO_DIR).glob("*")]:
            path.unlink(missing_ok=True)

    @property
    def tb_writer(self) -> Any:
        """The underlying ``SummaryWriter`` (``None`` when TensorBoard is off), e.g. for layouts."""
        return self._tb

    def scalars(self, values: Mapping[str, float | int | torch.Tensor], frame: int) -> dict[str, float]:
        """Log scalars at ``frame``; tensors are read here, in one sync. Returns the floats written."""
        floats = _to_floats(values)
        self._seen.update(floats)
        for tag, value in floats.items():
            if self._tb is not None:
                self._tb.add_scalar(tag, value, frame)
            if self._csv_file is not None:
                self._csv.writerow([frame, tag, repr(value)])
        if self._wandb is not None:
            self._wandb.scalars(floats, frame)
        return floats

    def image(self, tag: str, image: np.ndarray, frame: int) -> None:
        """Add an ``(H, W, 3)`` uint8 picture to TensorBoard's Images tab at ``frame`` (no-op without TensorBoard)."""
        if self._tb is not None:
            self._tb.add_image(tag, image, frame, dataformats="HWC")

    def update_layout(self, frame: int, expected: Iterable[str] = ()) -> bool:
        """Re-write the TensorBoard dashboard (:mod:`rlplastic.dashboard`) if tags appeared since it was written.

        The layout covers every tag logged so far plus ``expected`` (tags known before they are
        logged, e.g. the monitor's). It is stamped at ``frame`` so the newest layout is the one
        TensorBoard shows. Returns whether it was written.
        """
        self._seen.update(expected)
        if self._tb is None or self._seen <= self._charted:
            return False
        from rlplastic.dashboard import write_layout

        # monitor tags first, in their own order (the dashboard keeps layers in forward order)
        tags = [*expected, *sorted(self._seen - set(expected))]
        write_layout(self._tb, tags, step=frame)
        self._charted = set(self._seen)
        return True

    def video(self, tag: str, frames: np.ndarray, frame: int, fps: int = 30) -> Path | None:
        """Save ``frames`` (T, H, W, 3 uint8) as ``videos/<tag>_<frame>.mp4``, and to TensorBoard when it can.

        TensorBoard's ``add_video`` silently writes nothing with moviepy ≥ 2 (docs/reference.md §5), so it
        is used only when a moviepy < 2 is importable. Returns the mp4 path, or ``None`` if no
        encoder is available.
        """
        path = None
        try:
            import imageio.v2 as imageio

            (self.run_dir / VIDEO_DIR).mkdir(exist_ok=True)
            path = self.run_dir / VIDEO_DIR / f"{tag.replace('/', '_')}_{frame}.mp4"
            imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)
        except (ImportError, RuntimeError, OSError):
            path = None
        if self._tb is not None and _moviepy_works_with_tensorboard():
            video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).unsqueeze(0)
            self._tb.add_video(tag, video, frame, fps=fps)
        if self._wandb is not None and path is not None:
            self._wandb.video(tag, path, frame, fps=fps)
        return path

    def position(self, frame: int) -> dict[str, Any]:
        """Where the logs stand at a checkpoint taken at ``frame``: the CSV's size and every event file's.

        Flushes both sinks to the OS and fsyncs them; pass the result back as ``resume`` when resuming.
        """
        self.flush(durable=True)
        csv_bytes = self._csv_file.tell() if self._csv_file is not None else 0
        tb_files = {p.name: p.stat().st_size for p in sorted((self.run_dir / TB_DIR).glob(_EVENTS_GLOB))}
        return {"frame": int(frame), "csv_bytes": csv_bytes, "tb_files": tb_files, "charted": sorted(self._charted)}

    def flush(self, durable: bool = False) -> None:
        """Push buffered rows and events to the OS, so they can be watched live.

        Args:
            durable: also fsync the CSV (before a checkpoint records its byte position).
        """
        if self._tb is not None:
            self._tb.flush()
        if self._csv_file is not None:
            self._csv_file.flush()
            if durable:
                os.fsync(self._csv_file.fileno())
        if durable and self._tb is not None:
            _fsync_file(Path(self._tb.file_writer.event_writer._file_name))

    def close(self) -> None:
        self.flush(durable=True)
        if self._tb is not None:
            self._tb.close()
        if self._csv_file is not None:
            self._csv_file.close()
        if self._wandb is not None:
            self._wandb.close()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _cut_back(run_dir: Path, position: Mapping[str, Any]) -> None:
    """Undo what was logged after ``position`` (see :class:`Logger`'s ``resume``)."""
    csv_path = run_dir / CSV_NAME
    if csv_path.exists():
        # Rows after the checkpoint may be torn by a SIGKILL: cut at the byte, not by parsing.
        os.truncate(csv_path, min(int(position["csv_bytes"]), csv_path.stat().st_size))
    sizes = position.get("tb_files", {})
    for path in (run_dir / TB_DIR).glob(_EVENTS_GLOB):
        if path.name not in sizes:
            path.unlink()  # begun after the checkpoint
        elif path.stat().st_size > sizes[path.name]:
            os.truncate(path, sizes[path.name])


def _moviepy_works_with_tensorboard() -> bool:
    if importlib.util.find_spec("moviepy") is None:
        return False
    from importlib.metadata import version

    return int(version("moviepy").split(".")[0]) < 2


def read_scalars_csv(path: str | Path, malformed: list[int] | None = None) -> dict[str, list[tuple[int, float]]]:
    """Read a run's ``scalars.csv`` into ``{tag: [(frame, value), ...]}`` in logged order.

    :param path: the CSV file.
    :param malformed: ``None`` (default): a row that does not parse raises. A list: such rows (a killed
        run's torn last write) are skipped and their line numbers appended to it; a row the CSV reader
        itself cannot read ends the file there.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            next(reader, None)
            for row in reader:
                try:
                    frame, tag, value = row
                    series.setdefault(tag, []).append((int(frame), float(value)))
                except ValueError:
                    if malformed is None:
                        raise
                    malformed.append(reader.line_num)
        except csv.Error:
            if malformed is None:
                raise
            malformed.append(reader.line_num)
    return series


def read_tb_scalars(tb_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Read every scalar series of a TensorBoard log dir into ``{tag: [(step, value), ...]}``.

    Uses TensorBoard's own reader, so what it shows (after its handling of restarts) is what is returned.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(tb_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}
