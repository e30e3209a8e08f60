r"""The plasticity monitor the trainer drives: FAU on every update, probe metrics every N updates.

**Every update (on device, no host sync).** Forward hooks (:class:`ActivationCapture`, counting
mode) on every counted activation layer of each monitored module
(:func:`~rlplastic.monitor.hooks.activation_layers`: ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.ELU``,
``nn.GELU``, ``nn.SiLU``, whose output is positive exactly where their input is; DrQ-v2's are all
ReLUs, its trunks' Tanh is not counted) count ``#(activation > 0)`` and ``#activation`` per layer.
A monitored module with parameters but no counted layer is refused while ``fau`` or ``dormant`` is
on. The hooks count only inside the agent's loss forwards, which the agent marks with
``agent.hooks.loss_phase(module)`` (:class:`~rlplastic.agent_hooks.AgentHooks`): for DrQ-v2 the
encoder's and the critic's forwards in the critic loss, the actor's in the actor loss. That is the
released Adaptive-RR definition of FAU (docs/reference.md §2): the
current, augmented training minibatch, strictly ``> 0``, pooled over layers as
``Σ positives / Σ elements``. The critic forward inside the actor loss, the target computation
and acting are not counted. FAU is pooled over the updates of a log window (:meth:`log_values`)
and, separately, over the updates of an episode (:meth:`PlasticityMonitor.end_episode`); the counts
are kept by :class:`~rlplastic.monitor.fau_accounts.FAUAccounts`.
``encoder_fau_every_updates`` > 1 counts the encoder (the bulk of the cost) on every k-th update only.

**Every ``probe_every_updates`` updates (a probe; it syncs and returns floats).** A probe batch of
``probe_batch_size`` transitions is drawn from the replay with the monitor's own NumPy generator,
and everything runs inside ``torch.random.fork_rng`` with torch seeded from that generator, so
the training sample stream and torch RNG streams are untouched and a probe is reproducible.
``agent.critic_probe(batch, step)`` freezes one augmentation draw, the encoder features and the
TD targets, so the critic loss is one fixed function of the critic parameters. On it (each metric an
entry of :data:`~rlplastic.monitor.probe_metrics.PROBE_TABLE`, whose order fixes the order in which the
passes draw random numbers):

* ``dormant`` (per activation layer and unit-weighted per module, ReDo's τ-dormant, conv channels as
  units): from the activations of each module's **first** forward inside ``critic_probe`` (for
  DrQ-v2: the encoder and the actor on the probe observations, before the TD target runs them on
  next states), and for the critic from its forward in the frozen loss (both Q heads, batch actions).
* ``srank`` (δ = ``srank_delta``), ``erank`` and ``feature_norm`` of each feature matrix of the
  probe: ``encoder`` (encoder output) → ``encoder/…``; ``critic_penultimate`` (input of Q1's last
  Linear) → ``critic/…``; ``critic_trunk`` → ``critic/trunk/…``; ``actor_trunk`` →
  ``actor/trunk/…`` (:data:`~rlplastic.monitor.config.FEATURE_TAGS`). Features are **not centred**
  unless ``center_features`` (as the reference RL code).
* ``weight_norm`` (RMS over all parameter elements) and ``drift`` (L2 distance from the parameters
  at attach time) per module; ``grad_norm`` of the frozen critic loss w.r.t. the critic.
* Curvature of the frozen critic loss w.r.t. all critic parameters, from one Lanczos run on
  Hessian-vector products (the Hessian is indefinite, so its two ends are separate tags):
  ``hessian_max`` and ``hessian_min`` (the extreme Ritz values), ``hessian_directions`` (how many
  of the top-k Ritz values exceed ε·λ_max, Lewandowski et al. 2023), ``hessian_trace`` and its
  standard error ``hessian_trace_se`` (exact on the Lanczos basis plus Hutchinson on the deflated
  rest), ``sharpness`` S_ρ; and the exact last-layer Hessian of Q1 from the Gram identity,
  ``last_layer_lambda_max`` and ``last_layer_srank``.
* Neural collapse of the critic penultimate features with K equal-count quantile bins of the TD
  target as classes: ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4``, ``nrc1``; the
  protocol is documented in :mod:`rlplastic.monitor.collapse`. With ``collapse_recent`` the same
  metrics also on the newest ``probe_batch_size`` transitions of the replay (``replay.recent``), as
  ``<metric>_recent``: the data the critic has trained on least.
* Target fitting, plasticity measured directly: a deep copy of the critic (hooks, ``.grad`` and the
  optimizer left behind) takes ``fit_steps`` Adam steps on the probe's frozen encoder features and
  actions to add fresh standardised targets to its outputs; ``fit_loss`` is the normalised final loss
  (1 = no fit) and ``fit_auc`` the area under the fitting curve; protocol in :mod:`rlplastic.monitor.fitting`.
  With ``fit_encoder`` the same for a copy of the encoder *and* the critic, end to end on the probe's frozen
  augmented observations and actions (``CriticProbe.encoder_inputs``), as ``fit_loss_encoder`` and
  ``fit_auc_encoder``; only for a monitored encoder with parameters (none in states mode).

Tags are ``plasticity/<module>/<metric>`` and ``plasticity/<module>/<layer>/<metric>``; layer names
are the activation layer's qualified name inside its module (``Q1.1``, ``Q1.3``, ``policy.1``, ``convnet.1``),
stable as long as the architecture is.

**What the logger gets.** :meth:`PlasticityMonitor.log_values` returns the FAU of the log window.
Each probe becomes one :class:`ProbeRecord` (its agent step, its scalars, and with ``figures`` its
pictures from :mod:`rlplastic.monitor.figures`), queued until :meth:`PlasticityMonitor.pop_probe_records`;
so every probe is logged at the step it measured, whatever the probe and log cadences.
:meth:`PlasticityMonitor.expected_tags` lists every scalar tag the monitor will write, for the
dashboard (:mod:`rlplastic.dashboard`).

The settings and the names a config may list are in :mod:`rlplastic.monitor.config` (re-exported here).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlplastic.monitor.config import (
    CRITIC,
    ENCODER,
    METRIC_GROUPS,
    METRICS,
    MODULES,
    PROBE_METRICS,
    MonitorConfig,
    config_from_mapping,
)
from rlplastic.monitor.fau_accounts import FAUAccounts
from rlplastic.monitor.figures import FigureInputs, draw_probe_figures
from rlplastic.monitor.hooks import COUNTED_ACTIVATIONS, ActivationCapture, activation_layers, other_activations
from rlplastic.monitor.probe_metrics import (
    ProbeContext,
    ProbeLayout,
    expected_keys,
    first_call,
    measure,
    needs_first_calls,
)
from rlplastic.monitor.rank import snapshot_params
from rlplastic.protocols import Batch, MonitoredAgent, ProbedAgent, Replay, require

__all__ = ["METRICS", "METRIC_GROUPS", "MODULES", "MonitorConfig", "PlasticityMonitor", "ProbeRecord", "make_monitor"]


# Keeps the monitor's probe stream apart from a replay sampler seeded with the same run seed.
_RNG_STREAM = 0x6D6F6E69746F72  # "monitor"


@dataclass(frozen=True, eq=False)
class ProbeRecord:
    """What one probe measured, to be logged at the step it ran (:meth:`PlasticityMonitor.pop_probe_records`).

    Attributes:
        step: the agent step passed to the :meth:`PlasticityMonitor.after_update` (or
            :meth:`PlasticityMonitor.probe`) call that ran the probe; frames = ``step × action_repeat``.
        scalars: full tags → floats: ``plasticity/<module>/<metric>``,
            ``plasticity/<module>/<layer>/<metric>``, ``time/probe_s`` (the whole probe, figures
            included) and, with figures on, ``time/figures_s`` (drawing them).
        images: image tags (``plasticity/figures/<name>``) → ``(H, W, 3)`` uint8 RGB arrays; empty
            with figures off.
    """

    step: int
    scalars: dict[str, float]
    images: dict[str, np.ndarray]

    __hash__ = None  # type: ignore[assignment]  # holds dicts and arrays

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProbeRecord):
            return NotImplemented
        return (
            self.step == other.step
            and self.scalars == other.scalars
            and self.images.keys() == other.images.keys()
            and all(np.array_equal(img, other.images[tag]) for tag, img in self.images.items())
        )

    def to_state(self) -> dict[str, Any]:
        """Checkpoint form: plain Python and uint8 tensors (loads with ``torch.load(weights_only=True)``)."""
        images = {tag: torch.from_numpy(np.ascontiguousarray(img)) for tag, img in self.images.items()}
        return {"step": self.step, "scalars": dict(self.scalars), "images": images}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ProbeRecord:
        """Inverse of :meth:`to_state` (images come back as host arrays wherever the tensors were mapped)."""
        images = {tag: img.cpu().numpy() for tag, img in state["images"].items()}
        scalars = {tag: float(value) for tag, value in state["scalars"].items()}
        return cls(int(state["step"]), scalars, images)


def make_monitor(**cfg: Any) -> PlasticityMonitor | None:
    """Build the monitor from a config mapping (``make_monitor(**cfg.monitor)``).

    :return: ``None`` when ``enabled`` is false (``monitor=off``).
    :raises ValueError: for an unknown key, module or metric name, or an out-of-range value
        (:func:`~rlplastic.monitor.config.config_from_mapping`).
    """
    config = config_from_mapping(cfg)
    return PlasticityMonitor(config) if config.enabled else None


def _no_activation_layer(name: str, module: nn.Module) -> str:
    """Why the monitor refuses ``module``: no counted activation layer, and what activations it has instead."""
    counted = ", ".join(kind.__name__ for kind in COUNTED_ACTIVATIONS)
    found = ", ".join(f"{kind} at {path}" for path, kind in other_activations(module).items())
    found = found or "no torch.nn activation module (functional calls such as F.relu are invisible to the monitor)"
    return (
        f"monitor: module {name!r} has no countable activation layer ({counted}); found: {found}. FAU and dormant "
        f"need one (active = output > 0): drop fau and dormant from monitor.metrics, or {name!r} from monitor.modules"
    )


class PlasticityMonitor:
    """Plasticity metrics of an agent's networks, for the trainer's ``Monitor`` protocol.

    Lifecycle: :meth:`attach` once (hooks and the phase listener); :meth:`after_update` after every
    gradient update; :meth:`log_values` and :meth:`pop_probe_records` at each log; :meth:`end_episode`
    at each episode end (for the per-episode FAU that Adaptive-RR uses); :meth:`signals` whenever a
    controller decides. :meth:`load_state_dict` may come before or after :meth:`attach`.

    Args:
        config: the settings; ``MonitorConfig()`` by default.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config if config is not None else MonitorConfig()
        self.updates = 0  # gradient updates seen
        self.probes = 0  # probes run
        self._metrics = self.config.metric_set
        self._rng = np.random.default_rng([_RNG_STREAM, self.config.seed])
        self._modules: dict[str, nn.Module] = {}
        self._layers: dict[str, dict[str, nn.Module]] = {}  # counted activation layers per module
        self._captures: dict[str, ActivationCapture] = {}
        self._phase_stacks: list[ExitStack] = []  # one per open loss phase, innermost last
        self._hooks: Any = None  # the agent's AgentHooks, once attached
        self._device = torch.device("cpu")
        self._fau = FAUAccounts()  # open and last closed window and episode, and the first update
        self._init_params: dict[str, dict[str, Tensor]] | None = None
        self._param_refs: dict[str, dict[str, nn.Parameter]] = {}  # to follow parameters by identity
        self._probe_values: dict[str, float] = {}  # latest value of every probe metric
        self._probe_features: frozenset[str] | None = None  # feature keys of the agent's probes, once seen
        self._records: list[ProbeRecord] = []  # probes not yet popped, oldest first
        self._pending_state: dict[str, Any] | None = None
        self._probe_cache: dict[str, Any] = {}  # kept across probes: the fitting probes' target networks

    # -- trainer protocol -------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return bool(self._modules)

    def attach(self, agent: MonitoredAgent) -> None:
        """Hook the agent's monitored modules and register the phase listener (once)."""
        if self.attached:
            raise RuntimeError("PlasticityMonitor.attach called twice; build one monitor per agent")
        require(agent, MonitoredAgent, "the plasticity monitor")
        available = agent.named_modules_for_monitor()
        missing = [m for m in self.config.modules if m not in available]
        if missing:
            raise ValueError(f"monitor.modules {missing} are not offered by the agent: it has {list(available)}")
        for name in self.config.modules:
            module = available[name]
            if next(module.parameters(), None) is None:
                continue  # states-mode identity encoder: nothing to measure
            self._modules[name] = module
            layers = activation_layers(module)
            if layers:
                self._layers[name] = layers
            elif self._metrics & {"fau", "dormant"}:
                raise ValueError(_no_activation_layer(name, module))
        if not self._modules:
            raise ValueError(f"none of monitor.modules {list(self.config.modules)} has parameters to monitor")
        if self._metrics & set(PROBE_METRICS) and (self.config.probe_every_updates > 0 or self.config.probe_at_start):
            require(agent, ProbedAgent, f"the monitor's probe metrics ({sorted(self._metrics & set(PROBE_METRICS))})")
        self._device = next(next(iter(self._modules.values())).parameters()).device
        layer_names = {name: list(layers) for name, layers in self._layers.items()}
        self._fau.open(layer_names, self._device, counting="fau" in self._metrics)
        if "fau" in self._metrics:
            # count mode only: nothing is stored, and outside the loss phases the hooks return at once
            self._captures = {name: ActivationCapture(layers, count=True) for name, layers in self._layers.items()}
            agent.hooks.add_phase_listener(self._on_phase)
            self._hooks = agent.hooks
        self._param_refs = {name: dict(module.named_parameters()) for name, module in self._modules.items()}
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._apply_state(state)
        elif "drift" in self._metrics:
            self._init_params = {name: snapshot_params(module) for name, module in self._modules.items()}

    def after_intervention(self, agent: MonitoredAgent, modules: Sequence[str], reinitialised: bool = False) -> None:
        """Follow an intervention that changed ``modules`` (call it right after, outside any update).

        Plasticity injection moves a head's layers under new names (``Q1.1`` → ``Q1.base.1``) and adds
        new ones. The monitor follows every activation layer and parameter **by identity**: a moved layer keeps
        its FAU counts under its new name and new layers start from zero (so pooled FAU over an account that
        spans the injection is exact); a moved parameter keeps its initial value for ``drift`` and a new
        one starts from its value now. After a re-initialisation (``reinitialised``: full or heads
        reset) ``drift`` of those modules is measured from the fresh weights. Other interventions
        (ReDo, shrink-and-perturb, regularizers) change values in place and need no call.

        Args:
            agent: the agent the monitor is attached to.
            modules: names of the modules the intervention touched.
            reinitialised: the modules were re-initialised (re-anchor ``drift``).
        """
        self._fold()
        available = agent.named_modules_for_monitor()
        for name in modules:
            if name not in self._modules:
                continue
            module = self._modules[name] = available[name]
            if name in self._layers:
                self._follow_layers(name, activation_layers(module))
            params = dict(module.named_parameters())
            if self._init_params is not None:
                old_key = {id(p): key for key, p in self._param_refs[name].items()}
                init = self._init_params[name]
                self._init_params[name] = {
                    key: init[old_key[id(p)]] if id(p) in old_key and not reinitialised else p.detach().clone()
                    for key, p in params.items()
                }
            self._param_refs[name] = params

    def _follow_layers(self, name: str, layers: dict[str, nn.Module]) -> None:
        old = self._layers[name]
        if list(old) == list(layers) and all(old[k] is layers[k] for k in layers):
            return
        old_row = {id(layer): i for i, layer in enumerate(old.values())}
        self._fau.follow(name, list(layers), [old_row.get(id(layer)) for layer in layers.values()])
        self._layers[name] = layers
        if name in self._captures:
            self._captures[name].remove()
            self._captures[name] = ActivationCapture(layers, count=True)

    def after_update(self, agent: ProbedAgent, replay: Replay, step: int) -> None:
        """Account one gradient update; run a probe when one is due. No host sync unless probing."""
        self.updates += 1
        self._fau.count_update()
        if self.updates == 1 and self._captures:
            self._fau.record_first_update(self._captures)
            if self._hooks.phase_events == 0:
                warnings.warn(
                    f"{type(agent).__name__}.update opened no loss phase, so the monitor counts no FAU (it would "
                    "read NaN): wrap each forward that makes a module's loss in `with self.hooks.loss_phase(name):`",
                    RuntimeWarning,
                    stacklevel=2,
                )
        every = self.config.probe_every_updates
        due = (every > 0 and self.updates % every == 0) or (self.config.probe_at_start and self.updates == 1)
        if due and self._metrics & set(PROBE_METRICS):
            self.probe(agent, replay, step)

    def log_values(self) -> dict[str, Any]:
        """The log window's FAU for the logger, ``plasticity/<module>[/<layer>]/fau`` (device tensors).

        Closes the FAU window: its counters are reset in place. Empty when the window had no update.
        Probe values are not here: they come, each at its own step, from :meth:`pop_probe_records`.
        """
        self._fold()
        if not self._fau.close_window():
            return {}
        return self._fau.values("last_window", "fau", prefix="plasticity/")

    def pop_probe_records(self) -> list[ProbeRecord]:
        """Every probe run since the last call, oldest first, and forget them.

        Nothing is overwritten or merged, so a probe on every update gives one record per update.
        The trainer logs each at its own frame: ``logger.scalars(rec.scalars, rec.step × action_repeat)``
        and each of ``rec.images`` as an image there. Records not popped yet are part of
        :meth:`state_dict`, so a resume logs them exactly once.
        """
        records, self._records = self._records, []
        return records

    def end_episode(self) -> None:
        """Close the episode's FAU account (call at each episode end); episodes without updates are skipped."""
        self._fold()
        self._fau.close_episode()

    def signals(self) -> dict[str, float]:
        """The latest values as floats, keyed ``<module>/<metric>`` and ``<module>/<layer>/<metric>``.

        ``<module>/fau``: FAU over the last **closed** log window; ``<module>/episode_fau``: over the
        updates of the last finished episode (:meth:`end_episode`); ``<module>/first_update_fau``:
        the very first update; plus every probe metric's latest value. Syncs once with the host. The names
        a controller or trigger may ask for are defined in :mod:`rlplastic.monitor.signals`.
        """
        tensors = self._fau.signal_values()
        out = dict(self._probe_values)
        if tensors:
            stacked = torch.stack([t.to(torch.float64).reshape(()) for t in tensors.values()]).cpu().tolist()
            out.update(zip(tensors, stacked, strict=True))
        return out

    def expected_tags(self) -> list[str]:
        """Every scalar tag this monitor writes, via :meth:`log_values` and :meth:`pop_probe_records` (after attach).

        Follows the config (metrics, probe cadence, ``figures``), the monitored modules and their activation
        layers, and the features of the probe protocol (:data:`rlplastic.protocols.PROBE_FEATURES`); the probe
        keys come from the same table that computes them (:func:`~rlplastic.monitor.probe_metrics.expected_keys`),
        so a dashboard built from it (:func:`rlplastic.dashboard.build_layout`) has a chart for every series before
        the first value arrives. Curvature metrics on a ``curvature_every_probes`` cadence are listed too.
        """
        if not self.attached:
            raise RuntimeError("PlasticityMonitor.expected_tags before attach(agent)")
        tags = []
        if "fau" in self._metrics:
            for name, layers in self._layers.items():
                tags += [f"plasticity/{name}/fau", *(f"plasticity/{name}/{layer}/fau" for layer in layers)]
        cfg = self.config
        probes = cfg.probe_every_updates > 0 or cfg.probe_at_start
        if probes and self._metrics & set(PROBE_METRICS):
            tags += [f"plasticity/{key}" for key in expected_keys(self._layout())]
            tags.append("time/probe_s")
            if cfg.figures:
                tags.append("time/figures_s")
        return tags

    # -- probe ------------------------------------------------------------------------------------

    def probe(self, agent: ProbedAgent, replay: Replay, step: int) -> dict[str, float]:
        """Measure the probe metrics now on a fresh probe batch; returns them (keys without ``plasticity/``).

        The values also become the latest :meth:`signals` and a :class:`ProbeRecord` at ``step``
        (with the figures when ``figures`` is on) for :meth:`pop_probe_records`. Leaves training
        untouched: the replay's own sampler, torch's RNG streams, parameters, ``.grad`` fields and
        optimizer states are as before.
        """
        if not self.attached:
            raise RuntimeError("PlasticityMonitor.probe before attach(agent)")
        start = time.perf_counter()
        seed = int(self._rng.integers(2**63))
        devices = [self._device.index or 0] if self._device.type == "cuda" else []
        figures = FigureInputs(step=int(step), dormant_tau=self.config.dormant_tau,
                               srank_delta=self.config.srank_delta) if self.config.figures else None  # fmt: skip
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            if self._device.type == "cuda":
                with torch.cuda.device(self._device):
                    torch.cuda.manual_seed(seed)
            batch = replay.sample(self.config.probe_batch_size, self._device, rng=self._rng)
            values = self._measure(agent, replay, batch, step, seed, figures)
        scalars = {f"plasticity/{key}": value for key, value in values.items()}
        images: dict[str, np.ndarray] = {}
        if figures is not None:
            drawing = time.perf_counter()  # (matplotlib is imported on the first drawing)
            images = draw_probe_figures(figures)
            scalars["time/figures_s"] = time.perf_counter() - drawing
        self.probes += 1
        self._probe_values.update(values)
        scalars["time/probe_s"] = time.perf_counter() - start
        self._records.append(ProbeRecord(int(step), scalars, images))
        return values

    def _measure(
        self,
        agent: ProbedAgent,
        replay: Replay,
        batch: Batch,
        step: int,
        seed: int,
        figures: FigureInputs | None = None,
    ) -> dict[str, float]:
        """The probe metrics on ``batch`` (:data:`~rlplastic.monitor.probe_metrics.PROBE_TABLE`, in order); fills
        ``figures`` (when given) with the arrays the pictures need."""
        layout = self._layout()
        with ExitStack() as stack:
            first_calls = {}
            if needs_first_calls(layout):
                first_calls = {
                    name: stack.enter_context(first_call(self._modules[name], layers))
                    for name, layers in self._layers.items()
                    if name != CRITIC  # the critic's come from its frozen-loss forward
                }
            probe = agent.critic_probe(batch, step)
        # what the agent's probe carries decides the feature tags from now on (expected_tags follows it)
        self._probe_features = frozenset(probe.features)
        layout = self._layout()
        ctx = ProbeContext(
            layout, agent, replay, int(step), seed, self.probes, self._device, probe,
            activations={name: capture.activations for name, capture in first_calls.items()},
            init_params=self._init_params, figures=figures, cache=self._probe_cache,
        )  # fmt: skip
        del first_calls
        return measure(ctx)

    def _layout(self) -> ProbeLayout:
        """What decides the probe's keys: config, metrics, monitored modules and their activation layers."""
        return ProbeLayout(self.config, self._metrics, self._modules, self._layers, self._probe_features)

    # -- FAU bookkeeping --------------------------------------------------------------------------

    def _fold(self) -> None:
        """Move the captures' counts into the FAU accounts (device ops only)."""
        self._fau.fold(self._captures)

    def _on_phase(self, modules: tuple[str, ...], active: bool) -> None:
        """Phase listener: count FAU only in the forward that makes a module's loss."""
        if active:
            stack = ExitStack()
            skip_encoder = self.updates % self.config.encoder_fau_every_updates != 0
            for name in modules:
                if name in self._captures and not (name == ENCODER and skip_encoder):
                    stack.enter_context(self._captures[name].recording())
            self._phase_stacks.append(stack)
        elif self._phase_stacks:
            self._phase_stacks.pop().close()

    # -- checkpointing ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Counters, RNG, initial parameters, latest probe values, probe records not yet popped (images as
        uint8 tensors) and FAU accounts: tensors and plain Python, for ``torch.load(weights_only=True)``."""
        self._fold()  # bookkeeping only: moves captured counts into the accounts, changes no value
        return {
            "updates": self.updates,
            "probes": self.probes,
            "rng": self._rng.bit_generator.state,
            "layers": {name: list(layers) for name, layers in self._layers.items()},
            "init_params": self._init_params,
            "probe_values": dict(self._probe_values),
            "probe_records": [record.to_state() for record in self._records],
            **self._fau.state_dict(),  # window, episode, last_window, last_episode, first_update, *_updates
            # the probe features once a probe has shown them (absent before, as in older checkpoints)
            **({} if self._probe_features is None else {"probe_features": sorted(self._probe_features)}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; before :meth:`attach` it is applied at attach time."""
        if not self.attached:
            self._pending_state = dict(state)
            return
        self._apply_state(state)

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        layers = {name: list(layers) for name, layers in self._layers.items()}
        if state["layers"] != layers:
            raise ValueError(f"monitor state was saved for layers {state['layers']}, this agent has {layers}")
        self.updates, self.probes = int(state["updates"]), int(state["probes"])
        self._rng.bit_generator.state = state["rng"]
        if state["init_params"] is not None:
            self._init_params = {
                name: {key: value.to(self._device) for key, value in params.items()}
                for name, params in state["init_params"].items()
            }
        self._probe_values = dict(state["probe_values"])
        features = state.get("probe_features")  # absent in checkpoints from before it was kept
        self._probe_features = None if features is None else frozenset(features)
        # checkpoints from before probe records kept only the latest probe values: nothing pending
        self._records = [ProbeRecord.from_state(record) for record in state.get("probe_records", ())]
        self._fau.load_state_dict(state)
        for capture in self._captures.values():
            capture.reset()
