"""Run discovery: run dirs found under the given paths, read from ``scalars.csv`` or ``tb/``, their identity
(task, variant, seed), completion state and status text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlplastic.checkpoint import COMPLETE_NAME, POINTER_NAME
from rlplastic.logger import CSV_NAME, TB_DIR, read_scalars_csv, read_tb_scalars
from rlplastic.report.stats import area_under_curve
from rlplastic.rundir import CONFIG_NAME, NON_SEMANTIC_KEYS

EVAL_TAG = "eval/episode_reward"
RR_TAG = "rr/value"
RR_SWITCH = "rr_switch"


class ReportError(ValueError):
    """Bad input to the report (a missing path, no runs or logs, an unknown variant or tag, ``reps < 1``)."""


@dataclass(eq=False)
class Run:
    """One run dir: its identity, completion state and logged scalars.

    :param path: the run dir, as discovered under the given paths.
    :param task: ``config.yaml``'s ``task_name``, else the grandparent dir's name (the parent's for a run dir not
        named ``seed<k>``).
    :param variant: the parent dir's name (``default`` or the overrides, e.g. ``aug=none,rr=adaptive``); for a run
        dir not named ``seed<k>`` (one placed with ``run_dir=...``), the run dir's own name.
    :param seed: ``config.yaml``'s ``seed``, else ``k`` from the ``seed<k>`` dir name, else the dir name.
    :param complete: whether ``run_complete.json`` says the run finished.
    :param last_frame: the largest frame logged under any tag (``None`` without logs).
    :param series: ``{tag: (frames, values)}``, frames sorted and unique (int64), values float64.
    :param checkpoint_frame: the frame of the last checkpoint (``checkpoint.json``), if any.
    :param notes: problems met while reading (unreadable files, torn CSV rows).
    :param config: the run's resolved ``config.yaml`` (empty without one).
    """

    path: Path
    task: str
    variant: str
    seed: int | str
    complete: bool
    last_frame: int | None
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    checkpoint_frame: int | None = None
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def has_eval(self) -> bool:
        """Whether the run logged at least one evaluation."""
        return EVAL_TAG in self.series and len(self.series[EVAL_TAG][0]) > 0

    @property
    def final_return(self) -> float | None:
        """The eval return at the last eval frame (``None`` without evaluations)."""
        return float(self.series[EVAL_TAG][1][-1]) if self.has_eval else None

    @property
    def auc(self) -> float | None:
        """The time-averaged eval return, see :func:`area_under_curve` (``None`` without evaluations)."""
        return area_under_curve(*self.series[EVAL_TAG]) if self.has_eval else None

    def events(self) -> dict[str, np.ndarray]:
        """``{name: frames}`` of the ``events/<name>`` tags (sub-tags ``events/<name>/<key>`` left out)."""
        return {tag.split("/")[1]: f for tag, (f, _) in self.series.items() if re.fullmatch(r"events/[^/]+", tag)}


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run dir itself: it holds ``config.yaml``, ``scalars.csv`` or ``tb/``."""
    return (path / CONFIG_NAME).is_file() or (path / CSV_NAME).is_file() or (path / TB_DIR).is_dir()


def _find_run_dirs(root: Path) -> list[Path]:
    found, stack, seen = [], [root], set()
    while stack:
        path = stack.pop()
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if is_run_dir(path):
            found.append(path)
            continue
        try:
            children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")), reverse=True)
        except OSError:
            continue
        stack.extend(children)
    return found


def _read_csv(path: Path, notes: list[str]) -> dict[str, list[tuple[int, float]]]:
    bad: list[int] = []
    rows = read_scalars_csv(path, malformed=bad)
    if bad:
        notes.append(f"{len(bad)} malformed row(s) in {CSV_NAME} skipped (a torn write?)")
    return rows


