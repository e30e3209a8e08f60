"""PlasticityMonitor on a real (tiny) DrQ-v2 agent: FAU against an independent computation,
training left untouched, probe records and figures, checkpoints, config errors, and end-to-end runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from agents.drqv2 import DrQV2Agent
from rlplastic.agent_hooks import AgentHooks
from rlplastic.augment import RandomShift
from rlplastic.logger import read_scalars_csv
from rlplastic.monitor import ActivationCapture, MonitorConfig, PlasticityMonitor, ProbeRecord, make_monitor
from rlplastic.monitor.figures import FIGURE_TAGS
from rlplastic.protocols import CriticProbe
from rlplastic.replay import ReplayBuffer
from tests.factories import checkpoint_round_trip

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32  # small frames keep the conv encoder cheap; the encoder is DrQ-v2's for any size
ACTION_DIM = 2
LAYERS = {
    "encoder": ["convnet.1", "convnet.3", "convnet.5", "convnet.7"],
    "actor": ["policy.1", "policy.3"],
    "critic": ["Q1.1", "Q1.3", "Q2.1", "Q2.3"],
}
# small probes: a few HVPs, K = 4 bins on 8 samples
TINY_PROBE = dict(probe_batch_size=8, nc_bins=4, hessian_iters=3, hessian_directions_k=3, hutchinson_probes=2)


def make_agent(obs_type: str = "pixels", seed: int = 0) -> DrQV2Agent:
    torch.manual_seed(seed)
    obs_shape = (9, SIDE, SIDE) if obs_type == "pixels" else (5,)
    aug = RandomShift(pad=4) if obs_type == "pixels" else None
    return DrQV2Agent(obs_shape, (ACTION_DIM,), obs_type=obs_type, augmentation=aug, feature_dim=8, hidden_dim=16,
                      stddev_schedule="linear(1.0,0.1,1000)", num_expl_steps=0)  # fmt: skip


def make_replay(obs_type: str = "pixels", seed: int = 0) -> ReplayBuffer:
    """60 random steps in two episodes."""
    rng = np.random.default_rng(seed)
    if obs_type == "pixels":
        shape, stack, dtype = (3, SIDE, SIDE), 3, np.uint8
        frame = lambda: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    else:
        shape, stack, dtype = (5,), 1, np.float32
        frame = lambda: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    replay = ReplayBuffer(shape, (ACTION_DIM,), capacity=100, frame_stack=stack, nstep=3, frame_dtype=dtype, seed=seed)
    replay.add_first(frame())
    for i in range(60):
        replay.add(rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), float(rng.random()), 1.0, frame(), last=i == 29)
        if i == 29:
            replay.add_first(frame())
    return replay


def run_updates(agent, replay, monitor, count: int, batch_size: int = 4) -> list[dict]:
    metrics = []
    for _ in range(count):
        metrics.append(agent.update(replay.sample(batch_size), step=100))
        if monitor is not None:
            monitor.after_update(agent, replay, step=100)
    return metrics


# -- FAU against the released definition, computed by hand -----------------------------------------


class ForwardRecorder:
    """Records the inputs of every call of the agent's encoder, actor and critic, with the agent phase
    active at the time, plus the parameters before the update (for an independent recomputation)."""

    def __init__(self, agent: DrQV2Agent) -> None:
        self.phase: str | None = None
        self.calls: list[tuple[str, str | None, tuple]] = []
        agent.hooks.add_phase_listener(self._listen)
        for name, module in agent.named_modules_for_monitor().items():
            module.register_forward_pre_hook(self._hook(name))
        self.agent = agent

    def _listen(self, modules: tuple[str, ...], active: bool) -> None:
        self.phase = "+".join(modules) if active else None

    def _hook(self, name: str):
        def hook(module, args):
            self.calls.append((name, self.phase, tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)))

        return hook

    def snapshot(self) -> None:
        self.calls.clear()
        self.params = {
            name: {k: v.detach().clone() for k, v in module.state_dict().items()}
            for name, module in self.agent.named_modules_for_monitor().items()
        }


def _trunk(p: dict, x: torch.Tensor) -> torch.Tensor:
    h = F.linear(x, p["trunk.0.weight"], p["trunk.0.bias"])
    return torch.tanh(F.layer_norm(h, h.shape[-1:], p["trunk.1.weight"], p["trunk.1.bias"]))


def _mlp_relus(p: dict, prefix: str, x: torch.Tensor) -> list[torch.Tensor]:
    a1 = torch.relu(F.linear(x, p[f"{prefix}.0.weight"], p[f"{prefix}.0.bias"]))
    a2 = torch.relu(F.linear(a1, p[f"{prefix}.2.weight"], p[f"{prefix}.2.bias"]))
    return [a1, a2]


def manual_relus(name: str, p: dict, args: tuple) -> list[torch.Tensor]:
    """The ReLU outputs of one forward of ``name``, recomputed from its weights (no module call)."""
    if name == "encoder":
        x, outs = args[0] / 255.0 - 0.5, []
        for i, stride in zip((0, 2, 4, 6), (2, 1, 1, 1), strict=True):
            x = torch.relu(F.conv2d(x, p[f"convnet.{i}.weight"], p[f"convnet.{i}.bias"], stride=stride))
            outs.append(x)
        return outs
    if name == "actor":
        return _mlp_relus(p, "policy", _trunk(p, args[0]))
    h = torch.cat([_trunk(p, args[0]), args[1]], dim=-1)
    return _mlp_relus(p, "Q1", h) + _mlp_relus(p, "Q2", h)


def released_counts(recorder: ForwardRecorder, name: str, phases: set) -> np.ndarray:
    """(layers, 2) [#>0, #elements] of every recorded call of ``name`` in one of ``phases``."""
    counts = np.zeros((len(LAYERS[name]), 2), dtype=np.int64)
    for module, phase, args in recorder.calls:
        if module == name and phase in phases:
            for i, act in enumerate(manual_relus(name, recorder.params[name], args)):
                counts[i] += [int((act > 0).sum()), act.numel()]
    return counts


def test_fau_equals_released_definition_and_counts_only_loss_forwards():
    agent, replay = make_agent("pixels"), make_replay("pixels")
    monitor = PlasticityMonitor(MonitorConfig(metrics=["fau"], probe_every_updates=0))
    monitor.attach(agent)
    recorder = ForwardRecorder(agent)
    released = {name: np.zeros((len(layers), 2), dtype=np.int64) for name, layers in LAYERS.items()}
    every_call = {name: np.zeros((len(layers), 2), dtype=np.int64) for name, layers in LAYERS.items()}
    for _ in range(2):
        recorder.snapshot()
        run_updates(agent, replay, monitor, 1)
        for name in LAYERS:
            released[name] += released_counts(recorder, name, {name})
            every_call[name] += released_counts(recorder, name, {name, None})

    values = monitor.log_values()
    for name, layers in LAYERS.items():
        counts = released[name]
        pooled = counts[:, 0].sum() / counts[:, 1].sum()
        assert float(values[f"plasticity/{name}/fau"]) == pytest.approx(pooled, abs=1e-12)
        for i, layer in enumerate(layers):
            per_layer = counts[i, 0] / counts[i, 1]
            assert float(values[f"plasticity/{name}/{layer}/fau"]) == pytest.approx(per_layer, abs=1e-12)
        # the other forwards (critic in the actor loss, actor in the TD target, encoder on next_obs)
        # would change the value: they ran, and the monitor left them out
        assert every_call[name][:, 1].sum() == 2 * counts[:, 1].sum()
        pooled_all = every_call[name][:, 0].sum() / every_call[name][:, 1].sum()
        assert float(values[f"plasticity/{name}/fau"]) != pytest.approx(pooled_all, abs=1e-9)


def test_encoder_fau_every_k_updates_counts_only_those_updates():
    agent, replay = make_agent("pixels"), make_replay("pixels")
    monitor = PlasticityMonitor(MonitorConfig(metrics=["fau"], probe_every_updates=0, encoder_fau_every_updates=3))
    monitor.attach(agent)
    recorder = ForwardRecorder(agent)
    encoder = np.zeros((len(LAYERS["encoder"]), 2), dtype=np.int64)
    critic = np.zeros((len(LAYERS["critic"]), 2), dtype=np.int64)
    for update in range(5):
        recorder.snapshot()
        run_updates(agent, replay, monitor, 1)
        if update % 3 == 0:  # updates 1 and 4 (the first included)
            encoder += released_counts(recorder, "encoder", {"encoder"})
        critic += released_counts(recorder, "critic", {"critic"})
    values = {k: float(v) for k, v in monitor.log_values().items()}
    assert values["plasticity/encoder/fau"] == pytest.approx(encoder[:, 0].sum() / encoder[:, 1].sum(), abs=1e-12)
    assert values["plasticity/critic/fau"] == pytest.approx(critic[:, 0].sum() / critic[:, 1].sum(), abs=1e-12)
    assert monitor.signals()["encoder/first_update_fau"] > 0  # the first update is counted
    with pytest.raises(ValueError, match=r"monitor.encoder_fau_every_updates=0 must be an int >= 1"):
        MonitorConfig(encoder_fau_every_updates=0)


def test_fau_windows_episodes_and_first_update():
    agent, replay = make_agent("states"), make_replay("states")
    monitor = PlasticityMonitor(MonitorConfig(metrics=["fau"], probe_every_updates=0))
    monitor.attach(agent)
    assert monitor.log_values() == {}  # no update yet (seed frames): no FAU tags
    run_updates(agent, replay, monitor, 1)
    first = {k: float(v) for k, v in monitor.log_values().items()}
    assert "plasticity/encoder/fau" not in first  # the states encoder is an Identity: not monitored
    run_updates(agent, replay, monitor, 2)
    monitor.end_episode()  # episode = updates 1..3, window = updates 2..3
    second = {k: float(v) for k, v in monitor.log_values().items()}
    signals = monitor.signals()
    assert signals["critic/first_update_fau"] == pytest.approx(first["plasticity/critic/fau"])
    assert signals["critic/fau"] == pytest.approx(second["plasticity/critic/fau"])
    assert signals["critic/Q2.3/fau"] == pytest.approx(second["plasticity/critic/Q2.3/fau"])
    # the episode pools the first window (1 update) and the second (2 updates) by counts
    pooled = (first["plasticity/critic/fau"] + 2 * second["plasticity/critic/fau"]) / 3
    assert signals["critic/episode_fau"] == pytest.approx(pooled)
    monitor.end_episode()  # an episode without updates leaves the last one in place
    assert monitor.signals()["critic/episode_fau"] == signals["critic/episode_fau"]
    assert set(monitor.signals()) >= {"actor/fau", "actor/episode_fau", "actor/policy.1/fau"}


def test_after_update_does_not_sync_with_the_host(monkeypatch):
    agent, replay = make_agent("states"), make_replay("states")
    monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=10, probe_at_start=False, **TINY_PROBE))
    monitor.attach(agent)
    run_updates(agent, replay, monitor, 1)
    agent.update(replay.sample(4), step=100)

    def sync(*args, **kwargs):
        raise AssertionError("host sync in after_update")

    for method in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, method, sync)
    monitor.after_update(agent, replay, step=100)  # no probe due
    monkeypatch.undo()
    assert monitor.updates == 2


