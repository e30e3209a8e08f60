"""``bench/gpu_check.sh --cpu-smoke``: every step of the GPU check runs on CPU at tiny sizes and is summarised."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bench/gpu_check.sh needs bash")


def test_cpu_smoke_runs_every_step_and_prints_the_summary(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("GPU_CHECK_SMOKE_COMPILE", None)
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("=== gpu_check summary ===", 1)[1]
    rows = {line[:22].strip(): line[22:].strip() for line in summary.strip().splitlines() if line.strip()}
    assert rows["mode"].startswith("cpu-smoke")
    assert "cuda_available=False" in rows["torch"]
    assert "FAILED" not in summary
    fps = re.fullmatch(r"([0-9.]+) frames/s, update ([0-9.]+) ms", rows["fps host replay"])
    assert fps is not None and float(fps.group(1)) > 0 and float(fps.group(2)) > 0
    split = dict(re.findall(r"(\w+) (-?[0-9.]+)%", rows["split host replay"]))
    assert set(split) == {"env", "sample", "update", "act", "replay_add", "monitor", "checkpoint", "other"}
    assert sum(float(v) for v in split.values()) == pytest.approx(100.0, abs=0.5)
    assert rows["fps device replay"].startswith("not run on CPU")
    assert rows["fps compiled"].startswith("not run in the smoke")
    assert re.search(r"DeviceReplayBuffer\.sample\) [0-9.]+ ms", rows["replay device-resident"])
    overhead = dict(re.findall(r"(off|fau alone|default|full)=(-?[0-9.]+)%", rows["monitor overhead"]))
    assert set(overhead) == {"off", "fau alone", "default", "full"} and float(overhead["off"]) == 0.0
    collected = re.match(r"(\d+) tests collected", rows["tests hooks+replay"])
    assert collected is not None and int(collected.group(1)) > 50 and rows["tests hooks+replay"].endswith("(rc=0)")
    learned = re.fullmatch(r"eval return ([0-9.]+) at frame 320 \(first eval [0-9.]+\)", rows["learning cartpole_bal"])
    assert learned is not None and 0.0 <= float(learned.group(1)) <= 1000.0
    log = (tmp_path / "gpu_check.log").read_text()
    assert "=== throughput host replay:" in log and "=== learning: exit 0" in log
    assert log.rstrip().endswith(f"log: {tmp_path / 'gpu_check.log'}")