def _read_tb(tb_dir: Path, notes: list[str]) -> dict[str, list[tuple[int, float]]]:
    try:
        return read_tb_scalars(tb_dir)
    except Exception as error:  # a corrupt event file must not stop the whole report
        notes.append(f"unreadable TensorBoard events in {tb_dir.name}/ ({error.__class__.__name__}: {error})")
        return {}


def _to_arrays(pairs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    frames = np.array([p[0] for p in pairs], dtype=np.int64)
    values = np.array([p[1] for p in pairs], dtype=float)
    order = np.argsort(frames, kind="stable")
    frames, values = frames[order], values[order]
    last = np.append(frames[1:] != frames[:-1], True)  # the last value logged at each frame
    return frames[last], values[last]


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError) as error:
        notes.append(f"unreadable {path.name} ({error.__class__.__name__})")
        return {}


def load_run(path: str | Path) -> Run:
    """Read one run dir: identity from ``config.yaml`` and the dir names, scalars from the CSV or ``tb/``.

    :param path: the run dir (``<run_root>/<task>/<variant>/seed<k>``).
    """
    path, notes = Path(path), []
    config: dict[str, Any] = {}
    if (path / CONFIG_NAME).is_file():
        try:
            loaded = yaml.safe_load((path / CONFIG_NAME).read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            notes.append(f"unreadable {CONFIG_NAME} ({error.__class__.__name__}); task and seed taken from dir names")
    resolved = path.resolve()
    match = re.fullmatch(r"seed(-?\d+)", resolved.name)
    variant_dir = resolved.parent if match else resolved  # <task>/<variant>/seed<k>, or a run dir of its own
    task = str(config.get("task_name") or variant_dir.parent.name)
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        seed = int(match.group(1)) if match else resolved.name
    rows = _read_csv(path / CSV_NAME, notes) if (path / CSV_NAME).is_file() else {}
    if not rows and (path / TB_DIR).is_dir():
        rows = _read_tb(path / TB_DIR, notes)
    series = {tag: _to_arrays(pairs) for tag, pairs in sorted(rows.items()) if pairs}
    done = _read_json(path / COMPLETE_NAME, notes)
    marker = _read_json(path / POINTER_NAME, notes) or {}
    return Run(
        path=path, task=task, variant=variant_dir.name, seed=seed,
        complete=done is not None and done.get("status", "complete") == "complete",
        last_frame=max((int(f[-1]) for f, _ in series.values()), default=None), series=series,
        checkpoint_frame=marker.get("frame"), notes=notes, config=config,
    )  # fmt: skip


def _seed_key(run: Run) -> tuple:
    return (
        run.task,
        run.variant,
        isinstance(run.seed, str),
        run.seed if isinstance(run.seed, int) else 0,
        str(run.seed),
    )


def discover_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Find and read every run dir under ``paths`` (run dirs, variant/task dirs, run roots or sweep dirs).

    :param paths: where to look, searched recursively.
    :return: the runs, sorted by task, variant and seed; a dir reached twice is read once.
    :raises ReportError: a path does not exist or holds no run dir, or two dirs share (task, variant, seed).
    """
    runs: dict[Path, Run] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ReportError(f"path does not exist: {given}")
        if not root.is_dir():
            raise ReportError(f"not a directory: {given}")
        found = _find_run_dirs(root)
        if not found:
            raise ReportError(
                f"empty run dir: {given} holds no run dirs (expected {CONFIG_NAME}, {CSV_NAME} or {TB_DIR}/)"
            )
        for run_dir in found:
            if run_dir.resolve() not in runs:
                runs[run_dir.resolve()] = load_run(run_dir)
    by_key: dict[tuple, Run] = {}
    for run in runs.values():
        key = (run.task, run.variant, run.seed)
        if key in by_key:
            raise ReportError(
                f"two run dirs are task {run.task!r}, variant {run.variant!r}, seed {run.seed}: {by_key[key].path} "
                f"and {run.path}; report them separately"
            )
        by_key[key] = run
    return sorted(runs.values(), key=_seed_key)


def run_status(run: Run, counted: bool) -> str:
    """Why a run is listed under "Incomplete or failed runs": no logs, no evaluation, in progress or crashed."""
    if not run.series:
        found = [n for n in (CONFIG_NAME, CSV_NAME, TB_DIR) if (run.path / n).exists()]
        what = {CONFIG_NAME: CONFIG_NAME, CSV_NAME: f"{CSV_NAME} without rows", TB_DIR: f"{TB_DIR}/ without scalars"}
        found = [f"{CONFIG_NAME} only"] if found == [CONFIG_NAME] else [what[n] for n in found]
        return f"no logs: expected {CSV_NAME} or {TB_DIR}/ event files ({', '.join(found)})"
    if run.complete:
        return "finished, but no eval/episode_reward logged"
    text = f"in progress or crashed at frame {run.last_frame}"
    if run.checkpoint_frame is not None:
        text += f" (last checkpoint at frame {run.checkpoint_frame})"
    if not run.has_eval:
        return text + "; no evaluation logged yet"
    return text + (
        "; counted in the tables (--include-partial)" if counted else "; left out of the tables, drawn in the curves"
    )


@dataclass(eq=False)
class RunSet:
    """The runs of one report, grouped into cells by (task, variant), with the rule of which runs count.

    :param runs: the runs, sorted as :func:`discover_runs` returns them.
    :param include_partial: also count runs without ``run_complete.json`` (that have evaluations).
    """

    runs: Sequence[Run]
    include_partial: bool = False
    cells: dict[tuple[str, str], list[Run]] = field(init=False)

    def __post_init__(self) -> None:
        self.cells = {}
        for run in self.runs:
            self.cells.setdefault((run.task, run.variant), []).append(run)

    @property
    def variants(self) -> list[str]:
        """The variants, sorted."""
        return sorted({r.variant for r in self.runs})

    @property
    def tasks(self) -> list[str]:
        """The tasks, sorted."""
        return sorted({r.task for r in self.runs})

    def counted(self, run: Run) -> bool:
        """Whether ``run`` enters the tables: it has evaluations and finished (or ``include_partial``)."""
        return run.has_eval and (run.complete or self.include_partial)

    def group(self, task: str, variant: str) -> list[Run]:
        """All runs of one cell (empty when the variant was not run on the task)."""
        return self.cells.get((task, variant), [])

    def scores(self, metric: str, task: str, variant: str) -> np.ndarray:
        """``metric`` (a :class:`Run` property: ``final_return`` or ``auc``) of the cell's counted runs."""
        return np.array([getattr(r, metric) for r in self.group(task, variant) if self.counted(r)], dtype=float)

    def groups_of(self, task: str) -> dict[str, list[Run]]:
        """``{variant: runs}`` on ``task``, variants in sorted order."""
        return {v: self.cells[task, v] for v in self.variants if (task, v) in self.cells}

    def problems(self) -> list[dict[str, str]]:
        """Every run that is not finished with evaluations: ``{"path", "status"}``."""
        return [
            {"path": str(r.path), "status": run_status(r, self.counted(r))}
            for r in self.runs
            if not (r.complete and r.has_eval)
        ]


# -- what each variant stands for ---------------------------------------------------------------------------------

_ABSENT = object()
_IGNORED_KEYS = NON_SEMANTIC_KEYS | {"task_name"}


def _show(value: Any) -> str:
    """A config value as it reads in a label: ``0.5``, ``true``, ``[a,b]``, ``none``."""
    if value is _ABSENT or value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _identity(value: Any) -> str:
    """What a config group is: its ``name`` (``rr: {name: static, ...}`` → ``static``), the names it holds (an
    intervention group ``{redo: {...}, l2_init: {...}}`` → ``redo+l2_init``; empty → ``none``), or the value."""
    if isinstance(value, dict):
        if "name" in value:
            return _show(value["name"])
        return "+".join(str(k) for k in value) or "none"
    return _show(value)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of a group's nested settings (``name`` left out: it is the identity)."""
    if not isinstance(tree, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if not prefix and key == "name":
            continue
        if isinstance(value, dict) and value:
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _named_by_variant(variant: str) -> dict[str, str]:
    """``{top-level key: value}`` of the overrides a variant name spells (``aug=none,rr=adaptive``); a comma inside
    brackets (``intervention=[redo,l2_init]``) stays in its value."""
    pieces: list[str] = []
    for piece in variant.split(","):
        if pieces and ("=" not in piece or pieces[-1].count("[") > pieces[-1].count("]")):
            pieces[-1] += "," + piece
        else:
            pieces.append(piece)
    return {p.split("=", 1)[0].split(".", 1)[0]: p.split("=", 1)[1] for p in pieces if "=" in p}


def _spelled(named: str | None, value: Any) -> bool:
    """Whether a variant name's override value (``none``, ``[redo,l2_init]``) says what the group is."""
    if named is None:
        return False
    if isinstance(value, dict) and "name" not in value:
        return sorted(filter(None, named.strip("[]").split(","))) == sorted(map(str, value))
    return named == _identity(value)


def _describe_task(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """:func:`variant_settings` among the variants of one task (``{variant: config}``)."""
    keys = {k for c in configs.values() for k in c} - _IGNORED_KEYS
    differing = sorted(k for k in keys if len({_show(c.get(k, _ABSENT)) for c in configs.values()}) > 1)
    settings = {}
    for variant, config in configs.items():
        named, parts = _named_by_variant(variant), []
        for key in differing:
            value = config.get(key, _ABSENT)
            peers = [c.get(key, _ABSENT) for c in configs.values()]
            peers = [p for p in peers if _identity(p) == _identity(value)]
            leaves = _leaves(value)
            shown = [k for k in leaves if len({_show(_leaves(p).get(k, _ABSENT)) for p in peers}) > 1]
            if not shown and _spelled(named.get(key), value):
                continue
            parts.append(f"{key}={_identity(value)}" + "".join(f" {_show(leaves[k])}" for k in shown))
        settings[variant] = ", ".join(parts)
    return settings


def variant_settings(runs: Sequence[Run]) -> dict[str, str]:
    """What each variant stands for, read from the runs' ``config.yaml``: the settings that differ between the
    variants run on the same task, e.g. ``{"default": "aug=shift, rr=static 0.5", "aug=none": "rr=static 0.5"}``.

    A config group with a ``name`` reads ``group=name``, followed by the values of its settings that differ between
    variants of that name (``rr=static 0.5`` against ``rr=static 2``); a group of named entries (interventions)
    reads ``group=a+b`` (``none`` when empty); a setting the variant's name already spells (``aug=none``) is left
    out. Seeds, paths and logging options never count (:data:`~rlplastic.rundir.NON_SEMANTIC_KEYS`). A variant is
    described on the task with the most variants it was run on (the first such task in sorted order).

    :param runs: the runs; the first run of each (task, variant) with a config stands for that cell.
    :return: ``{variant: settings}``, ``""`` where nothing is known or the name says it all.
    """
    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run.config:
            by_task.setdefault(run.task, {}).setdefault(run.variant, run.config)
    described = [_describe_task(c) for c in sorted(by_task.values(), key=len, reverse=True) if len(c) > 1]
    settings = {v: "" for v in sorted({r.variant for r in runs})}
    for variant in settings:
        settings[variant] = next((d[variant] for d in described if variant in d), "")
    return settings


def variant_labels(runs: Sequence[Run]) -> dict[str, str]:
    """``{variant: label}``: the name with the settings it stands for (``default (aug=shift, rr=static 0.5)``), or
    the bare name where :func:`variant_settings` has nothing to add."""
    return {v: f"{v} ({s})" if s else v for v, s in variant_settings(runs).items()}