# -- activation layers other than ReLU ------------------------------------------------------------


TINY_MODULES = ("encoder", "critic")


class _TinyAgent:
    """An agent with one monitored module, ``critic``, built from ``layers``; its update is one loss forward."""

    def __init__(self, *layers: torch.nn.Module) -> None:
        torch.manual_seed(0)
        self.hooks = AgentHooks()
        self.critic = torch.nn.Sequential(*layers)

    def named_modules_for_monitor(self):
        return {"encoder": torch.nn.Identity(), "critic": self.critic}  # the identity: skipped silently

    def optimizers(self):
        return {}

    def update(self, x: torch.Tensor) -> None:
        with self.hooks.loss_phase("critic"):
            self.critic(x)


def test_gelu_and_leaky_relu_layers_get_fau_equal_to_a_hand_count_of_positive_outputs():
    nn = torch.nn
    agent = _TinyAgent(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 6), nn.LeakyReLU(0.1))
    config = MonitorConfig(modules=TINY_MODULES, metrics=["fau"], probe_every_updates=0, probe_at_start=False)
    monitor = PlasticityMonitor(config)
    monitor.attach(agent)
    batches = [torch.randn(7, 3), torch.randn(5, 3)]
    for x in batches:
        agent.update(x)
        monitor.after_update(agent, None, step=0)
    values = {k: float(v) for k, v in monitor.log_values().items()}
    assert set(values) == {"plasticity/critic/fau", "plasticity/critic/1/fau", "plasticity/critic/5/fau"}
    x = torch.cat(batches)
    with torch.no_grad():
        gelu = agent.critic[:2](x)
        leaky = agent.critic(x)
    assert (gelu < 0).any() and (leaky < 0).any()  # both go below 0: "> 0" is what is counted
    assert values["plasticity/critic/1/fau"] == int((gelu > 0).sum()) / gelu.numel()
    assert values["plasticity/critic/5/fau"] == int((leaky > 0).sum()) / leaky.numel()
    pooled = (int((gelu > 0).sum()) + int((leaky > 0).sum())) / (gelu.numel() + leaky.numel())
    assert values["plasticity/critic/fau"] == pytest.approx(pooled, abs=1e-15)


