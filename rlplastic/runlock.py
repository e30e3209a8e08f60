"""One process per run dir: an OS file lock (``flock``) that dies with its process.

Two processes writing one run dir interleave their logs and checkpoints. The lock file
``<run_dir>/.lock`` holds the holder's PID; the lock itself is the kernel's, so a process killed with
SIGKILL releases it at once and a stale lock file never blocks a resume.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from rlplastic.errors import RunDirBusy

LOCK_NAME = ".lock"


class RunDirLock:
    """Hold ``<run_dir>/.lock`` exclusively while in the ``with`` block.

    Raises:
        RunDirBusy: on entry, when another live process holds it (the message names its PID).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(
                f"{self.path.parent} is in use by process {holder} (lock {self.path}): one process per run dir. "
                "Wait for it to finish or stop it (its checkpoint lets the same command resume)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
