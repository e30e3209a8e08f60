"""Sweeps: a local multirun lands in deterministic run dirs under one sweep dir and re-running it trains
nothing; the SLURM launcher and the experiment grids compose without a cluster; a run dir refuses a
different configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import train
from rlplastic import report
from rlplastic.rundir import check_same_experiment
from tests.test_trainer import ROOT, STATES, compose_config

TINY = [
    *STATES, "num_train_frames=2000", "eval_every_frames=1000", "num_eval_episodes=1", "hidden_dim=32",
    "batch_size=32",
]  # fmt: skip


def _sweep(sweep_root: Path, extra: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "train.py"), "-m", *extra, f"sweep_root={sweep_root}"]
    command.append("hydra.launcher.n_jobs=2")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_two_by_two_multirun_lands_in_run_dirs_and_rerunning_trains_nothing(tmp_path):
    sweep = [*TINY, "rr=static,adaptive", "seed=1,2"]
    first = _sweep(tmp_path, sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    task_dir = tmp_path / "default" / "cartpole_balance"
    # the overrides every job shares belong to the sweep; the variant names only what varies
    assert sorted(p.name for p in task_dir.iterdir()) == ["default", "rr=adaptive"]
    runs = sorted(task_dir.glob("*/seed*"))
    assert [f"{r.parent.name}/{r.name}" for r in runs] == [
        "default/seed1", "default/seed2", "rr=adaptive/seed1", "rr=adaptive/seed2",
    ]  # fmt: skip
    assert all((r / "run_complete.json").exists() for r in runs)
    sizes = {r: (r / "scalars.csv").stat().st_size for r in runs}

    assert report.main([str(tmp_path / "default"), "--out", str(tmp_path / "report"), "--reps", "200"]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert sorted(summary["aggregates"]) == ["default", "rr=adaptive"]
    assert sorted((r["variant"], r["seed"], r["counted"]) for r in summary["runs"]) == [
        ("default", 1, True), ("default", 2, True), ("rr=adaptive", 1, True), ("rr=adaptive", 2, True),
    ]  # fmt: skip

    again = _sweep(tmp_path, sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished") == 4
    assert "run dir" not in again.stdout.replace("already finished", "")  # no job started training
    assert {r: (r / "scalars.csv").stat().st_size for r in runs} == sizes


def test_rerunning_into_a_run_dir_with_another_config_is_refused(tmp_path):
    overrides = [*TINY, "num_train_frames=1200", "eval_every_frames=1200", f"run_dir={tmp_path / 'run'}"]
    train.run(compose_config(overrides))
    with pytest.raises(
        ValueError, match=r"holds a run of a different configuration \(agent.lr: 0.0001 there, 0.001 now, lr: 0.0001"
    ):
        train.run(compose_config([*overrides, "lr=1e-3"]))
    # observation-only settings may change on resume
    check_same_experiment(tmp_path / "run", {**_saved(tmp_path / "run"), "device": "cuda", "progress": True})


def _saved(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _hydra_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_config_composes_without_a_cluster():
    cfg = _hydra_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60",
                         "hydra.launcher.gpus_per_node=2", "hydra.launcher.mem_gb=64"])  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.mem_gb) == ("gpu", 60, 2, 64)
    assert _hydra_config([]).hydra.launcher._target_.endswith("JoblibLauncher")  # the local default


@pytest.mark.parametrize(
    ("experiment", "tasks", "jobs", "adaptive"),
    [("aug_rr_ablation", 3, 90, "adaptive"), ("aug_rr_smoke", 2, 24, "adaptive_smoke")],
)
def test_ablation_experiments_compose_the_aug_by_rr_grid(experiment, tasks, jobs, adaptive):
    cfg = _hydra_config([f"+experiment={experiment}"])
    params = cfg.hydra.sweeper.params
    assert params.aug == "shift,none" and params.rr == f"static,static_2,{adaptive}"
    sizes = [len(str(params[key]).split(",")) for key in ("task", "aug", "rr", "seed")]
    assert sizes[0] == tasks and sizes[0] * sizes[1] * sizes[2] * sizes[3] == jobs
    assert cfg.sweep_name == experiment
    for rr in ("static", "static_2", adaptive):  # every grid point builds a controller
        train.make_rr_controller(**_rr(experiment, rr))
    assert _rr(experiment, adaptive)["name"] == "adaptive"


def test_the_smoke_experiments_adaptive_rr_options_change_only_two_knobs():
    paper = _rr("aug_rr_smoke", "adaptive")  # no experiment reaches into the rr group from outside it
    assert (paper["check_every_frames"], paper["threshold"]) == (50000, 0.001)
    for experiment, option, knobs in [
        ("aug_rr_smoke", "adaptive_smoke", (800, 0.01)),
        ("continual_plasticity_smoke", "adaptive_continual_smoke", (1000, 0.05)),
    ]:
        smoke = _rr(experiment, option)
        assert (smoke["check_every_frames"], smoke["threshold"]) == knobs
        assert {k: v for k, v in smoke.items() if k not in ("check_every_frames", "threshold")} == {
            k: v for k, v in paper.items() if k not in ("check_every_frames", "threshold")
        }


def _rr(experiment: str, rr: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config([f"+experiment={experiment}", f"rr={rr}"])
    return OmegaConf.to_container(cfg.rr, resolve=True)


@pytest.mark.parametrize(("experiment", "seeds"), [("continual_plasticity", 5), ("continual_plasticity_smoke", 1)])
def test_the_continual_plasticity_grid_varies_aug_rr_nc_reg_and_sam(experiment, seeds):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _hydra_config([f"+experiment={experiment}"]).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    grid = {o.key_or_group: [str(v) for v in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])]
            for o in parsed}  # fmt: skip
    adaptive = "adaptive_continual_smoke" if experiment.endswith("_smoke") else "adaptive"
    assert grid["aug"] == ["shift", "none"] and grid["rr"] == ["static", "static_2", adaptive]
    assert grid["intervention"] == ["none", "nc_reg", "sam", "['nc_reg', 'sam']"] and len(grid["seed"]) == seeds
    for intervention in ("none", "nc_reg", "sam", "[nc_reg,sam]"):  # every grid point is a valid run
        overrides = [f"+experiment={experiment}", f"intervention={intervention}", "aug=none", f"rr={adaptive}"]
        cfg = compose_config(overrides)
        train.validate(cfg)
        assert cfg.task_name == "continual_walker" and cfg.monitor.name == "full"
        assert set(cfg.intervention) == ({"nc_reg", "sam"} & set(intervention.strip("[]").split(",")))
