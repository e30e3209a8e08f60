"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny test networks run fastest on one intra-op thread, and one thread per process keeps runs fast
# when the 2 cores are shared (OpenMP's spinning threads slow down several-fold under oversubscription).
# The environment variable reaches the train.py subprocesses that the resume tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (CI skips them)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
