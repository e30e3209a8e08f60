"""Deterministic run directories: ``<run_root>/<task>/<variant>/seed<k>``.

The variant names the command-line overrides that actually change the experiment, so re-running a
command lands in the same directory (and resumes there), and two commands that train the same thing
share a variant whatever order their overrides come in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Keys that change where or how a run is observed, not what it learns: they never name a variant.
NON_SEMANTIC_KEYS = frozenset({
    "seed", "task", "device", "replay_device", "replay_prefetch", "run_root", "run_dir", "progress", "use_tb",
    "use_csv", "save_every_frames", "save_replay", "save_video", "log_every_frames", "sweep_root", "sweep_name",
    "num_threads", "check_finite", "logger", "logger.wandb", "logger.wandb_project", "logger.wandb_entity",
    "logger.wandb_mode",
})  # fmt: skip

DEFAULT_VARIANT = "default"
#: The resolved config each run writes into its run dir when it first starts.
CONFIG_NAME = "config.yaml"
_MAX_NAME = 120


def override_key(override: str) -> str:
    """The config key an override sets: ``+rr.ratio=2`` → ``rr.ratio``; ``task@_global_=x`` → ``task``."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0]


def variant_name(overrides: Iterable[str], changes_config: Callable[[str], bool]) -> str:
    """Name the variant from the overrides that change the composed config.

    Args:
        overrides: the command-line overrides, e.g. ``["aug=none", "rr.ratio=2", "seed=3"]``.
        changes_config: tells whether one override, applied alone on top of the defaults (for the
            same task), gives a config different from the defaults' — so ``aug=shift`` (the
            default) does not create a new variant.

    Returns:
        The sorted ``key=value`` overrides joined by ``,`` (``/`` and spaces made safe), or
        ``default``. Names longer than 120 characters are cut and suffixed with a hash of the whole.
    """
    candidates = [o for o in overrides if override_key(o) not in NON_SEMANTIC_KEYS and not o.startswith("hydra")]
    kept = sorted(o.lstrip("+") for o in candidates if changes_config(o))
    if not kept:
        return DEFAULT_VARIANT
    name = re.sub(r"[/\s]+", "_", ",".join(kept))
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return name


def run_dir_for(run_root: str | Path, task: str, variant: str, seed: int) -> Path:
    """``<run_root>/<task>/<variant>/seed<seed>``."""
    return Path(run_root) / task / variant / f"seed{seed}"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def check_same_experiment(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run dir that holds a different experiment.

    Compares ``config`` (resolved, as a plain dict) with the ``config.yaml`` written when the run dir's
    run first started, ignoring :data:`NON_SEMANTIC_KEYS` (paths, device, logging). A run dir is named
    by its variant, and in a sweep the settings every job shares do not appear in it, so re-running a
    sweep with, say, another budget would otherwise silently continue the old runs.

    Raises:
        ValueError: naming the keys that differ, with both values.
    """
    saved_path = Path(run_dir) / CONFIG_NAME
    if not saved_path.exists():
        return
    import yaml

    saved = _flatten(yaml.safe_load(saved_path.read_text()) or {})
    current = _flatten(json.loads(json.dumps(config)))  # plain types, as the YAML round trip gives
    keys = sorted(k for k in set(saved) | set(current) if k.split(".")[0] not in NON_SEMANTIC_KEYS)
    differ = [k for k in keys if saved.get(k, "<absent>") != current.get(k, "<absent>")]
    if differ:
        absent = "<absent>"
        shown = ", ".join(f"{k}: {saved.get(k, absent)!r} there, {current.get(k, absent)!r} now" for k in differ[:6])
        more = ", ..." if len(differ) > 6 else ""
        raise ValueError(
            f"{run_dir} holds a run of a different configuration ({shown}{more}); "
            "resume it with its own settings, or choose another run_dir / sweep_name"
        )
