"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

import torch

# Tiny test networks run fastest on one intra-op thread, and one thread per process keeps runs fast
# when the 2 cores are shared (OpenMP's spinning threads slow down several-fold under oversubscription).
# The environment variable reaches the train.py subprocesses that the resume tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(1)
