"""Atomic checkpoints, safe loading, global RNG capture, and the run-complete marker.

A checkpoint is written to a temporary file, fsynced, renamed over ``checkpoint.pt`` and the directory
fsynced; only then is the completion marker (``checkpoint.json``) replaced, naming the frame and byte
size it vouches for. A crash at any point leaves either the previous checkpoint or the new one, never
a torn file. Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
Python values only, so loading one never runs pickled code.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
MARKER_NAME = "checkpoint.json"
COMPLETE_NAME = "run_complete.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], frame: int) -> Path:
    """Atomically write ``state`` as the run's checkpoint at ``frame``; returns its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT_NAME
    _write_atomic(path, lambda f: torch.save(state, f))
    marker = {"frame": int(frame), "bytes": path.stat().st_size}
    _write_atomic(run_dir / MARKER_NAME, lambda f: f.write(json.dumps(marker).encode()))
    return path


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load the run's checkpoint, or ``None`` when there is none yet.

    Raises:
        RuntimeError: when the checkpoint does not match its completion marker (a file copied or
            edited by hand): resuming from it could silently mix runs, so it is refused.
    """
    run_dir = Path(run_dir)
    path, marker_path = run_dir / CHECKPOINT_NAME, run_dir / MARKER_NAME
    if not path.exists():
        return None
    if not marker_path.exists():
        raise RuntimeError(f"{path} has no completion marker {MARKER_NAME}: it was not written by a finished save")
    marker = json.loads(marker_path.read_text())
    if marker["bytes"] != path.stat().st_size:
        raise RuntimeError(
            f"{path} is {path.stat().st_size} bytes but its marker {MARKER_NAME} vouches for {marker['bytes']}: "
            "refusing to resume from it"
        )
    return torch.load(path, map_location=map_location, weights_only=True)


def mark_complete(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Record that the run finished (re-running the same command then does no new training)."""
    _write_atomic(Path(run_dir) / COMPLETE_NAME, lambda f: f.write(json.dumps(summary, indent=2).encode()))


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
