"""The intervention set: config validation, when operations fire, how they interact, SAM in the agent,
the state round trip, and every intervention end to end through train.py (events, terms, resume)."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from rlplastic.interventions.intervention_set import InterventionSet, make_interventions
from rlplastic.logger import read_scalars_csv
from rlplastic.monitor import make_monitor
from tests.factories import checkpoint_round_trip, random_batch, tiny_agent
from tests.test_trainer import STATES, compose_config, run_train

SCHEDULE = {"kind": "schedule", "every_frames": 1000}


class FakeReplay:
    """Hands out random state batches and records which generator asked."""

    def __init__(self) -> None:
        self.rngs: list[np.random.Generator | None] = []

    def sample(self, batch_size: int, device: str = "cpu", rng: np.random.Generator | None = None):
        self.rngs.append(rng)
        return random_batch("states", batch_size, seed=len(self.rngs))


class MonitorCalls:
    """Records ``after_intervention`` calls (a threshold trigger needs some monitor)."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def after_intervention(self, agent, modules, reinitialised: bool = False) -> None:
        self.calls.append((tuple(modules), reinitialised))


def train_steps(agent, updates: int, start: int = 0) -> None:
    for step in range(start, start + updates):
        agent.update(random_batch("states", 8, seed=step), step)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"reboot": {}}, r"unknown intervention\(s\) \['reboot'\]: allowed are \['reset'"),
        ({"redo": {"taux": 0.1}}, r"unknown intervention.redo key\(s\) \['taux'\]"),
        ({"redo": {"tau": 1.5}}, r"tau=1.5 is outside \[0, 1\]"),
        ({"redo": {"period": 10, "trigger": SCHEDULE}}, "needs exactly one of period"),
        ({"redo": {"period": None}}, "needs exactly one of period"),
        ({"heads_reset": {}}, "intervention.heads_reset needs a trigger"),
        ({"heads_reset": {"trigger": {"kind": "sometimes"}}}, "unknown trigger 'sometimes'"),
        ({"heads_reset": {"trigger": {"kind": "schedule", "every_frames": 0}}}, "every_frames=0 must be an int > 0"),
        ({"heads_reset": {"modules": ["decoder"], "trigger": SCHEDULE}}, r"modules \['decoder'\] are unknown"),
        ({"shrink_perturb": {"alpha": 2.0, "trigger": SCHEDULE}}, "alpha=2.0 must be in"),
        ({"inject": {"trigger": SCHEDULE}, "heads_reset": {"trigger": SCHEDULE}},
         r"inject and heads_reset both act on \['critic'\]"),
        ({"inject": {"modules": ["encoder"], "trigger": SCHEDULE}}, r"inject.modules \['encoder'\] have no heads"),
        ({"l2_init": {"targets": ["critc"], "coef": 0.1}}, "critc"),
        ({"sam": {"rho": -1}}, "rho=-1 must be a finite number > 0"),
        ({"redo": {"period": None, "trigger": {"kind": "threshold", "signal": "critic/dormancy", "threshold": 0.2}}},
         "unknown signal 'critic/dormancy'"),
    ],
)  # fmt: skip
def test_bad_config_gives_one_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        InterventionSet(tiny_agent("states"), config, monitor=MonitorCalls())


def test_threshold_trigger_needs_the_monitor():
    trigger = {"kind": "threshold", "signal": "critic/dormant", "threshold": 0.2}
    with pytest.raises(ValueError, match="fires on 'critic/dormant' from the plasticity monitor, but monitor=off"):
        InterventionSet(tiny_agent("states"), {"heads_reset": {"trigger": trigger}}, monitor=None)


def test_threshold_trigger_on_a_metric_the_monitor_does_not_measure_is_refused():
    trigger = {"kind": "threshold", "signal": "critic/nc1", "threshold": 0.2}
    monitor = make_monitor(metrics=["fau", "dormant"])
    with pytest.raises(ValueError, match="the monitor does not measure 'nc1': add it to monitor.metrics"):
        InterventionSet(tiny_agent("states"), {"heads_reset": {"trigger": trigger}}, monitor=monitor)


def test_empty_config_builds_nothing():
    assert make_interventions(tiny_agent("states"), {}) is None
    assert make_interventions(tiny_agent("states"), None) is None


# -- firing ---------------------------------------------------------------------------------------


