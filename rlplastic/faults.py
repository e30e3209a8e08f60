"""Fault injection for the tests of crash safety (off unless ``RLPLASTIC_FAULT`` is set).

The checkpoint commit calls :func:`fault_point` between each of its writes, fsyncs and renames. With
``RLPLASTIC_FAULT=<point>[@<n>]:<action>`` the ``n``-th arrival (default 1) at ``<point>`` in this
process does ``<action>``:

* ``kill``: SIGKILL this process (no cleanup runs: what a pre-emption or ``kill -9`` leaves behind);
* ``raise``: raise ``RuntimeError`` (an exception escaping mid-commit);
* ``enospc``: raise ``OSError(ENOSPC)`` (the disk filled up).

Several faults can be given, separated by commas. Without the variable a fault point costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV_VAR = "RLPLASTIC_FAULT"
ACTIONS = ("kill", "raise", "enospc")

_arrivals: dict[str, int] = {}


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        where, _, action = item.partition(":")
        point, _, count = where.partition("@")
        if action not in ACTIONS or not point or (count and not count.isdigit()):
            raise ValueError(f"{ENV_VAR}={spec!r}: expected <point>[@<n>]:<action> with action in {list(ACTIONS)}")
        faults[point] = (int(count or 1), action)
    return faults


def fault_point(point: str, path: os.PathLike | str | None = None) -> None:
    """Act on an injected fault at ``point`` if one is due (see the module docstring)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    due = _parse(spec).get(point)
    if due is None:
        return
    _arrivals[point] = _arrivals.get(point, 0) + 1
    if _arrivals[point] != due[0]:
        return
    action = due[1]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise RuntimeError(f"injected fault at {point}")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))