def test_a_module_without_a_countable_activation_is_refused_naming_what_it_has():
    nn = torch.nn
    layers = (nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1), nn.Sigmoid())
    refused = (r"module 'critic' has no countable activation layer \(ReLU, LeakyReLU, ELU, GELU, SiLU\); "
               r"found: Tanh at 1, Sigmoid at 3\. FAU and dormant need one")  # fmt: skip
    for metrics in (["fau"], ["dormant"]):
        with pytest.raises(ValueError, match=refused):
            PlasticityMonitor(MonitorConfig(modules=TINY_MODULES, metrics=metrics)).attach(_TinyAgent(*layers))
    with pytest.raises(ValueError, match=r"found: no torch.nn activation module"):
        PlasticityMonitor(MonitorConfig(modules=TINY_MODULES, metrics=["fau"])).attach(_TinyAgent(nn.Linear(3, 1)))
    # without FAU and dormant the module is monitored (norms, ranks), with no activation layer
    class ProbedTinyAgent(_TinyAgent):
        def critic_probe(self, batch, step):
            return CriticProbe(loss_fn=lambda: self.critic(batch).sum(), params=list(self.critic.parameters()))

    monitor = PlasticityMonitor(MonitorConfig(modules=TINY_MODULES, metrics=["weight_norm"]))
    monitor.attach(ProbedTinyAgent(*layers))
    assert monitor.expected_tags() == ["plasticity/critic/weight_norm", "time/probe_s", "time/figures_s"]


# -- training is untouched ------------------------------------------------------------------------


def test_monitor_leaves_updates_rng_and_replay_stream_unchanged():
    """Hooks and probes (every metric, probe every 2 updates) change no loss, parameter, RNG or sample."""
    runs = []
    for monitored in (False, True):
        agent, replay = make_agent("pixels", seed=3), make_replay("pixels", seed=3)
        monitor = None
        if monitored:
            monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=2, **TINY_PROBE))
            monitor.attach(agent)
        torch.manual_seed(7)
        metrics = run_updates(agent, replay, monitor, 4)
        runs.append((agent, replay, metrics, torch.get_rng_state(), monitor))
    (agent_a, replay_a, metrics_a, rng_a, _), (agent_b, replay_b, metrics_b, rng_b, monitor) = runs
    assert monitor.probes == 3  # after updates 1 (start), 2 and 4
    for ma, mb in zip(metrics_a, metrics_b, strict=True):
        assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    for name in ("encoder", "actor", "critic", "critic_target"):
        for pa, pb in zip(getattr(agent_a, name).parameters(), getattr(agent_b, name).parameters(), strict=True):
            assert torch.equal(pa, pb)
            assert pb.grad is None or torch.equal(pa.grad, pb.grad)
    for name, opt in agent_a.optimizers().items():
        state_a, state_b = opt.state_dict()["state"], agent_b.optimizers()[name].state_dict()["state"]
        assert all(torch.equal(state_a[i]["exp_avg"], state_b[i]["exp_avg"]) for i in state_a)
    assert torch.equal(rng_a, rng_b)
    assert all(torch.equal(x, y) for x, y in zip(replay_a.sample(4), replay_b.sample(4), strict=True))


