"""Crash-proof checkpoints, safe loading, global RNG capture, and the run-complete marker.

A run dir holds numbered payload files (``checkpoint-<seq>-frame<F>.pt``, written by ``torch.save``)
and one pointer, ``checkpoint.json``, naming the current payload and the previous one with their
frame, byte size and SHA-256. **Replacing the pointer is the only commit point**: the payload is
written to a temporary file, fsynced and renamed into place first, and the pointer is then replaced
atomically (temporary file, fsync, rename, directory fsync). A process killed at any instant leaves
either the old pointer (and its payloads, untouched) or the new one; a payload that no pointer names
is an unfinished save and is ignored, then deleted by the next save.

Loading verifies the current payload's size and checksum before ``torch.load(weights_only=True)``
(a checkpoint holds tensors and plain values only, so loading one never runs pickled code). If the
current payload is missing or damaged, the previous one is verified and used, and the caller is told
so; if neither can be trusted, :class:`~rlplastic.errors.CheckpointError` names the files, what is
wrong with each, and what to do. Two payloads are kept at rest (current and previous); the older
one is deleted only after the next commit, so while a save is being written three exist.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from rlplastic.errors import CheckpointError
from rlplastic.faults import fault_point

POINTER_NAME = "checkpoint.json"
COMPLETE_NAME = "run_complete.json"
PAYLOAD_GLOB = "checkpoint-*.pt"
TMP_SUFFIX = ".tmp"
_FORMAT = 2
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckpointRecord:
    """One payload as the pointer vouches for it."""

    file: str
    frame: int
    bytes: int
    sha256: str


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: its state, which payload it came from, and what was skipped on the way."""

    state: dict[str, Any]
    record: CheckpointRecord
    notes: list[str] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through (torch.save writes to it)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.error: OSError | None = None  # torch.save reports a failed write as a RuntimeError; keep the cause

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._file.flush()


def _write_atomic(path: Path, write: Callable[[IO[bytes]], Any], point: str) -> Any:
    """Write ``path`` via a temporary file, fsync, rename and directory fsync; returns ``write``'s result.

    ``point`` names the fault points of the steps (``<point>_write``, ``_fsync``, ``_rename``, ``_dirsync``).
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fault_point(f"{point}_write", tmp)
        with open(tmp, "wb") as f:
            result = write(f)
            f.flush()
            fault_point(f"{point}_fsync", tmp)
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fault_point(f"{point}_rename", tmp)
    os.replace(tmp, path)
    fault_point(f"{point}_dirsync", path)
    _fsync_dir(path.parent)
    return result


def _read_pointer(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / POINTER_NAME
    if not path.exists():
        return None
    try:
        pointer = json.loads(path.read_text())
        if not isinstance(pointer, dict) or "frame" not in pointer:
            raise ValueError("not a checkpoint pointer")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} cannot be read ({err}): it records which checkpoint is valid, so nothing can be resumed "
            f"safely. Move {run_dir} aside (or delete it) to start the run over"
        ) from None
    return pointer


def _records(pointer: dict[str, Any]) -> list[CheckpointRecord]:
    return [CheckpointRecord(**pointer[key]) for key in ("current", "previous") if pointer.get(key)]


def _write_pointer(run_dir: Path, frame: int, seq: int, current: CheckpointRecord | None,
                   previous: CheckpointRecord | None, point: str) -> None:  # fmt: skip
    pointer = {
        "format": _FORMAT, "frame": frame, "seq": seq,
        "current": None if current is None else asdict(current),
        "previous": None if previous is None else asdict(previous),
    }  # fmt: skip
    _write_atomic(run_dir / POINTER_NAME, lambda f: f.write(json.dumps(pointer, indent=1).encode()), point)


def latest_checkpoint(run_dir: str | Path) -> CheckpointRecord | None:
    """The payload the pointer currently names (not verified), or ``None``; for messages."""
    try:
        pointer = _read_pointer(Path(run_dir))
    except CheckpointError:
        return None
    records = [] if pointer is None or "current" not in pointer else _records(pointer)
    return records[0] if records else None


def _prune(run_dir: Path, keep: set[str]) -> None:
    for path in [*run_dir.glob(PAYLOAD_GLOB), *run_dir.glob(f"{PAYLOAD_GLOB}{TMP_SUFFIX}"),
                 run_dir / (POINTER_NAME + TMP_SUFFIX)]:  # fmt: skip
        if path.name not in keep:
            path.unlink(missing_ok=True)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], frame: int) -> Path:
    """Commit ``state`` as the run's checkpoint at ``frame``; returns the payload's path.

    The previous checkpoint stays valid until the new pointer is in place.

    Raises:
        CheckpointError: the payload could not be written (disk full, permissions); the message says
            how much was written and that the last checkpoint is intact.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pointer = _read_pointer(run_dir) or {}
    records = _records(pointer) if "current" in pointer else []
    current = records[0] if records else None
    seq = int(pointer.get("seq", 0)) + 1
    _prune(run_dir, keep={record.file for record in records})  # unfinished saves and stray temporary files

    path = run_dir / f"checkpoint-{seq:06d}-frame{frame}.pt"
    writer: list[_HashingWriter] = []

    def write(f: IO[bytes]) -> _HashingWriter:
        writer.append(_HashingWriter(f))
        torch.save(state, writer[0])
        return writer[0]

    try:
        hashed = _write_atomic(path, write, "payload")
    except (OSError, RuntimeError) as err:
        cause = writer[0].error if writer and writer[0].error is not None else err
        if not isinstance(cause, OSError):
            raise
        raise _write_error(run_dir, path, cause, writer[0].bytes if writer else 0, current) from None
    record = CheckpointRecord(path.name, int(frame), hashed.bytes, hashed.sha256.hexdigest())
    try:
        _write_pointer(run_dir, record.frame, seq, record, current, "pointer")
    except OSError as err:
        raise _write_error(run_dir, run_dir / POINTER_NAME, err, 0, current) from None
    fault_point("committed", path)
    _prune(run_dir, keep={record.file} | ({current.file} if current else set()))
    return path


