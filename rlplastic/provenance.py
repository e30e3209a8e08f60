"""What made a run: command line, overrides, code version and library versions (``provenance.json``).

Every start of a run dir (the first and each resume) appends one entry, so a result can be traced to
the exact command, commit and libraries of each segment that produced it.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PROVENANCE_NAME = "provenance.json"
PACKAGES = ("torch", "mujoco", "dm_control", "numpy", "gymnasium", "hydra-core", "tensorboard")


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(repo: Path) -> dict[str, Any]:
    """The git commit of ``repo`` and whether its tracked files had local changes (``None`` outside git)."""
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def start_record(argv: Sequence[str], overrides: Sequence[str], repo: Path, resumed_from: int | None) -> dict[str, Any]:
    """One start of a run: when, where, how it was invoked, and with which code and libraries."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "argv": list(argv),
        "overrides": list(overrides),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "code": code_version(repo),
        "packages": package_versions(),
        "resumed_from_frame": resumed_from,
    }


def append_start(run_dir: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``run_dir/provenance.json`` (``{"starts": [...]}``)."""
    path = run_dir / PROVENANCE_NAME
    starts = json.loads(path.read_text()).get("starts", []) if path.exists() else []
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"starts": [*starts, record]}, indent=1))
    tmp.replace(path)