def test_hooks_do_not_change_module_outputs():
    agent = make_agent("pixels")
    obs = torch.randint(0, 256, (3, 9, SIDE, SIDE), dtype=torch.uint8).float()
    action = torch.rand(3, ACTION_DIM)
    before = agent.critic(agent.encoder(obs), action)
    monitor = PlasticityMonitor(MonitorConfig(metrics=["fau"], probe_every_updates=0))
    monitor.attach(agent)
    for modules in (("encoder",), ("critic",), ("actor",)):
        monitor._on_phase(modules, True)  # hooks recording, as inside an update
    after = agent.critic(agent.encoder(obs), action)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


# -- checkpoints ----------------------------------------------------------------------------------


def _assert_same_state(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_state(x, y)
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def _without_times(records: list[ProbeRecord]) -> list[ProbeRecord]:
    """Records without their wall times (``time/...``, which differ between runs)."""
    return [ProbeRecord(r.step, {k: v for k, v in r.scalars.items() if not k.startswith("time/")}, r.images)
            for r in records]  # fmt: skip


@pytest.mark.parametrize("load_first", [True, False])
def test_state_dict_round_trip_resumes_exactly(load_first):
    config = MonitorConfig(probe_every_updates=3, **TINY_PROBE)
    agent, replay = make_agent("states", seed=1), make_replay("states")
    monitor = PlasticityMonitor(config)
    monitor.attach(agent)
    run_updates(agent, replay, monitor, 4)
    monitor.end_episode()
    run_updates(agent, replay, monitor, 1)
    state = checkpoint_round_trip(monitor.state_dict())
    # the probes after updates 1 and 3 are pending, images and all (uint8 tensors in the checkpoint)
    assert [record["step"] for record in state["probe_records"]] == [100, 100]
    assert all(img.dtype == torch.uint8 for record in state["probe_records"] for img in record["images"].values())

    # a resumed agent starts from another init, then loads the weights: drift must still use the first init
    resumed_agent, resumed_replay = make_agent("states", seed=2), make_replay("states")
    resumed_agent.load_state_dict(checkpoint_round_trip(agent.state_dict()))  # no tensors shared with agent
    resumed_replay.load_state_dict(replay.state_dict())
    resumed = PlasticityMonitor(config)
    if load_first:  # the order of a resume: the trainer attaches in its constructor, loads later
        resumed.load_state_dict(state)
        resumed.attach(resumed_agent)
    else:
        resumed.attach(resumed_agent)
        resumed.load_state_dict(state)
    _assert_same_state(monitor.state_dict(), resumed.state_dict())
    assert resumed.signals() == monitor.signals()
    pending = monitor.pop_probe_records()
    assert len(pending) == 2 and resumed.pop_probe_records() == pending  # wall times included: restored as saved

    # the next window, episode and probe agree exactly
    torch.manual_seed(0)
    run_updates(agent, replay, monitor, 1)  # update 6: a probe
    torch.manual_seed(0)
    run_updates(resumed_agent, resumed_replay, resumed, 1)
    monitor.end_episode(), resumed.end_episode()
    assert {k: float(v) for k, v in resumed.log_values().items()} == {
        k: float(v) for k, v in monitor.log_values().items()
    }
    assert resumed.signals() == monitor.signals()
    new, resumed_new = monitor.pop_probe_records(), resumed.pop_probe_records()
    assert len(new) == 1 and set(new[0].images) == set(FIGURE_TAGS.values())
    assert _without_times(new) == _without_times(resumed_new)


def test_a_checkpoint_written_before_the_fau_accounts_class_loads_unchanged():
    """tests/data/monitor_state_4a407a7.pt: a monitor state dict saved by the code of commit 4a407a7 (FAU in
    five dicts of the monitor) after 7 updates, one closed episode and one closed window, with the next values
    that monitor gave; it loads into today's monitor and gives the same values."""
    saved = torch.load(ROOT / "tests" / "data" / "monitor_state_4a407a7.pt", weights_only=True)
    config = MonitorConfig(metrics=["fau", "dormant", "drift", "srank"], probe_every_updates=3, figures=False,
                           **TINY_PROBE)  # fmt: skip
    monitor = PlasticityMonitor(config)
    monitor.attach(make_agent("states", seed=1))
    monitor.load_state_dict(saved["state"])
    assert {"window", "episode", "last_window", "last_episode", "first_update"} <= saved["state"].keys()
    _assert_same_state(monitor.state_dict(), saved["state"])
    assert monitor.signals() == saved["signals"]
    log = monitor.log_values()
    assert log.keys() == saved["next_log_values"].keys()
    assert all(torch.equal(log[tag], saved["next_log_values"][tag]) for tag in log)
    monitor.end_episode()
    assert monitor.signals() == saved["next_signals"]


def test_every_probe_feature_has_a_tag_and_the_table_lists_every_probe_metric():
    from rlplastic.monitor.config import FEATURE_TAGS, PROBE_METRICS
    from rlplastic.monitor.probe_metrics import PROBE_TABLE
    from rlplastic.protocols import PROBE_FEATURES

    assert tuple(FEATURE_TAGS) == PROBE_FEATURES
    produced = [metric for entry in PROBE_TABLE for metric in entry.metrics]
    assert set(produced) == set(PROBE_METRICS)


def test_every_signal_the_monitor_produces_is_a_valid_signal_name():
    from rlplastic.monitor.signals import CRITIC_EPISODE_FAU, check_measured, first_update_signal
    from rlplastic.rr import validate_signal

    agent, replay = make_agent("pixels"), make_replay("pixels")
    config = MonitorConfig(probe_every_updates=0, figures=False, collapse_recent=True, fit_encoder=True, **TINY_PROBE)
    monitor = PlasticityMonitor(config)
    monitor.attach(agent)
    run_updates(agent, replay, monitor, 1)  # the probe at start
    monitor.end_episode(), monitor.log_values()
    signals = monitor.signals()
    assert {CRITIC_EPISODE_FAU, first_update_signal(CRITIC_EPISODE_FAU), "encoder/convnet.1/fau"} <= set(signals)
    assert {"critic/nc1_recent", "critic/fit_loss_encoder", "critic/fit_auc_encoder"} <= set(signals)
    assert all(validate_signal(name) == name for name in signals)
    for name in signals:
        check_measured(name, config, "a test")  # and this monitor is known to measure each of them
    assert first_update_signal("critic/dormant") is None


@pytest.mark.parametrize(
    ("signal", "settings", "message"),
    [
        ("critic/nc1_recent", {}, "which the monitor measures only with monitor.collapse_recent=true"),
        ("critic/fit_auc_encoder", {}, "measures only with monitor.fit_encoder=true"),
        ("critic/nc1_recent", {"collapse_recent": True, "metrics": ["fau"]}, "does not measure 'nc1'"),
        ("critic/episode_fau", {"metrics": ["dormant"]}, "does not measure 'fau': add it to monitor.metrics"),
        ("actor/fau", {"modules": ["encoder", "critic"]}, "does not watch 'actor': add it to monitor.modules"),
    ],
)  # fmt: skip
def test_a_signal_the_monitor_never_measures_is_refused_naming_the_setting(signal, settings, message):
    from rlplastic.monitor.signals import check_measured
    from rlplastic.rr import validate_signal

    validate_signal(signal)  # a valid name...
    with pytest.raises(ValueError, match=re.escape(f"rr=adaptive reads {signal!r}") + ".*" + re.escape(message)):
        check_measured(signal, MonitorConfig(**settings), "rr=adaptive")  # ...that this monitor never gives


def test_fau_accounts_pool_close_and_follow_moved_layers():
    from rlplastic.monitor.fau_accounts import FAUAccounts

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5), torch.nn.ReLU())
    layers = {"1": net[1], "3": net[3]}
    capture = ActivationCapture(layers)
    accounts = FAUAccounts()
    accounts.open({"m": list(layers)}, torch.device("cpu"))
    x = torch.randn(6, 3)
    with capture.recording():
        net(x)
    accounts.count_update()
    accounts.record_first_update({"m": capture})
    accounts.fold({"m": capture})
    h1 = torch.relu(net[0](x))
    positive = [int((h1 > 0).sum()), int((torch.relu(net[2](h1)) > 0).sum())]
    assert accounts.window["m"].tolist() == [[positive[0], 24], [positive[1], 30]]
    assert torch.equal(accounts.first_update["m"], accounts.window["m"])
    assert accounts.close_window() and not accounts.close_window()  # the second window had no update
    assert accounts.window["m"].sum() == 0
    values = accounts.values("last_window", "fau", prefix="plasticity/")
    assert list(values) == ["plasticity/m/fau", "plasticity/m/1/fau", "plasticity/m/3/fau"]
    assert float(values["plasticity/m/fau"]) == pytest.approx(sum(positive) / 54)
    # a layer moved to row 1 keeps its counts, a new layer at row 0 starts from zero
    accounts.follow("m", ["new", "1"], [None, 0])
    assert accounts.last_window["m"].tolist() == [[0, 0], [positive[0], 24]]
    assert accounts.layers["m"] == ("new", "1")
    assert list(accounts.state_dict()) == ["window", "episode", "last_window", "last_episode", "first_update",
                                           "window_updates", "episode_updates"]  # fmt: skip


