"""``compile=true``: the compiled update computes what the eager one does, and the monitor's hooks still count.

What is compiled: the network forwards called by ``DrQV2Agent.update`` (encoder, actor mean, critic and
target critic), each through ``torch.compile`` (mode ``default`` on CPU, ``reduce-overhead`` on CUDA).
Losses, optimizer steps and the augmentation stay eager. The monitor's FAU hooks on the ReLU modules
are traced into the compiled graphs, so the counts are those of the eager update.

Tolerance: compiled and eager updates on the same batch and RNG state agree to ``atol=1e-5, rtol=1e-4``
in every metric (losses, Q values, entropy) and every gradient of two updates (Inductor fuses and
reorders float32 reductions). Parameters agree to 2.5·lr absolute: Adam's first steps are ±lr per
weight whatever the gradient's size, so a ~1e-9 gradient whose sign flips by rounding moves by 2·lr.
FAU counts agree exactly.

Compile time (measured once on this project's shared 2-core CPU machine, torch 2.13 CPU, g++, cold
Inductor cache, so only indicative): the first compiled update of the tiny agent took 194 s (one-off
Inductor start-up, then C++ builds of the forward and backward graphs of five functions), later tiny
updates 1.6 s vs 2.1 s eager (the machine was loaded); at DrQ-v2 sizes (batch 256, hidden 1024, feature
50, 6 actions) the first compiled update took 107 s in a process already past the start-up, later ones
13.2 s vs 17.0 s eager. Recompiles after a hook change take a few seconds. A warm on-disk cache
(``/tmp/torchinductor_$USER``) makes later processes start in tens of seconds: this file runs in about
1.5 min warm, 4-5 min cold. The ``compiled`` fixture compiles once for the tests that share it.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch

from agents.drqv2 import DrQV2Agent
from rlplastic.compiled import compile_unavailable_reason
from rlplastic.monitor.hooks import ActivationCapture, relu_layers
from tests.factories import random_batch, tiny_agent
from tests.test_trainer import run_train

ATOL, RTOL = 1e-5, 1e-4

pytestmark = pytest.mark.skipif(
    compile_unavailable_reason("cpu") is not None,
    reason=f"torch.compile unavailable: {compile_unavailable_reason('cpu')}",
)
# torch.compile takes 1.5-5 minutes here for these tiny graphs (cold cache): outside CI's budget.
COMPILES = pytest.mark.slow


def _with_fau_counter(agent: DrQV2Agent) -> ActivationCapture:
    """Count critic and encoder ReLU activity in the critic-loss forward, as the monitor does."""
    layers = {f"critic.{k}": m for k, m in relu_layers(agent.critic).items()}
    layers.update({f"encoder.{k}": m for k, m in relu_layers(agent.encoder).items()})
    capture = ActivationCapture(layers)
    stack: list = []

    def listener(modules: tuple[str, ...], active: bool) -> None:
        if not {"encoder", "critic"} & set(modules):
            return
        if active:
            stack.append(capture.recording())
            stack[-1].__enter__()
        else:
            stack.pop().__exit__(None, None, None)

    agent.hooks.add_phase_listener(listener)
    return capture


def _two_updates(agent: DrQV2Agent) -> list[dict[str, Any]]:
    """Metrics and the gradients left by each update (the last backward's, as ``.grad``)."""
    out = []
    for step in (0, 1):
        torch.manual_seed(100 + step)  # same augmentation and policy-noise draws for both agents
        metrics: dict[str, Any] = {
            k: float(v) for k, v in agent.update(random_batch(batch_size=8, seed=step), step).items()
        }
        for name in ("encoder", "actor", "critic"):
            for pname, p in getattr(agent, name).named_parameters():
                metrics[f"grad/{name}.{pname}"] = p.grad.clone()
        out.append(metrics)
    return out


@pytest.fixture(scope="module")
def compiled() -> tuple[DrQV2Agent, ActivationCapture, list[dict[str, float]]]:
    agent = tiny_agent(compile=True)
    capture = _with_fau_counter(agent)
    return agent, capture, _two_updates(agent)


@COMPILES
def test_compiled_update_matches_eager_and_keeps_the_fau_counts(compiled):
    agent, capture, metrics = compiled
    eager = tiny_agent()
    eager_capture = _with_fau_counter(eager)
    eager_metrics = _two_updates(eager)
    assert (
        agent.compile
        and agent._compiled.mode == "default"
        and set(agent._compiled.cache) == {"encoder", "actor", "critic", "critic_target"}
    )
    for got, want in zip(metrics, eager_metrics, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            if key.startswith("grad/"):
                torch.testing.assert_close(got[key], want[key], atol=ATOL, rtol=RTOL, msg=key)
            else:
                assert got[key] == pytest.approx(want[key], rel=RTOL, abs=ATOL), key
    # Adam's first steps move each weight by about ±lr whatever the gradient's size, so a gradient
    # of ~1e-9 whose sign differs by rounding moves a weight by 2·lr: parameters agree to 2.5·lr.
    for name in ("encoder", "actor", "critic", "critic_target"):
        for (pname, p), (_, q) in zip(getattr(agent, name).named_parameters(),
                                      getattr(eager, name).named_parameters(), strict=True):  # fmt: skip
            torch.testing.assert_close(p, q, atol=2.5e-4, rtol=0.0, msg=f"{name}.{pname}")
    counts = {k: (int(p), int(t)) for k, (p, t) in capture.counts().items()}
    eager_counts = {k: (int(p), int(t)) for k, (p, t) in eager_capture.counts().items()}
    assert counts == eager_counts
    # 4 critic ReLUs (two per Q head) and 4 encoder ReLUs, each counted in both updates
    assert len(counts) == 8 and counts["critic.Q1.1"][1] == 2 * 8 * 16
    assert counts["encoder.convnet.7"][1] == 2 * 8 * 32 * 35 * 35
    assert all(0 < p < t for p, t in counts.values())


@COMPILES
def test_hook_added_after_compiling_still_fires(compiled):
    agent, _, _ = compiled
    calls: list[tuple[int, ...]] = []
    handle = agent.critic.Q2[3].register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    try:
        agent.update(random_batch(batch_size=8, seed=5), 2)
    finally:
        handle.remove()
    # critic-loss forward and actor-loss forward (the target critic is another module)
    assert calls == [(8, 16), (8, 16)]


def test_unavailable_compiler_is_one_clear_value_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ValueError, match=r"compile=true cannot run here: no C\+\+ compiler found"):
        tiny_agent(compile=True)
    assert compile_unavailable_reason("meta") == "compile is supported on cpu and cuda devices, not 'meta'"


@COMPILES
def test_short_run_with_compile_completes(tmp_path):
    summary, series = run_train(tmp_path, [
        "task=cartpole_balance", "obs_type=states", "aug=none", "device=cpu", "progress=false", "save_video=false",
        "compile=true", "hidden_dim=16", "feature_dim=8", "batch_size=8", "num_seed_frames=200",
        "num_train_frames=400", "eval_every_frames=400", "num_eval_episodes=1", "replay_buffer_size=1000",
        "log_every_frames=200", "use_tb=false",
    ])  # fmt: skip
    assert summary["status"] == "complete" and summary["frame"] == 400
    assert series["rr/updates"][-1] == (400, 50.0)  # RR 0.5 over 100 post-seed agent steps (action_repeat 2)
    assert all(torch.isfinite(torch.tensor(v)) for _, v in series["train/critic_loss"])


def test_cuda_mode_choice_keeps_hooked_modules_out_of_cuda_graphs(monkeypatch):
    # The CUDA choice, exercised on CPU: modules with the monitor's hooks use the default mode, the unhooked
    # target critic uses CUDA graphs. Only the choice is under test, so torch.compile is the identity here
    # (a cold compile of four graphs costs ~90 s in a fresh clone); the --runslow tests compile for real.
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: fn)
    agent = tiny_agent(compile=True)
    agent._compiled.mode = "reduce-overhead"
    capture = _with_fau_counter(agent)
    torch.manual_seed(0)
    agent.update(random_batch(batch_size=8, seed=0), 0)
    modes = {name: mode for name, (_, mode, _) in agent._compiled.cache.items()}
    assert modes == {"encoder": "default", "critic": "default", "actor": "reduce-overhead",
                     "critic_target": "reduce-overhead"}  # fmt: skip
    assert capture.counts()["critic.Q1.1"][1] == 8 * 16
    agent.hooks._listeners.clear()
    capture.remove()  # no hooks left: the critic moves to CUDA graphs
    agent.update(random_batch(batch_size=8, seed=1), 1)
    assert agent._compiled.cache["critic"][1] == "reduce-overhead"