def test_redo_fires_every_period_updates_on_its_own_generator():
    agent = tiny_agent("states")
    interventions = InterventionSet(agent, {"redo": {"period": 3, "batch_size": 8, "modules": ["critic"]}})
    replay = FakeReplay()
    fired_at = [u for u in range(1, 8) if interventions.after_update(replay, "cpu")]
    assert fired_at == [3, 6]
    assert len(replay.rngs) == 2 and all(rng is interventions._rng for rng in replay.rngs)
    assert interventions.at_episode_end({}, 10_000, replay, "cpu") == {}  # period-driven: no trigger asked


def test_threshold_trigger_fires_with_its_cooldown_and_tells_the_monitor():
    agent, monitor = tiny_agent("states"), MonitorCalls()
    trigger = {"kind": "threshold", "signal": "critic/dormant", "threshold": 0.2, "cooldown_frames": 100}
    interventions = InterventionSet(agent, {"heads_reset": {"trigger": trigger}}, monitor=monitor)
    assert interventions.signals_needed == ("critic/dormant",)
    before = agent.critic.Q1[0].weight.detach().clone()
    fired = {}
    for frame, dormant in [(0, 0.1), (50, 0.3), (100, 0.3), (150, 0.3), (200, 0.05), (260, 0.5)]:
        if interventions.at_episode_end({"critic/dormant": dormant}, frame, FakeReplay(), "cpu"):
            fired[frame] = True
    assert sorted(fired) == [50, 150, 260]
    assert monitor.calls == [(("actor", "critic"), True)] * 3
    assert not torch.equal(agent.critic.Q1[0].weight, before)


@pytest.mark.parametrize("reanchor", [True, False])
def test_reset_reanchors_l2_init_at_the_fresh_weights_when_asked(reanchor):
    agent = tiny_agent("states")
    config = {"heads_reset": {"trigger": SCHEDULE, "reanchor": reanchor}, "l2_init": {"targets": ["actor", "critic"]}}
    interventions = InterventionSet(agent, config)
    l2 = interventions.interventions["l2_init"]
    initial = {k: v.clone() for k, v in l2._anchor.items()}
    train_steps(agent, 3)
    assert set(interventions.at_episode_end({}, 1000, FakeReplay(), "cpu")) == {"heads_reset"}
    current = dict(agent.critic.named_parameters())
    for key, anchor in l2._anchor.items():
        module, name = key.split(".", 1)
        if module == "critic" and "trunk.1" not in name:  # the trunk's LayerNorm is not regularized
            expected = current[name] if reanchor else initial[key]
            assert torch.equal(anchor, expected.detach()), key


def test_injection_rebinds_l2_init_and_the_monitor_follows_layers_and_parameters():
    agent = tiny_agent("states")
    monitor = make_monitor(metrics=["fau", "drift"], probe_every_updates=0, probe_at_start=False)
    monitor.attach(agent)
    interventions = InterventionSet(
        agent, {"inject": {"trigger": SCHEDULE}, "l2_init": {"targets": ["critic"]}}, monitor=monitor
    )
    l2 = interventions.interventions["l2_init"]
    train_steps(agent, 3)
    trunk_anchor = l2._anchor["critic.trunk.0.weight"].clone()
    monitor._fold()
    old_counts = monitor._fau.window["critic"].clone()
    old_layers = list(monitor._layers["critic"])
    assert set(interventions.at_episode_end({}, 1000, FakeReplay(), "cpu")) == {"inject"}

    # L2-init: the trunk keeps its θ₀, the new trainable head is anchored at its fresh values, frozen ones dropped
    assert torch.equal(l2._anchor["critic.trunk.0.weight"], trunk_anchor)
    fresh = agent.critic.Q1.trainable[0].weight
    assert torch.equal(l2._anchor["critic.Q1.trainable.0.weight"], fresh.detach())
    assert not any(".base." in key or ".frozen." in key for key in l2._anchor)
    # the monitor: moved ReLUs keep their counts under their new names, new ReLUs start at zero
    layers = list(monitor._layers["critic"])
    assert "Q1.base.1" in layers and "Q1.trainable.1" in layers
    for old_index, old_name in enumerate(old_layers):
        new_name = old_name.replace("Q1.", "Q1.base.").replace("Q2.", "Q2.base.")
        assert torch.equal(monitor._fau.window["critic"][layers.index(new_name)], old_counts[old_index])
    assert monitor._fau.window["critic"][layers.index("Q1.trainable.1")].sum() == 0
    # drift: moved parameters keep their initial values, new ones start now (distance 0)
    init = monitor._init_params["critic"]
    assert set(init) == {name for name, _ in agent.critic.named_parameters()}
    assert torch.equal(init["Q1.trainable.0.weight"], fresh.detach())
    assert not torch.equal(init["Q1.base.0.weight"], agent.critic.Q1.base[0].weight)  # it trained before injection
    train_steps(agent, 2, start=3)  # FAU counting continues on the new layers
    monitor._fold()
    assert monitor._fau.window["critic"][layers.index("Q1.trainable.1")][1] > 0
    assert interventions.at_episode_end({}, 5000, FakeReplay(), "cpu") == {}  # injection is one-shot