def _write_error(
    run_dir: Path, path: Path, err: OSError, written: int, last: CheckpointRecord | None
) -> CheckpointError:
    intact = (f"the last checkpoint ({last.file}, frame {last.frame}) is intact" if last is not None
              else "no earlier checkpoint exists")  # fmt: skip
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(run_dir).free
        return CheckpointError(
            f"no space left on the device while writing {path} ({written / 2**20:.1f} MiB written, "
            f"{free / 2**20:.1f} MiB free in {run_dir}); {intact}. Free some space and re-run the same command "
            "to resume"
        )
    return CheckpointError(f"cannot write {path} ({err.strerror or err}); {intact}")


def _verify(run_dir: Path, record: CheckpointRecord) -> str | None:
    """What is wrong with a payload, or ``None`` when its size and checksum match the pointer."""
    path = run_dir / record.file
    if not path.exists():
        return "is missing"
    size = path.stat().st_size
    if size != record.bytes:
        return f"is {size} bytes but the pointer vouches for {record.bytes} (truncated or overwritten)"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != record.sha256:
        return "does not match its checksum (its bytes changed after it was written)"
    return None


def _load_legacy(run_dir: Path, pointer: dict[str, Any], map_location: Any) -> LoadedCheckpoint:
    """A checkpoint from before the pointer format: ``checkpoint.pt`` and a size-only marker."""
    path = run_dir / "checkpoint.pt"
    if not path.exists() or path.stat().st_size != pointer.get("bytes"):
        raise CheckpointError(f"{path} does not match its marker {POINTER_NAME}; move {run_dir} aside to start over")
    state = torch.load(path, map_location=map_location, weights_only=True)
    record = CheckpointRecord(path.name, int(pointer["frame"]), path.stat().st_size, "")
    return LoadedCheckpoint(state, record, [f"{path.name} is in the older format without a checksum"])


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint | None:
    """The newest checkpoint that verifies, or ``None`` when the run dir has none.

    Payload files without a pointer (a save killed before its first commit) count as none.

    Raises:
        CheckpointError: a pointer exists but no payload it names verifies and loads.
    """
    run_dir = Path(run_dir)
    pointer = _read_pointer(run_dir)
    if pointer is None:
        return None
    if "current" not in pointer:
        return _load_legacy(run_dir, pointer, map_location)
    notes, problems = [], []
    for record in _records(pointer):
        problem = _verify(run_dir, record)
        if problem is None:
            try:
                state = torch.load(run_dir / record.file, map_location=map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable payload is refused the same way
                problem = f"cannot be loaded safely ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            else:
                return LoadedCheckpoint(state, record, notes)
        problems.append(f"{record.file} (frame {record.frame}) {problem}")
        notes.append(f"skipped {record.file} (frame {record.frame}): it {problem}")
    raise CheckpointError(
        f"no valid checkpoint in {run_dir}: " + "; ".join(problems or ["the pointer names no payload"])
        + f". Move {run_dir} aside (or delete it) to start the run over"
    )


def mark_complete(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Record that the run finished (re-running the same command then does no new training)."""
    payload = json.dumps(summary, indent=2, allow_nan=False).encode()
    _write_atomic(Path(run_dir) / COMPLETE_NAME, lambda f: f.write(payload), "complete")


def read_complete(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary written by :func:`mark_complete`, or ``None`` if the run has not finished."""
    path = Path(run_dir) / COMPLETE_NAME
    return json.loads(path.read_text()) if path.exists() else None


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's global and torch's (CPU and CUDA) generators, as loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": (py_version, list(py_state), py_gauss),
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