def test_probes_are_reproducible_and_cover_every_metric():
    values, records = [], []
    for _ in range(2):
        agent, replay = make_agent("pixels"), make_replay("pixels")
        monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=0, probe_at_start=False, **TINY_PROBE))
        monitor.attach(agent)
        values.append(monitor.probe(agent, replay, step=100))
        records.append(monitor.pop_probe_records())
    assert values[0] == values[1]
    assert _without_times(records[0]) == _without_times(records[1])  # figures too, pixel for pixel
    (record,) = records[0]
    assert record.step == 100
    assert _without_times([record])[0].scalars == {f"plasticity/{k}": v for k, v in values[0].items()}
    assert record.scalars["time/probe_s"] > record.scalars["time/figures_s"] > 0
    expected = {f"{m}/{metric}" for m in LAYERS for metric in ("dormant", "weight_norm", "drift")}
    expected |= {f"{m}/{layer}/dormant" for m, layers in LAYERS.items() for layer in layers}
    expected |= {f"{f}/{metric}" for f in ("encoder", "critic", "critic/trunk", "actor/trunk")
                 for metric in ("srank", "erank", "feature_norm")}  # fmt: skip
    expected |= {f"critic/{metric}" for metric in ("grad_norm", "hessian_max", "hessian_min", "hessian_directions",
                                                   "hessian_trace", "hessian_trace_se", "sharpness",
                                                   "last_layer_lambda_max", "last_layer_srank", "nc1", "nc2_equinorm",
                                                   "nc2_equiangular", "nc3", "nc4", "nrc1", "fit_loss",
                                                   "fit_auc")}  # fmt: skip
    assert set(values[0]) == expected
    assert all(isinstance(v, float) and np.isfinite(v) for v in values[0].values())
    assert values[0]["critic/drift"] == 0.0  # nothing trained since attach