def test_state_round_trip_rebuilds_injection_and_continues_identically():
    def build(seed: int):
        agent = tiny_agent("states", seed=seed)
        config = {
            "inject": {"trigger": {"kind": "schedule", "at_frames": [1000]}},
            "l2_init": {"targets": ["actor", "critic"]},
            "redo": {"period": 2, "batch_size": 8, "modules": ["actor"]},
        }
        return agent, InterventionSet(agent, config, seed=seed)

    agent, interventions = build(0)
    train_steps(agent, 2)
    interventions.at_episode_end({}, 1000, FakeReplay(), "cpu")
    train_steps(agent, 2, start=2)
    state = checkpoint_round_trip({"agent": agent.state_dict(), "interventions": interventions.state_dict()})

    resumed_agent, resumed = build(1)  # different initial weights: everything must come from the state
    resumed.restore_structure(state["agent"])
    resumed_agent.load_state_dict(state["agent"])
    resumed.load_state_dict(state["interventions"])
    assert resumed.updates == interventions.updates and resumed._done == {"inject"}
    for a, b in ((agent, interventions), (resumed_agent, resumed)):
        torch.manual_seed(7)
        metrics = a.update(random_batch("states", 8, seed=50), 10)
        b.after_update(FakeReplay(), "cpu")
        a.metrics = metrics
    assert torch.equal(agent.metrics["critic_loss"], resumed_agent.metrics["critic_loss"])
    for (name, p), (_, q) in zip(agent.critic.named_parameters(), resumed_agent.critic.named_parameters(), strict=True):
        assert torch.equal(p, q), name


# -- SAM in the agent -----------------------------------------------------------------------------


def test_sam_critic_step_uses_the_gradient_at_the_ascent_point():
    rho, batch = 0.05, random_batch("states", 8, seed=3)
    agent = tiny_agent("states", lr=1e-2)
    reference = copy.deepcopy(agent)
    InterventionSet(agent, {"sam": {"rho": rho}})
    torch.manual_seed(11)
    agent.update(batch, 0)

    # By hand on the copy: the same TD targets (same RNG draws), g at θ, ε = ρ g/‖g‖, Adam with ∇L(θ+ε).
    torch.manual_seed(11)
    features, next_features = batch.obs, batch.next_obs  # the states encoder is the identity
    target = reference.td_target(next_features, batch.reward, batch.discount, 0)
    params = list(reference.critic.parameters())

    def loss() -> torch.Tensor:
        q1, q2 = reference.critic(features, batch.action)
        return F.mse_loss(q1, target) + F.mse_loss(q2, target)

    grads = torch.autograd.grad(loss(), params)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g * rho / norm)
    ascent_grads = torch.autograd.grad(loss(), params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.sub_(g * rho / norm)
    optimizer = reference.optimizers()["critic"]
    for p, g in zip(params, ascent_grads, strict=True):
        p.grad = g
    optimizer.step()
    for (name, p), q in zip(agent.critic.named_parameters(), params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(params[0], tiny_agent("states", lr=1e-2).critic.trunk[0].weight)


# -- end to end through train.py ------------------------------------------------------------------

E2E = [
    *STATES, "num_train_frames=3000", "eval_every_frames=3000", "num_eval_episodes=1",
    "monitor.probe_every_updates=250",
]  # fmt: skip
EXTRA = {
    "reset": ["intervention.reset.trigger.every_frames=1000"],
    "heads_reset": ["intervention.heads_reset.trigger.every_frames=2000"],
    "shrink_perturb": [
        "intervention.shrink_perturb.trigger.at_frames=[2000]", "~intervention.shrink_perturb.trigger.every_frames",
    ],
    "redo": ["intervention.redo.period=200"],
    "inject": ["intervention.inject.trigger.at_frames=[2000]"],
}  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    return run_train(tmp_path_factory.mktemp("baseline"), E2E)[1]


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("reset", [1000, 2000, 3000]),
        ("heads_reset", [2000]),
        ("shrink_perturb", [2000]),
        ("redo", None),  # every 200 updates: checked below against rr/updates
        ("inject", [2000]),
        ("l2_init", []),
        ("w2_init", []),
        ("nc_reg", []),
        ("weight_decay", []),
        ("sam", []),
    ],
)
def test_each_intervention_runs_end_to_end_and_logs_what_it_did(tmp_path, baseline, name, events):
    summary, series = run_train(tmp_path, [*E2E, f"intervention={name}", *EXTRA.get(name, [])])
    assert summary["status"] == "complete"
    fired = [frame for frame, _ in series.get(f"events/{name}", [])]
    if name == "redo":
        # 1000 seed frames, then RR 0.5: update u happens at agent step 499 + 2u - 1 → frame 2·(498 + 2u)
        assert fired == [2 * (498 + 2 * u) for u in (200, 400)]
        assert all(0 <= v <= 1 for _, v in series["events/redo/fraction"])
    else:
        assert fired == events
    if name in ("reset", "heads_reset", "shrink_perturb"):
        assert all(v > 0 for _, v in series[f"events/{name}/params"])
    if name in ("l2_init", "w2_init"):
        terms = [v for _, v in series[f"train/reg/{name}/critic"]]
        assert terms and all(v > 0 for v in terms)  # the weights moved away from θ₀
    if name == "nc_reg":
        assert all(v < 0 for _, v in series["train/reg/nc_reg/critic"])  # −coef·min(NC1, clip)
        assert all(v > 0 for _, v in series["train/reg/nc_reg/nc1"])
    # every intervention changes the training from the baseline's after it acts
    assert series["train/critic_loss"] != baseline["train/critic_loss"], name


