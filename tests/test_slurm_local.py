"""Pre-emption on a real Slurm: bench/slurm_local.sh brings up a single-node Slurm, runs a 2x2 sweep
through hydra/launcher=slurm, requeues one job mid-run and re-runs the sweep. Opt-in (a few minutes,
root, Slurm's packages): RLPLASTIC_TEST_SLURM=1 pytest -m slurm tests/test_slurm_local.py. The script's
reading of a checkpoint is tested everywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")

needs_slurm = pytest.mark.skipif(
    shutil.which("sbatch") is None or os.environ.get("RLPLASTIC_TEST_SLURM") != "1",
    reason="needs Slurm (sbatch on PATH) and RLPLASTIC_TEST_SLURM=1",
)


def _daemon_pids() -> set[str]:
    pids = set()
    for name in DAEMONS:
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        pids |= {f"{name}:{pid}" for pid in found.stdout.split()}
    return pids


@pytest.mark.slurm
@needs_slurm
def test_requeued_job_resumes_from_its_checkpoint_and_a_rerun_trains_nothing(tmp_path):
    before = _daemon_pids()
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "slurm_local.sh"), "--out", str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "slurm_local: PASS" in result.stdout
    assert _daemon_pids() <= before  # every daemon the script started is gone

    task_dir = tmp_path / "sweeps" / "slurm_local" / "cartpole_balance"
    runs = sorted(task_dir.glob("*/seed*"))
    assert [f"{r.parent.name}/{r.name}" for r in runs] == [
        "default/seed1", "default/seed2", "rr=adaptive/seed1", "rr=adaptive/seed2",
    ]  # fmt: skip
    completes = [json.loads((r / "run_complete.json").read_text()) for r in runs]
    assert [c["status"] for c in completes] == ["complete"] * 4
    resumed = [c["resumed_from_frame"] for c in completes if (c.get("resumed_from_frame") or 0) > 0]
    assert len(resumed) == 1, completes  # the requeued job resumed from its checkpoint
    assert 0 < resumed[0] < completes[0]["frame"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bench/slurm_local.sh is a bash script")
def test_the_scripts_checkpoint_reader_follows_the_pointer_format(tmp_path):
    # Runs in CI (no Slurm needed): the requeue waits for ckpt_frame, which once read every "frame" of a
    # pointer holding a current and a previous checkpoint, so no job was ever requeued.
    from rlplastic.checkpoint import save_checkpoint

    script = (ROOT / "bench" / "slurm_local.sh").read_text()
    start = script.index("ckpt_frame() {")
    function = script[start : script.index("\n}\n", start) + 3]
    read = f'PYTHON={sys.executable}\n{function}\nckpt_frame "$1"'
    assert subprocess.run(["bash", "-c", read, "-", str(tmp_path)], capture_output=True, text=True).stdout == ""
    for frame in (1000, 2000):  # two committed checkpoints: the pointer names a current and a previous one
        save_checkpoint(tmp_path, {"frame": frame}, frame)
    out = subprocess.run(["bash", "-c", read, "-", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "2000\n", out