# -- probe records, figures and the tag list -------------------------------------------------------


def test_every_probe_is_kept_at_its_own_step_and_log_values_has_fau_only():
    agent, replay = make_agent("states"), make_replay("states")
    monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=1, figures=False, **TINY_PROBE))
    monitor.attach(agent)
    for step in (10, 11, 12):  # a probe on every update (the first is also the start probe)
        agent.update(replay.sample(4), step)
        monitor.after_update(agent, replay, step)
        if step == 11:  # a log in between drops nothing and carries no probe value
            assert set(monitor.log_values()) == {t for t in monitor.expected_tags() if t.endswith("/fau")}
    records = monitor.pop_probe_records()
    assert [r.step for r in records] == [10, 11, 12] and monitor.probes == 3
    assert records[0].scalars != records[2].scalars  # two updates later: new values, not a copy
    assert all(r.images == {} and "time/figures_s" not in r.scalars for r in records)  # figures off
    assert {k.removeprefix("plasticity/") for k in records[-1].scalars if k != "time/probe_s"} == set(
        monitor.signals()
    ) - {k for k in monitor.signals() if "fau" in k}
    assert monitor.pop_probe_records() == []
    assert all(k.endswith("/fau") for k in monitor.log_values())

    # the start probe and every 3rd update: updates 1 and 3 of 4
    monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=3, figures=False, **TINY_PROBE))
    monitor.attach(agent)
    for step in range(4):
        monitor.after_update(agent, replay, step)
    assert [r.step for r in monitor.pop_probe_records()] == [0, 2]


@pytest.mark.parametrize("figures", [True, False])
def test_figures_are_four_rgb_images_per_probe_when_on(figures):
    agent, replay = make_agent("pixels"), make_replay("pixels")
    monitor = PlasticityMonitor(MonitorConfig(probe_every_updates=0, figures=figures, **TINY_PROBE))
    monitor.attach(agent)
    run_updates(agent, replay, monitor, 1)  # the start probe
    (record,) = monitor.pop_probe_records()
    if not figures:
        assert record.images == {} and "time/figures_s" not in record.scalars
        return
    assert set(record.images) == set(FIGURE_TAGS.values()) == {
        "plasticity/figures/activity", "plasticity/figures/critic_spectrum",
        "plasticity/figures/hessian_spectrum", "plasticity/figures/collapse",
    }  # fmt: skip
    for tag, img in record.images.items():
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (280, 480, 3), tag
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, tag  # drawn, not blank
    assert 0 < record.scalars["time/figures_s"] < record.scalars["time/probe_s"]
    # a figure needs what it pictures: without dormant/rank metrics only the last-layer and collapse ones
    monitor = PlasticityMonitor(MonitorConfig(metrics=["last_layer_srank", "nc1"], **TINY_PROBE))
    monitor.attach(agent)
    monitor.probe(agent, replay, step=5)
    (record,) = monitor.pop_probe_records()
    assert set(record.images) == {FIGURE_TAGS["hessian_spectrum"], FIGURE_TAGS["collapse"]}


@pytest.mark.parametrize(
    "obs_type, settings",
    [
        ("pixels", {}),  # everything, figures on
        ("states", {"metrics": ["fau", "dormant", "rank", "hessian_max", "nc4"], "figures": False}),
        ("pixels", {"modules": ["actor"], "metrics": ["drift", "srank"]}),  # no FAU, no critic
        ("states", {"probe_every_updates": 0, "probe_at_start": False}),  # never probes: FAU only
    ],
)
def test_expected_tags_are_exactly_the_tags_written(obs_type, settings):
    agent, replay = make_agent(obs_type), make_replay(obs_type)
    monitor = PlasticityMonitor(MonitorConfig(**{"probe_every_updates": 2, **TINY_PROBE, **settings}))
    monitor.attach(agent)
    expected = monitor.expected_tags()
    run_updates(agent, replay, monitor, 2)
    written = set(monitor.log_values()) | {tag for r in monitor.pop_probe_records() for tag in r.scalars}
    assert len(expected) == len(set(expected)) and set(expected) == written
    if obs_type == "pixels" and not settings:
        assert len(expected) == len(expected_tags()) + 1 and set(expected) == expected_tags() | {"time/figures_s"}
    with pytest.raises(RuntimeError, match="before attach"):
        PlasticityMonitor().expected_tags()


# -- configs --------------------------------------------------------------------------------------