def test_threshold_triggered_redo_waits_for_its_probe_signal_and_honours_the_cooldown(tmp_path):
    _, series = run_train(tmp_path, [
        *E2E, "intervention=redo", "intervention.redo.period=null", "monitor.probe_at_start=false",
        "monitor.probe_every_updates=100",  # the first critic/dormant arrives at frame ~1400
        "intervention.redo.trigger={kind: threshold, signal: critic/dormant, threshold: -1, cooldown_frames: 1000}",
    ])  # fmt: skip
    assert [frame for frame, _ in series["events/redo"]] == [2000, 3000]


def test_resumed_run_with_interventions_continues_identically(tmp_path):
    overrides = [
        *E2E, "num_train_frames=4000", "eval_every_frames=2000", "intervention=[inject,l2_init,redo]",
        "intervention.inject.trigger.at_frames=[2000]", "intervention.redo.modules=[actor]",
        "intervention.redo.period=150", "intervention.redo.tau=0.6", "monitor=full", "monitor.probe_every_updates=200",
        "monitor.curvature_every_probes=4", "monitor.probe_batch_size=64",
    ]  # fmt: skip

    def run(name: str, stop_at: int | None = None) -> None:
        cfg = compose_config([*overrides, f"run_dir={tmp_path / name}"])
        torch.manual_seed(0)
        trainer = train.build_trainer(cfg, tmp_path / name)
        if stop_at is not None:  # a SIGTERM at that frame: checkpoint at the next step and stop
            update = trainer.agent.update

            def update_then_stop(batch, step):
                if trainer.frame >= stop_at:
                    trainer._stop_signal = signal.SIGTERM
                return update(batch, step)

            trainer.agent.update = update_then_stop
        trainer.run()

    run("straight")
    run("resumed", stop_at=2600)  # stops after the injection, between ReDo firings and probes, mid-episode
    run("resumed")
    straight, resumed = (read_scalars_csv(tmp_path / name / "scalars.csv") for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    for tag in straight:
        if not tag.startswith("time/"):
            assert straight[tag] == resumed[tag], tag
    assert [f for f, _ in straight["events/inject"]] == [2000] and len(straight["events/redo"]) >= 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["intervention=[inject,heads_reset]"], r"inject and heads_reset both act on \['critic'\]"),
        (["intervention=redo", "intervention.redo.tau=2"], r"tau=2 is outside \[0, 1\]"),
        (["intervention=nc_reg", "batch_size=8"], r"nc_reg.num_bins=10 TD-target bins .* but batch_size=8"),
        (["intervention=heads_reset", "intervention.heads_reset.trigger.kind=threshold",
          "+intervention.heads_reset.trigger.signal=critic/dormant", "+intervention.heads_reset.trigger.threshold=0.2",
          "~intervention.heads_reset.trigger.every_frames", "~intervention.heads_reset.trigger.at_frames",
          "monitor=off"], "but monitor=off"),
    ],
)  # fmt: skip
def test_bad_intervention_config_fails_before_training(tmp_path: Path, overrides, message):
    cfg = compose_config([*STATES, *overrides, f"run_dir={tmp_path / 'bad'}"])
    with pytest.raises(ValueError, match=message):
        train.run(cfg)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()
