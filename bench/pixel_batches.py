"""Random DrQ-v2-shaped pixel batches (9x84x84 uint8 stacks, 6-d actions) for the benchmarks."""

from __future__ import annotations

import torch

from rlplastic.replay import Batch


def random_batch(batch_size: int, device: str, seed: int) -> Batch:
    """A batch from its own generator: random frames, actions in [-1, 1], rewards in [0, 1), discount 0.99."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch_size, 9, 84, 84), generator=g, dtype=torch.uint8)
    next_obs = torch.randint(0, 256, (batch_size, 9, 84, 84), generator=g, dtype=torch.uint8)
    action = torch.rand(batch_size, 6, generator=g) * 2 - 1
    reward, discount = torch.rand(batch_size, 1, generator=g), torch.full((batch_size, 1), 0.99)
    return Batch(*(t.to(device) for t in (obs, action, reward, discount, next_obs)))