def test_config_names_are_validated_in_one_error():
    with pytest.raises(ValueError, match=r"unknown monitor module\(s\) \['policy'\]: allowed are \['encoder'"):
        MonitorConfig(modules=["encoder", "policy"])
    with pytest.raises(ValueError, match=r"unknown monitor metric\(s\) \['dormancy'\]: allowed are \['fau'") as err:
        MonitorConfig(metrics=["fau", "dormancy"])
    assert "nrc1" in str(err.value) and "curvature" in str(err.value)  # lists metrics and groups
    with pytest.raises(ValueError, match=r"module\(s\) \['trunk'\].*metric\(s\) \['rank2'\]"):
        make_monitor(modules=["trunk"], metrics=["rank2"])
    with pytest.raises(ValueError, match=r"unknown monitor config key\(s\) \['probe_evry'\]: allowed are"):
        make_monitor(probe_evry=10)
    with pytest.raises(ValueError, match="probe_batch_size=4 is smaller than monitor.nc_bins=10"):
        MonitorConfig(probe_batch_size=4)
    with pytest.raises(ValueError, match="hessian_iters=0 must be an int >= 1"):
        MonitorConfig(hessian_iters=0)
    with pytest.raises(ValueError, match="srank_delta=1.0 must be a number in"):
        MonitorConfig(srank_delta=1.0)
    with pytest.raises(ValueError, match="monitor.figures='yes' must be true or false"):
        MonitorConfig(figures="yes")
    assert MonitorConfig(metrics=["rank", "nc1"]).metric_set == {"srank", "erank", "nc1"}
    assert make_monitor(enabled=False) is None

    class NoEncoderAgent:
        hooks = AgentHooks()

        def optimizers(self):
            return {}

        def named_modules_for_monitor(self):
            return {"critic": torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())}

    with pytest.raises(ValueError, match=r"monitor.modules \['encoder', 'actor'\] are not offered by the agent"):
        PlasticityMonitor().attach(NoEncoderAgent())


def compose_monitor(name: str) -> dict:
    """The ``monitor`` group composed into the main config by Hydra (appended if not a default yet)."""
    defaults = OmegaConf.load(ROOT / "configs" / "config.yaml").defaults
    in_defaults = any(isinstance(d, DictConfig) and "monitor" in d for d in defaults)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{'' if in_defaults else '+'}monitor={name}", "seed=5"])
    return OmegaConf.to_container(cfg.monitor, resolve=True)


def test_monitor_configs_compose():
    default, full, off = (compose_monitor(name) for name in ("default", "full", "off"))
    assert make_monitor(**off) is None
    default_monitor, full_monitor = make_monitor(**default), make_monitor(**full)
    assert default_monitor.config.seed == full_monitor.config.seed == 5  # the run seed
    assert default_monitor.config.metric_set == full_monitor.config.metric_set == set(MonitorConfig().metric_set)
    assert full_monitor.config.probe_every_updates < default_monitor.config.probe_every_updates
    assert default_monitor.config.figures and full_monitor.config.figures
    assert set(default) == set(full) == {f for f in MonitorConfig.__dataclass_fields__}


# -- end to end -----------------------------------------------------------------------------------


def expected_tags(recent: bool = False, fit_encoder: bool = False) -> set[str]:
    """Every plasticity tag the monitor with every metric logs for the pixel DrQ-v2 agent (``recent``: and
    ``collapse_recent``, ``fit_encoder``: and the encoder+critic fit, both as ``monitor=full``)."""
    tags = {"time/probe_s"}
    for module, layers in LAYERS.items():
        for metric in ("fau", "dormant"):
            tags |= {f"plasticity/{module}/{metric}"} | {f"plasticity/{module}/{layer}/{metric}" for layer in layers}
        tags |= {f"plasticity/{module}/weight_norm", f"plasticity/{module}/drift"}
    for features in ("encoder", "critic", "critic/trunk", "actor/trunk"):
        tags |= {f"plasticity/{features}/{m}" for m in ("srank", "erank", "feature_norm")}
    critic = ("grad_norm", "hessian_max", "hessian_min", "hessian_directions", "hessian_trace", "hessian_trace_se",
              "last_layer_lambda_max", "last_layer_srank", "sharpness",
              "nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "nrc1", "fit_loss", "fit_auc")  # fmt: skip
    if recent:
        critic += tuple(f"{m}_recent" for m in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "nrc1"))
    if fit_encoder:
        critic += ("fit_loss_encoder", "fit_auc_encoder")
    return tags | {f"plasticity/critic/{m}" for m in critic}


@pytest.fixture(scope="module")
def full_monitor_run(tmp_path_factory):
    """A 20-update pixel run with the full monitor config (scaled down), probes after updates 1, 8, 16."""
    from envs.dmc import make_env
    from rlplastic.rr import StaticRR
    from rlplastic.trainer import Trainer, TrainerConfig

    run_dir = tmp_path_factory.mktemp("full_monitor_run")
    repeat = 8
    env_kwargs = dict(obs_type="pixels", frame_stack=3, action_repeat=repeat, img_size=SIDE)
    train_env = make_env("cartpole_balance", seed=0, **env_kwargs)
    eval_env = make_env("cartpole_balance", seed=1, **env_kwargs)
    agent = DrQV2Agent(train_env.observation_space.shape, train_env.action_space.shape, feature_dim=8,
                       hidden_dim=16, augmentation=RandomShift(pad=4), stddev_schedule="linear(1.0,0.1,1000)",
                       num_expl_steps=0)  # fmt: skip
    replay = ReplayBuffer(train_env.frame_shape, train_env.action_space.shape, capacity=200, frame_stack=3, nstep=3)
    full = compose_monitor("full")
    full.update(probe_every_updates=8, **TINY_PROBE)  # the full config, scaled down to 20 updates
    config = TrainerConfig(num_train_frames=30 * repeat, num_seed_frames=10 * repeat, action_repeat=repeat,
                           eval_every_frames=1000 * repeat, num_eval_episodes=0, batch_size=4,
                           log_every_frames=10 * repeat, save_every_frames=0, save_video=False,
                           progress=False)  # fmt: skip
    monitor = make_monitor(**full)
    trainer = Trainer(agent, train_env, eval_env, replay, StaticRR(1), run_dir, config, monitor=monitor)
    assert trainer.run()["status"] == "complete"
    assert monitor.updates == 20 and monitor.probes == 3
    return run_dir, monitor


