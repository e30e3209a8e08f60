"""The probe metrics as one table: :data:`PROBE_TABLE`, run in order on each probe.

Each :class:`ProbeMetric` names the metrics it produces, what it needs (a monitored module, a probe
feature, the critic's frozen inputs, Hessian-vector products, the activations of first forwards),
the keys it writes for a given :class:`ProbeLayout` (so :meth:`PlasticityMonitor.expected_tags` knows
every tag before the first probe) and a function computing them from a :class:`ProbeContext`. Adding a
metric is its function and its table entry (and its name in :mod:`rlplastic.monitor.config`).

**Order and randomness.** The entries run in table order, which is also the order of the keys in a
probe record. Everything runs inside the monitor's ``torch.random.fork_rng`` with torch seeded from the
probe's seed; the passes that draw random numbers do it in this fixed order, so every value is
reproducible: ``agent.critic_probe`` (augmentation, TD-target noise) before any entry; the Lanczos run
and then the Hutchinson probes of the deflated trace from one generator seeded with the probe's seed
(:func:`hessian`, on HVP probes only); the fitting probe's fresh target network (built once, from the
monitor's seed), its random projection and its minibatches (:func:`fitting`, own seeds); the
recent-data collapse pass, which reseeds torch first (:func:`recent_collapse`); and last the encoder+critic
fitting probe's (:func:`fitting_encoder`, own seeds, apart from the critic-only ones).

What each metric means and how it is measured is in :mod:`rlplastic.monitor.monitor`'s docstring and in
the modules of the building blocks (:mod:`~rlplastic.monitor.activity`, :mod:`~rlplastic.monitor.rank`,
:mod:`~rlplastic.monitor.curvature`, :mod:`~rlplastic.monitor.collapse`, :mod:`~rlplastic.monitor.fitting`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rlplastic.monitor.activity import dormant_ratio, dormant_ratio_over_layers, fau
from rlplastic.monitor.collapse import collapse_geometry, neural_collapse
from rlplastic.monitor.config import (
    COLLAPSE_METRICS,
    CRITIC,
    CRITIC_PENULTIMATE,
    ENCODER,
    FEATURE_TAGS,
    FITTING_METRICS,
    LANCZOS_METRICS,
    RANK_METRICS,
    MonitorConfig,
)
from rlplastic.monitor.curvature import (
    HessianOperator,
    curvature_directions,
    deflated_trace,
    hessian_lanczos,
    last_layer_curvature,
    last_layer_spectrum,
    sharpness,
    spectrum_srank,
)
from rlplastic.monitor.figures import CollapseGeometry, FigureInputs, LayerActivity
from rlplastic.monitor.fitting import (
    detached_copy,
    fit_targets,
    flat_outputs,
    fresh_network_targets,
    random_projection_targets,
)
from rlplastic.monitor.hooks import ActivationCapture
from rlplastic.monitor.rank import (
    effective_rank,
    feature_norm,
    grad_norm,
    param_distance,
    singular_values,
    srank,
    weight_rms,
)
from rlplastic.protocols import CriticProbe, ProbedAgent, Replay

__all__ = [
    "PROBE_TABLE",
    "EncoderCritic",
    "ProbeContext",
    "ProbeLayout",
    "ProbeMetric",
    "expected_keys",
    "first_call",
    "measure",
]

# Offset of the fitting probe's seeds (target function, minibatches) from the monitor's and the probe's seed.
_FIT_STREAM = 0x666974  # "fit"
# ... and of the encoder+critic fitting probe's.
_FIT_ENCODER_STREAM = 0x666974656E63  # "fitenc"
# Offset of the torch seed of the recent-data collapse pass from the probe's seed.
_RECENT_STREAM = 0x726563656E74  # "recent"


@dataclass(frozen=True)
class ProbeLayout:
    """What decides which keys a probe writes, known at attach time.

    Attributes:
        config: the monitor's settings.
        metrics: the enabled metric names (groups expanded).
        modules: the monitored modules (with parameters), by name.
        layers: each module's counted activation layers (modules without any are absent).
        probe_features: the feature keys the agent's probes carry, once a probe has run (``None``
            before: every key of :data:`~rlplastic.protocols.PROBE_FEATURES` is assumed).
    """

    config: MonitorConfig
    metrics: frozenset[str]
    modules: Mapping[str, nn.Module]
    layers: Mapping[str, Mapping[str, nn.Module]]
    probe_features: frozenset[str] | None = None

    def enabled(self, names: tuple[str, ...]) -> list[str]:
        """The enabled ones of ``names``, in their order."""
        return [name for name in names if name in self.metrics]

    def feature_tags(self) -> dict[str, str]:
        """Probe feature → the tag of its metrics, for the features whose module is monitored (and that the
        agent's probes carry, once known)."""
        return {
            key: tag for key, tag in FEATURE_TAGS.items()
            if tag.partition("/")[0] in self.modules and (self.probe_features is None or key in self.probe_features)
        }  # fmt: skip


@dataclass
class ProbeContext:
    """What an entry computes from: one probe.

    Attributes:
        layout: the probe's :class:`ProbeLayout`.
        agent: the agent (``fresh_module``, ``optimizers``, ``critic_probe`` for the recent-data pass).
        replay: the replay buffer (``replay.recent`` for the recent-data pass).
        step: the agent step of the probe.
        seed: the probe's seed (torch is seeded with it; the HVP generator too).
        index: probes run before this one (the HVP cadence).
        device: the monitored modules' device.
        probe: the :class:`~rlplastic.protocols.CriticProbe` on the probe batch.
        activations: module → layer → output of the module's first forward inside ``critic_probe`` (only
            when an entry needs first calls; the dormant entry empties it once read).
        init_params: the parameters ``drift`` is measured from (``None`` without ``drift``).
        figures: the arrays the probe's pictures are drawn from, filled by the entries (``None``: no figures).
        cache: kept by the monitor across probes (the fitting probes' target networks, ``fit_target_net`` and
            ``fit_encoder_target_net``).
    """

    layout: ProbeLayout
    agent: ProbedAgent
    replay: Replay
    step: int
    seed: int
    index: int
    device: torch.device
    probe: CriticProbe
    activations: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    init_params: Mapping[str, Mapping[str, Tensor]] | None = None
    figures: FigureInputs | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> MonitorConfig:
        return self.layout.config

    @property
    def metrics(self) -> frozenset[str]:
        return self.layout.metrics


@dataclass(frozen=True)
class ProbeMetric:
    """One entry of :data:`PROBE_TABLE`.

    Attributes:
        metrics: the metric names it produces (as a config lists them).
        compute: its values on a probe, a subset of its keys (a key whose input the probe lacks is left out).
        keys: the keys it writes for a layout, ``<module>/<metric>`` or ``<module>/<layer>/<metric>``; none
            (every metric off, a needed module not monitored) and it does not run. ``None``:
            ``<module>/<metric>`` for each enabled one of ``metrics``.
        module: the monitored module it needs (the critic's metrics: :data:`~rlplastic.monitor.config.CRITIC`).
        feature: the probe feature it needs (:data:`~rlplastic.protocols.PROBE_FEATURES`); skipped without it.
        critic_inputs: it needs the probe's frozen critic inputs (``CriticProbe.critic_inputs``).
        encoder_inputs: it needs the probe's frozen encoder input (``CriticProbe.encoder_inputs``).
        hvp: it takes Hessian-vector products: runs on every ``curvature_every_probes``-th probe only.
        first_calls: it reads the activations of each module's first forward inside ``critic_probe``.
    """

    metrics: tuple[str, ...]
    compute: Callable[[ProbeContext], dict[str, float]]
    keys: Callable[[ProbeLayout], list[str]] | None = None
    module: str | None = None
    feature: str | None = None
    critic_inputs: bool = False
    encoder_inputs: bool = False
    hvp: bool = False
    first_calls: bool = False

    def tags(self, layout: ProbeLayout) -> list[str]:
        """The keys it writes for ``layout`` (none when it does not run)."""
        if self.module is not None and self.module not in layout.modules:
            return []
        if self.keys is None:
            return [f"{self.module}/{metric}" for metric in layout.enabled(self.metrics)]
        return self.keys(layout)

    def runs_on(self, ctx: ProbeContext) -> bool:
        """Whether it runs on this probe."""
        if not self.tags(ctx.layout):
            return False
        if self.hvp and ctx.index % ctx.config.curvature_every_probes != 0:
            return False  # the HVP metrics dominate a probe's cost
        if self.feature is not None and self.feature not in ctx.probe.features:
            return False
        if self.encoder_inputs and not ctx.probe.encoder_inputs:
            return False
        return not (self.critic_inputs and not ctx.probe.critic_inputs)


# -- activity -----------------------------------------------------------------------------------------


def _dormant_keys(layout: ProbeLayout) -> list[str]:
    if "dormant" not in layout.metrics:
        return []
    keys = []
    for name, layers in layout.layers.items():
        keys += [*(f"{name}/{layer}/dormant" for layer in layers), f"{name}/dormant"]
    return keys


def dormant(ctx: ProbeContext) -> dict[str, float]:
    """τ-dormant ratio per layer and unit-weighted per module; the critic's from its frozen-loss forward."""
    layers_of, tau, out = ctx.layout.layers, ctx.config.dormant_tau, {}
    activations, ctx.activations = ctx.activations, {}  # large (conv maps): dropped once read
    if CRITIC in layers_of:
        # the critic's activations from the frozen loss forward: both Q heads, batch actions
        capture = ActivationCapture(layers_of[CRITIC], count=False, keep=True)
        with capture, capture.recording(), torch.no_grad():
            ctx.probe.loss_fn()
        activations[CRITIC] = capture.activations
    for name in (name for name in layers_of if name in activations):  # layer order of the modules
        acts = activations[name]
        layers = [layer for layer in layers_of[name] if layer in acts]
        if not layers:
            continue
        for layer in layers:
            out[f"{name}/{layer}/dormant"] = float(dormant_ratio(acts[layer], tau))
            if ctx.figures is not None:
                active = float(fau(acts[layer]))
                ctx.figures.activity.append(LayerActivity(name, layer, active, out[f"{name}/{layer}/dormant"]))
        out[f"{name}/dormant"] = float(dormant_ratio_over_layers([acts[layer] for layer in layers], tau))
    return out


# -- features and parameters --------------------------------------------------------------------------

_FEATURE_METRICS = (*RANK_METRICS, "feature_norm")
_PARAMETER_METRICS = ("weight_norm", "drift")


def _feature_keys(layout: ProbeLayout) -> list[str]:
    metrics = layout.enabled(_FEATURE_METRICS)
    return [f"{tag}/{metric}" for tag in layout.feature_tags().values() for metric in metrics]


def features(ctx: ProbeContext) -> dict[str, float]:
    """``srank``, ``erank`` and ``feature_norm`` of each probe feature whose module is monitored."""
    metrics, cfg, figures, out = ctx.metrics, ctx.config, ctx.figures, {}
    for key, tag in ctx.layout.feature_tags().items():
        if key not in ctx.probe.features:
            continue
        phi = ctx.probe.features[key]
        if metrics & set(RANK_METRICS):
            sv = singular_values(phi, center=cfg.center_features)
            rank = srank(sv, cfg.srank_delta)
            if "srank" in metrics:
                out[f"{tag}/srank"] = float(rank)
            if "erank" in metrics:
                out[f"{tag}/erank"] = float(effective_rank(sv))
            if figures is not None and key == CRITIC_PENULTIMATE:
                figures.critic_singular_values, figures.critic_srank = sv.cpu().numpy(), int(rank)
        if "feature_norm" in metrics:
            out[f"{tag}/feature_norm"] = float(feature_norm(phi))
    return out


def _parameter_keys(layout: ProbeLayout) -> list[str]:
    metrics = layout.enabled(_PARAMETER_METRICS)
    return [f"{name}/{metric}" for name in layout.modules for metric in metrics]


def parameters(ctx: ProbeContext) -> dict[str, float]:
    """``weight_norm`` (RMS of all parameter elements) and ``drift`` (L2 distance from the initial ones)."""
    metrics, out = ctx.metrics, {}
    for name, module in ctx.layout.modules.items():
        if "weight_norm" in metrics:
            out[f"{name}/weight_norm"] = float(weight_rms(module))
        if "drift" in metrics and ctx.init_params is not None:
            out[f"{name}/drift"] = float(param_distance(module, ctx.init_params[name]))
    return out


# -- the critic's loss: gradient and curvature ---------------------------------------------------------


def critic_grad_norm(ctx: ProbeContext) -> dict[str, float]:
    """``critic/grad_norm``: the gradient norm of the frozen critic loss w.r.t. the critic parameters."""
    with torch.enable_grad():
        grads = torch.autograd.grad(ctx.probe.loss_fn(), ctx.probe.params, allow_unused=True)
    return {f"{CRITIC}/grad_norm": float(grad_norm(grads))}


def hessian(ctx: ProbeContext) -> dict[str, float]:
    """``hessian_max/min/directions`` from one Lanczos run; ``hessian_trace(_se)`` deflated by its basis.

    One generator, seeded with the probe's seed, draws the Lanczos start vector and then the Hutchinson probes.
    """
    metrics, cfg, probe, out = ctx.metrics, ctx.config, ctx.probe, {}
    generator = torch.Generator(device=probe.params[0].device).manual_seed(ctx.seed)
    with torch.enable_grad():
        operator = HessianOperator(probe.loss_fn, probe.params)
        top_k = cfg.hessian_directions_k if "hessian_directions" in metrics else 1
        lanczos = hessian_lanczos(operator, cfg.hessian_iters, cfg.hessian_tol, top_k, generator)
        out["hessian_max"], out["hessian_min"] = lanczos.lambda_max, lanczos.lambda_min
        out["hessian_directions"] = curvature_directions(
            lanczos.ritz_values, cfg.hessian_directions_k, cfg.hessian_directions_eps
        )
        if metrics & {"hessian_trace", "hessian_trace_se"}:
            trace, se = deflated_trace(operator, cfg.hutchinson_probes, lanczos.basis, lanczos.basis_trace, generator)
            out["hessian_trace"], out["hessian_trace_se"] = trace, se
    return {f"{CRITIC}/{metric}": float(value) for metric, value in out.items() if metric in metrics}


def critic_sharpness(ctx: ProbeContext) -> dict[str, float]:
    """``critic/sharpness``: S_ρ of the frozen critic loss."""
    with torch.enable_grad():
        value = sharpness(ctx.probe.loss_fn, ctx.probe.params, ctx.config.sharpness_rho)
    return {f"{CRITIC}/sharpness": float(value)}


def last_layer(ctx: ProbeContext) -> dict[str, float]:
    """``last_layer_lambda_max`` and ``last_layer_srank`` of Q1's exact last-layer Hessian (and its spectrum
    for the figures)."""
    penultimate, delta = ctx.probe.features[CRITIC_PENULTIMATE], ctx.config.srank_delta
    curvature = last_layer_curvature(penultimate, with_bias=True, delta=delta)
    if ctx.figures is not None:
        # the spectrum last_layer_curvature summarises: λ = 2σ²/B of [φ, 1]
        eig = last_layer_spectrum(penultimate, with_bias=True)
        ctx.figures.hessian_eigenvalues = eig.cpu().numpy()
        ctx.figures.hessian_srank = int(spectrum_srank(eig, delta))
    return {
        f"{CRITIC}/last_layer_lambda_max": float(curvature["lambda_max"]),
        f"{CRITIC}/last_layer_srank": float(curvature["srank"]),
    }


# -- the critic's features: collapse -------------------------------------------------------------------


def collapse(ctx: ProbeContext) -> dict[str, float]:
    """Neural collapse of the critic penultimate features, TD-target quantile bins as classes (and its
    geometry for the figures)."""
    probe, bins = ctx.probe, ctx.config.nc_bins
    penultimate = probe.features[CRITIC_PENULTIMATE]
    values = neural_collapse(penultimate, probe.td_target, probe.head_weight, probe.head_bias, num_bins=bins)
    if ctx.figures is not None:
        geometry = collapse_geometry(penultimate, probe.td_target, probe.head_weight, num_bins=bins)
        ctx.figures.collapse = CollapseGeometry(**{key: value.cpu().numpy() for key, value in geometry.items()})
    return {f"{CRITIC}/{k}": float(v) for k, v in values.items() if k in ctx.metrics}


def recent_collapse(ctx: ProbeContext) -> dict[str, float]:
    """``critic/<metric>_recent``: neural collapse on the newest transitions of the replay (own torch seed)."""
    cfg, metrics = ctx.config, ctx.layout.enabled(COLLAPSE_METRICS)
    batch = ctx.replay.recent(cfg.probe_batch_size, ctx.device)
    # the augmentation and TD-target noise of this pass do not depend on what the other metrics drew
    seed_torch((ctx.seed + _RECENT_STREAM) % 2**63, ctx.device)
    probe = ctx.agent.critic_probe(batch, ctx.step)
    penultimate = probe.features.get(CRITIC_PENULTIMATE)
    if penultimate is None or penultimate.shape[0] < cfg.nc_bins:
        return {f"{CRITIC}/{metric}_recent": float("nan") for metric in metrics}
    values = neural_collapse(penultimate, probe.td_target, probe.head_weight, probe.head_bias, num_bins=cfg.nc_bins)
    return {f"{CRITIC}/{metric}_recent": float(values[metric]) for metric in metrics}


def _recent_keys(layout: ProbeLayout) -> list[str]:
    if not layout.config.collapse_recent:
        return []
    return [f"{CRITIC}/{metric}_recent" for metric in layout.enabled(COLLAPSE_METRICS)]


# -- target fitting ------------------------------------------------------------------------------------


def fitting(ctx: ProbeContext) -> dict[str, float]:
    """``critic/fit_loss`` and ``critic/fit_auc``: a copy of the critic fitted to fresh targets."""
    critic = ctx.layout.modules[CRITIC]

    def fresh_critic() -> nn.Module:
        agent = ctx.agent
        return agent.fresh_module(CRITIC) if hasattr(agent, "fresh_module") else _reinitialised(critic)

    return _fit(ctx, critic, ctx.probe.critic_inputs, fresh_critic, "fit_target_net", _FIT_STREAM, "")


def fitting_encoder(ctx: ProbeContext) -> dict[str, float]:
    """``critic/fit_loss_encoder`` and ``critic/fit_auc_encoder``: a copy of the encoder and the critic, end to
    end on the frozen augmented observations and actions, fitted to fresh targets (own seeds)."""
    encoder, critic, num_obs = ctx.layout.modules[ENCODER], ctx.layout.modules[CRITIC], len(ctx.probe.encoder_inputs)

    def fresh_encoder_critic() -> nn.Module:
        # built in the agent's construction order: encoder, then critic
        agent = ctx.agent
        if hasattr(agent, "fresh_module"):
            return EncoderCritic(agent.fresh_module(ENCODER), agent.fresh_module(CRITIC), num_obs)
        return EncoderCritic(_reinitialised(encoder), _reinitialised(critic), num_obs)

    inputs = (*ctx.probe.encoder_inputs, *ctx.probe.critic_inputs[1:])  # observations, actions
    network = EncoderCritic(encoder, critic, num_obs)
    return _fit(ctx, network, inputs, fresh_encoder_critic, "fit_encoder_target_net", _FIT_ENCODER_STREAM, "_encoder")


class EncoderCritic(nn.Module):
    """``critic(encoder(*obs), *rest)``: the critic's forward from the encoder's input (the first ``num_inputs``
    arguments), for the encoder+critic fitting probe; holds the two modules themselves (not copies)."""

    def __init__(self, encoder: nn.Module, critic: nn.Module, num_inputs: int = 1) -> None:
        super().__init__()
        self.encoder, self.critic, self.num_inputs = encoder, critic, num_inputs

    def forward(self, *inputs: Tensor) -> Any:
        return self.critic(self.encoder(*inputs[: self.num_inputs]), *inputs[self.num_inputs :])


def _fit(
    ctx: ProbeContext,
    network: nn.Module,
    inputs: tuple[Tensor, ...],
    build_fresh: Callable[[], nn.Module],
    cache_key: str,
    stream: int,
    suffix: str,
) -> dict[str, float]:
    """``critic/<metric><suffix>`` of the enabled fitting metrics: a copy of ``network`` fitted on ``inputs``."""
    cfg, device = ctx.config, inputs[0].device
    # The target *function* is the same at every probe of a run (drawn from the monitor seed alone), so
    # the probes compare like with like; the fresh network is built once and kept (rebuilt identically
    # after a resume). Minibatches draw from the probe's own seed.
    target_seed = (cfg.seed + stream) % 2**63
    if cfg.fit_target == "fresh_network":
        if ctx.cache.get(cache_key) is None:
            seed_torch(target_seed, ctx.device)
            ctx.cache[cache_key] = detached_copy(build_fresh()).requires_grad_(False)
        targets = fresh_network_targets(ctx.cache[cache_key], inputs)
    else:
        with torch.no_grad():
            num_outputs = flat_outputs(network, inputs).shape[1]
        projection = torch.Generator(device=device).manual_seed(target_seed)
        targets = random_projection_targets(inputs, num_outputs, projection)
    generator = torch.Generator(device=device).manual_seed((ctx.seed + stream) % 2**63)
    result = fit_targets(network, inputs, targets, cfg.fit_steps, _fit_lr(ctx), cfg.fit_batch, generator)
    out = {"fit_loss": result.loss, "fit_auc": result.auc}
    return {f"{CRITIC}/{metric}{suffix}": value for metric, value in out.items() if metric in ctx.metrics}


def _fit_encoder_keys(layout: ProbeLayout) -> list[str]:
    if not layout.config.fit_encoder or ENCODER not in layout.modules:
        return []  # the states-mode identity encoder is not monitored: the fit would be the critic-only one
    return [f"{CRITIC}/{metric}_encoder" for metric in layout.enabled(FITTING_METRICS)]


def _fit_lr(ctx: ProbeContext) -> float:
    """``fit_lr``, or else the learning rate of the agent's critic optimizer."""
    if ctx.config.fit_lr is not None:
        return float(ctx.config.fit_lr)
    optimizers = ctx.agent.optimizers() if hasattr(ctx.agent, "optimizers") else {}
    if CRITIC not in optimizers:
        raise ValueError("monitor.fit_lr=null needs the agent's critic optimizer: set monitor.fit_lr")
    return float(optimizers[CRITIC].param_groups[0]["lr"])


def _reinitialised(module: nn.Module) -> nn.Module:
    """A hook-free copy of ``module`` with every submodule's ``reset_parameters`` applied (its default init)."""
    fresh = detached_copy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


# -- the table -----------------------------------------------------------------------------------------

_LAST_LAYER_METRICS = ("last_layer_lambda_max", "last_layer_srank")

#: Every probe metric, in the order they are computed (and written).
PROBE_TABLE: tuple[ProbeMetric, ...] = (
    ProbeMetric(("dormant",), dormant, _dormant_keys, first_calls=True),
    ProbeMetric(_FEATURE_METRICS, features, _feature_keys),
    ProbeMetric(_PARAMETER_METRICS, parameters, _parameter_keys),
    ProbeMetric(("grad_norm",), critic_grad_norm, module=CRITIC),
    ProbeMetric(LANCZOS_METRICS, hessian, module=CRITIC, hvp=True),
    ProbeMetric(("sharpness",), critic_sharpness, module=CRITIC, hvp=True),
    ProbeMetric(_LAST_LAYER_METRICS, last_layer, module=CRITIC, feature=CRITIC_PENULTIMATE),
    ProbeMetric(COLLAPSE_METRICS, collapse, module=CRITIC, feature=CRITIC_PENULTIMATE),
    ProbeMetric(FITTING_METRICS, fitting, module=CRITIC, critic_inputs=True),
    ProbeMetric(COLLAPSE_METRICS, recent_collapse, _recent_keys, module=CRITIC),
    # last: its first probe reseeds torch to build the target network, and nothing after it draws
    ProbeMetric(
        FITTING_METRICS, fitting_encoder, _fit_encoder_keys, module=CRITIC, critic_inputs=True, encoder_inputs=True
    ),
)


def expected_keys(layout: ProbeLayout) -> list[str]:
    """Every key a probe may write for ``layout``, in table order (HVP metrics included)."""
    return [key for entry in PROBE_TABLE for key in entry.tags(layout)]


def needs_first_calls(layout: ProbeLayout) -> bool:
    """Whether an entry that runs reads the activations of first forwards (capture them around ``critic_probe``)."""
    return any(entry.first_calls and entry.tags(layout) for entry in PROBE_TABLE)


def measure(ctx: ProbeContext) -> dict[str, float]:
    """Run every entry of :data:`PROBE_TABLE` that runs on this probe, in order; their values."""
    out: dict[str, float] = {}
    for entry in PROBE_TABLE:
        if entry.runs_on(ctx):
            out.update(entry.compute(ctx))
    return out


@contextmanager
def first_call(module: nn.Module, layers: Mapping[str, nn.Module]) -> Iterator[ActivationCapture]:
    """Keep the activation outputs of ``module``'s first forward call made inside the block.

    The module's own forward hook runs after those of its activation layers, so it ends the recording
    once the first call is complete; later calls (e.g. the next-state forward) leave them alone.
    """
    with ActivationCapture(layers, count=False, keep=True) as capture, ExitStack() as recording:
        recording.enter_context(capture.recording())
        handle = module.register_forward_hook(lambda *_: recording.close())
        try:
            yield capture
        finally:
            handle.remove()


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed torch's CPU generator (and ``device``'s, when it is a GPU) with ``seed``."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
