"""Tiny agents, random batches and the checkpoint round trip shared by the tests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from agents.drqv2 import DrQV2Agent
from rlplastic.agent_hooks import AgentHooks
from rlplastic.replay import Batch

PIXELS = (9, 84, 84)
STATE_DIM = 5
ACTION_DIM = 2


def tiny_agent(obs_type: str = "pixels", seed: int = 0, **kwargs) -> DrQV2Agent:
    """A DrQ-v2 agent with 8-wide trunks and 16-wide heads, seeded, no exploration steps."""
    torch.manual_seed(seed)
    obs_shape = PIXELS if obs_type == "pixels" else (STATE_DIM,)
    settings = {"feature_dim": 8, "hidden_dim": 16, "num_expl_steps": 0, **kwargs}
    return DrQV2Agent(obs_shape, (ACTION_DIM,), obs_type=obs_type, **settings)


class ModulesAgent:
    """Just enough of an agent for a regularizer: named modules, optimizers and hooks."""

    def __init__(self, modules: dict[str, torch.nn.Module] | None = None,
                 optimizers: dict[str, torch.optim.Optimizer] | None = None) -> None:  # fmt: skip
        self._modules, self._optimizers, self.hooks = modules or {}, optimizers or {}, AgentHooks()

    def named_modules_for_monitor(self) -> dict[str, torch.nn.Module]:
        return self._modules

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers


def random_batch(obs_type: str = "pixels", batch_size: int = 4, seed: int = 0, discount: float = 0.97) -> Batch:
    """A batch of random observations, actions in [-1, 1] and rewards in [0, 1), from its own generator."""
    g = torch.Generator().manual_seed(seed)
    if obs_type == "pixels":
        obs = torch.randint(0, 256, (batch_size, *PIXELS), generator=g, dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (batch_size, *PIXELS), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(batch_size, STATE_DIM, generator=g)
        next_obs = torch.randn(batch_size, STATE_DIM, generator=g)
    action = torch.rand(batch_size, ACTION_DIM, generator=g) * 2 - 1
    reward = torch.rand(batch_size, 1, generator=g)
    return Batch(obs, action, reward, torch.full((batch_size, 1), discount), next_obs)


def checkpoint_round_trip(state: Any) -> Any:
    """What a checkpoint does to ``state``: ``torch.save``, then ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_rollout(a: list[tuple], b: list[tuple]) -> None:
    """Two recorded rollouts (tuples of arrays and plain values) are identical, arrays bit for bit."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y)
        for u, v in zip(x, y, strict=True):
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v)
            else:
                assert u == v
