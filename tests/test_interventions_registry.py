"""The intervention registry and the set's contract: checkpoints written before the registry still load,
a new intervention is one class and one ``register`` line, an agent lacking a capability is refused at
build, and the one NC1 gives the monitor's and the regularizer's numbers of before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlplastic.interventions.anchored import NORM_LAYERS
from rlplastic.interventions.intervention_set import InterventionSet
from rlplastic.monitor.collapse import nc1_differentiable, neural_collapse, quantile_bins
from tests.factories import checkpoint_round_trip, random_batch, tiny_agent

SCHEDULE = {"kind": "schedule", "every_frames": 1000}
#: every state-bearing kind: two triggers, a one-shot operation, ReDo's RNG, anchored and stateless regularizers
CONFIG = {
    "heads_reset": {"modules": ["critic"], "trigger": SCHEDULE},
    "redo": {"period": 2, "batch_size": 8, "modules": ["critic"]},
    "inject": {"modules": ["actor"], "trigger": {"kind": "schedule", "at_frames": [500]}},
    "l2_init": {"targets": ["actor", "critic"]},
    "w2_init": {"targets": ["critic"]},
    "nc_reg": {"num_bins": 4},
    "weight_decay": {"targets": ["critic"]},
    "sam": {"rho": 0.05},
}


def written_before_the_registry(agent, seed: int = 0) -> dict:
    """What ``InterventionSet.state_dict()`` wrote before the registry, for CONFIG on a fresh ``agent``,
    spelled out by hand: the format a checkpoint of that code holds."""
    critic, actor = agent.critic, agent.actor

    def anchor_l2(name, module):
        norm = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
        return {f"{name}.{k}": p.detach().clone() for k, p in module.named_parameters() if id(p) not in norm}

    w2 = {
        f"critic.{k}": torch.sort(p.detach().flatten()).values
        for k, p in critic.named_parameters()
        if k.endswith("weight") and isinstance(critic.get_submodule(k.rsplit(".", 1)[0]), torch.nn.Linear)
    }
    return {
        "names": list(CONFIG),
        "updates": 0,
        "rng": np.random.default_rng([0x726564_6F, seed]).bit_generator.state,
        "done": [],
        "triggers": {"heads_reset": {"kind": "schedule", "covered": -1}, "inject": {"kind": "schedule", "covered": -1}},
        "regularizers": {
            "l2_init": {"name": "l2_init", "anchor": {**anchor_l2("actor", actor), **anchor_l2("critic", critic)}},
            "w2_init": {"name": "w2_init", "anchor": w2},
            "nc_reg": {"name": "nc_reg"},
            "weight_decay": {"name": "weight_decay"},
        },
    }


def assert_same_state(a, b, path="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (path, list(a), list(b))
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_the_checkpoint_format_is_the_one_written_before_the_registry():
    agent = tiny_agent("states")
    expected = written_before_the_registry(agent)
    assert_same_state(InterventionSet(agent, CONFIG).state_dict(), expected)


def test_a_checkpoint_written_before_the_registry_loads_and_resumes():
    old_agent = tiny_agent("states", seed=0)
    old = written_before_the_registry(old_agent)
    old["updates"], old["done"] = 3, ["inject"]
    old["triggers"]["heads_reset"]["covered"] = 1000
    rng = np.random.default_rng([0x726564_6F, 0])
    rng.random(5)
    old["rng"] = rng.bit_generator.state
    state = checkpoint_round_trip(old)

    agent = tiny_agent("states", seed=1)  # other weights: the anchors must come from the state
    interventions = InterventionSet(agent, CONFIG, seed=1)
    interventions.load_state_dict(state)
    assert interventions.updates == 3 and interventions._done == {"inject"}
    assert interventions._rng.bit_generator.state == rng.bit_generator.state
    assert_same_state(interventions.state_dict(), checkpoint_round_trip(old))
    # the loaded anchors are the ones the L2 term pulls toward: 0 at the old agent's weights
    agent.load_state_dict(old_agent.state_dict())
    assert float(agent.hooks.extra_loss("actor", {}).detach()) == 0.0  # l2_init is the actor's only term
    agent.update(random_batch("states", 8, seed=0), 0)  # runs every regularizer and SAM
    assert interventions.at_episode_end({}, 1000, None, "cpu") == {}  # heads_reset covered 1000, inject done


# -- one NC1 ----------------------------------------------------------------------------------------

#: (n, d, K, dtype) → NC1 as the monitor's neural_collapse and the regularizer's nc1_differentiable computed
#: it before they shared one function (both gave these floats exactly).
NC1_BEFORE = [
    (40, 6, 10, torch.float32, 5.667910847322423),
    (23, 7, 4, torch.float64, 2.7659898293953167),
    (64, 16, 10, torch.float32, 13.939904655915502),
]


def nc1_before(features, labels, num_bins, rcond=1e-8):
    """The NC1 formula both copies used before (kept here as the independent computation)."""
    h = features.to(torch.float64)
    counts = torch.bincount(labels, minlength=num_bins).to(h)
    means = torch.zeros(num_bins, h.shape[1], dtype=h.dtype).index_add(0, labels, h) / counts[:, None]
    pinv = torch.linalg.pinv((means - h.mean(dim=0)).T, rtol=rcond)
    return ((h - means[labels]) @ pinv.T).square().sum(dim=1).mean()


def test_the_monitor_and_the_regularizer_give_the_nc1_of_before():
    g = torch.Generator().manual_seed(0)
    for n, d, k, dtype, expected in NC1_BEFORE:
        h = torch.randn(n, d, generator=g, dtype=dtype)
        y = torch.randn(n, generator=g, dtype=dtype)
        w = torch.randn(d, generator=g, dtype=dtype)
        labels, _ = quantile_bins(y, k)
        monitor = neural_collapse(h, y, w, num_bins=k)["nc1"]
        regularizer = float(nc1_differentiable(h, labels, k))
        assert monitor == regularizer == float(nc1_before(h, labels, k))
        assert abs(monitor - expected) <= 1e-12 * expected


# -- the registry is the only list ----------------------------------------------------------------


def test_a_registered_class_is_configurable_with_no_other_edit():
    from rlplastic.interventions.base import INTERVENTIONS, Intervention, Report

    @INTERVENTIONS.register("my_thing")
    class CountUpdates(Intervention):
        def __init__(self, agent, monitor=None, every: int = 2) -> None:
            super().__init__(agent, monitor)
            self.every = every
            self.seen = 0

        def after_update(self, updates, replay, device, rng) -> Report | None:
            self.seen = updates
            return {"updates": updates} if updates % self.every == 0 else None

        def state_dict(self):
            return {"name": self.name, "seen": self.seen}

        def load_state_dict(self, state):
            self.seen = state["seen"]

    try:
        assert CountUpdates.name == "my_thing"
        interventions = InterventionSet(tiny_agent("states"), {"my_thing": {"every": 3}})
        fired = [interventions.after_update(None, "cpu") for _ in range(6)]
        assert fired == [{}, {}, {"my_thing": {"updates": 3}}, {}, {}, {"my_thing": {"updates": 6}}]
        assert interventions.state_dict()["regularizers"] == {"my_thing": {"name": "my_thing", "seen": 6}}
        refused = r"unknown intervention.my_thing key\(s\) \['often'\]: allowed are \['every'\]"
        with pytest.raises(ValueError, match=refused):
            InterventionSet(tiny_agent("states"), {"my_thing": {"often": 1}})
    finally:
        INTERVENTIONS._entries.pop("my_thing")


class WithoutLayerLinks:
    """A DrQ-v2 agent that does not offer ``layer_links``."""

    def __init__(self, agent) -> None:
        self._agent = agent

    def __getattr__(self, name: str):
        if name == "layer_links":
            raise AttributeError(name)
        return getattr(self._agent, name)


def test_an_agent_lacking_a_capability_is_refused_at_build_naming_the_method():
    agent = WithoutLayerLinks(tiny_agent("states"))
    with pytest.raises(
        ValueError,
        match=r"^intervention.redo needs an agent with RecyclableAgent \(rlplastic.protocols\): "
        r"WithoutLayerLinks has no layer_links\(\)$",
    ):
        InterventionSet(agent, {"redo": {}})
    InterventionSet(agent, {"heads_reset": {"trigger": SCHEDULE}})  # a reset needs no layer links


def test_the_registry_order_is_the_build_order_whatever_is_imported_first():
    from rlplastic.interventions.base import INTERVENTIONS

    # operations first (their firing order draws fresh modules), then SAM, then the loss terms in summing order
    assert INTERVENTIONS.names()[:10] == (
        "reset", "heads_reset", "shrink_perturb", "redo", "inject",
        "sam", "l2_init", "w2_init", "nc_reg", "weight_decay",
    )  # fmt: skip