def test_end_to_end_full_monitor_writes_fau_the_dashboard_and_a_plain_data_checkpoint(full_monitor_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from rlplastic.checkpoint import load_checkpoint

    run_dir, monitor = full_monitor_run
    scalars = read_scalars_csv(run_dir / "scalars.csv")
    fau = {tag for tag in expected_tags() if tag.endswith("/fau")}
    assert {tag for tag in scalars if tag.endswith("/fau")} == fau
    assert [frame for frame, _ in scalars["plasticity/critic/fau"]] == [20 * 8, 30 * 8]

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    proto = events.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(proto.string_val[0])
    titles = [category.title for category in layout.category]
    modules = ("critic", "encoder", "actor")
    plasticity = [f"Plasticity · {m}" for m in modules] + [f"Plasticity · {m} · layers" for m in modules]
    assert titles[:6] == plasticity
    assert [category.closed for category in layout.category][:6] == [False] * 3 + [True] * 3
    known = set(monitor.expected_tags()) | set(events.Tags()["scalars"])
    charted = []
    for category in layout.category:
        for chart in category.chart:
            (regex,) = chart.multiline.tag
            (tag,) = [tag for tag in known if re.search(regex, tag)]  # one chart, one series
            charted.append(tag)
    assert len(charted) == len(set(charted)) and set(monitor.expected_tags()) <= set(charted)

    checkpoint = load_checkpoint(run_dir).state  # weights_only=True: the monitor state is plain data
    assert checkpoint["monitor"]["updates"] == 20


def test_end_to_end_every_probe_is_logged_at_its_frame_with_its_figures(full_monitor_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, monitor = full_monitor_run
    scalars = read_scalars_csv(run_dir / "scalars.csv")
    logged = {tag for tag in scalars if tag.startswith("plasticity/") or tag in ("time/probe_s", "time/figures_s")}
    assert logged == set(monitor.expected_tags()) == expected_tags(recent=True, fit_encoder=True) | {"time/figures_s"}
    assert all(np.isfinite(value) for tag in logged for _, value in scalars[tag])
    probe_frames = [80, 136, 200]  # updates 1, 8, 16 run at agent steps 10, 17, 25 (action repeat 8)
    assert [frame for frame, _ in scalars["plasticity/critic/nc1"]] == probe_frames
    assert [frame for frame, _ in scalars["time/probe_s"]] == probe_frames
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    for tag in FIGURE_TAGS.values():
        assert [image.step for image in events.Images(tag)] == probe_frames, tag


def _states_run(run_dir: Path, agent_steps: int) -> None:
    """A states run with probes every 7 updates (after updates 1, 7, 14, 21, 28: agent steps 10, 16, 23, 30, 37)."""
    from envs.dmc import make_env
    from rlplastic.rr import StaticRR
    from rlplastic.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    env_kwargs = dict(obs_type="states", action_repeat=8)
    train_env, eval_env = (make_env("cartpole_balance", seed=s, **env_kwargs) for s in (0, 1))
    agent = DrQV2Agent(train_env.observation_space.shape, train_env.action_space.shape, obs_type="states",
                       feature_dim=8, hidden_dim=16, stddev_schedule="linear(1.0,0.1,1000)")  # fmt: skip
    replay = ReplayBuffer(train_env.frame_shape, train_env.action_space.shape, capacity=500, frame_stack=1,
                          frame_dtype=np.float32)  # fmt: skip
    config = TrainerConfig(num_train_frames=agent_steps * 8, num_seed_frames=80, action_repeat=8,
                           eval_every_frames=8000, num_eval_episodes=0, batch_size=4, log_every_frames=40,
                           save_every_frames=0, use_tb=False, save_video=False, progress=False)  # fmt: skip
    monitor = make_monitor(metrics=["fau", "dormant", "drift", "nc1"], probe_every_updates=7, figures=False,
                           **TINY_PROBE)  # fmt: skip
    Trainer(agent, train_env, eval_env, replay, StaticRR(1), run_dir, config, monitor=monitor).run()


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory) -> list[dict]:
    """The plasticity series of a 40-step run, and of the same run stopped at step 22 and resumed."""
    root = tmp_path_factory.mktemp("resume")
    _states_run(root / "straight", 40)
    _states_run(root / "resumed", 22)  # ends with a checkpoint mid-window, between probes
    _states_run(root / "resumed", 40)
    scalars = [read_scalars_csv(root / name / "scalars.csv") for name in ("straight", "resumed")]
    return [{tag: s for tag, s in series.items() if tag.startswith("plasticity/")} for series in scalars]


def test_resumed_run_logs_the_same_plasticity_values(straight_and_resumed):
    """Stop at a checkpoint and resume: every plasticity value equals an uninterrupted run's."""
    straight, resumed = straight_and_resumed
    assert straight == resumed
    assert len(straight["plasticity/critic/fau"]) == 6


def test_resumed_run_logs_every_probe_once_at_its_frame(straight_and_resumed):
    straight, resumed = straight_and_resumed
    frames = [80, 128, 184, 240, 296]  # agent steps 10, 16, 23, 30, 37
    assert [frame for frame, _ in straight["plasticity/critic/nc1"]] == frames
    assert straight["plasticity/critic/nc1"] == resumed["plasticity/critic/nc1"]
