"""The TensorBoard Custom Scalars dashboard of a run: one chart per scalar tag, grouped by subject.

TensorBoard's default Scalars tab sorts tags alphabetically by prefix, which scatters a module's
plasticity metrics and drowns them in per-layer series. This layout puts **each tag in a chart of
its own** (a chart's regex is ``^<escaped tag>$``, so it matches exactly one scalar; with several runs
selected, each run keeps its own colour in every chart), in categories that read top to bottom:

1. ``Plasticity · critic``, ``· encoder``, ``· actor``: module-level metrics in the monitor's metric
   order (FAU, dormant, srank/erank, norms and drift, curvature, collapse); feature sub-parts such
   as ``critic/trunk/srank`` sit next to the module's own ``srank``.
2. ``Plasticity · <module> · layers``: the per-layer breakdown (``<layer>/fau``, ``<layer>/dormant``),
   collapsed when the dashboard opens.
3. ``Replay ratio`` (``rr/value``, then ``rr/updates``), ``Events`` (each ``events/...`` series),
   ``Train``, ``Eval``, ``Time``, and ``Other`` for anything else.

:func:`build_layout` is pure (tags in, layout dict out, in ``SummaryWriter.add_custom_scalars``'s
format); :func:`write_layout` writes it with the per-layer categories collapsed, which the dict
format cannot express.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rlplastic.monitor.config import ACTOR, CRITIC, ENCODER, METRICS, MODULES

__all__ = ["LAYERS_SUFFIX", "build_layout", "layout_summary", "write_layout"]

#: Title suffix of the per-layer categories (collapsed by :func:`write_layout`).
LAYERS_SUFFIX = " · layers"

# module categories in reading order: the critic carries most of the metrics (curvature, collapse)
_MODULE_ORDER = (CRITIC, ENCODER, ACTOR)
# metrics measured per ReLU layer: plasticity/<module>/<layer>/<metric>
_LAYER_METRICS = ("fau", "dormant")
# categories of the other tag families (first tag component → title), in display order
_FAMILIES = {"rr": "Replay ratio", "events": "Events", "train": "Train", "eval": "Eval", "time": "Time"}
_OTHER = "Other"
# charts that lead their category, in this order
_FIRST = {"rr": ("value", "updates")}


def build_layout(tags: Iterable[str]) -> dict[str, dict[str, list]]:
    """The custom-scalars layout for ``tags``: every tag in exactly one chart, every chart one tag.

    Args:
        tags: scalar tags as logged (duplicates are ignored; their order breaks ties, e.g. layers
            stay in forward order).

    Returns:
        ``{category: {chart title: ["Multiline", ["^<escaped tag>$"]]}}`` in display order, for
        ``SummaryWriter.add_custom_scalars`` or :func:`write_layout`. Chart titles are the tag
        without its category's prefix (``plasticity/critic/Q1.1/fau`` → ``Q1.1/fau``).
    """
    placed: dict[str, list[tuple[tuple, str, str]]] = {}
    for index, tag in enumerate(dict.fromkeys(tags)):
        category, rank, title = _place(tag)
        placed.setdefault(category, []).append(((*rank, index), title, tag))
    layout = {}
    for category in sorted(placed, key=_category_order):
        charts = sorted(placed[category])
        layout[category] = {title: ["Multiline", [f"^{re.escape(tag)}$"]] for _, title, tag in charts}
    return layout


def layout_summary(layout: dict[str, dict[str, list]]) -> Any:
    """``layout`` as the TensorBoard ``Summary`` that ``add_custom_scalars`` writes, per-layer categories closed.

    Same encoding as ``torch.utils.tensorboard.summary.custom_scalars`` (Multiline charts only), plus
    ``Category.closed`` for titles ending in :data:`LAYERS_SUFFIX`.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = []
    for title, charts in layout.items():
        protos = []
        for chart_title, (kind, regexes) in charts.items():
            if kind != "Multiline":
                raise ValueError(f"chart {chart_title!r} is {kind!r}: only Multiline charts are written")
            protos.append(layout_pb2.Chart(title=chart_title, multiline=layout_pb2.MultilineChartContent(tag=regexes)))
        categories.append(layout_pb2.Category(title=title, chart=protos, closed=title.endswith(LAYERS_SUFFIX)))
    serialized = layout_pb2.Layout(category=categories).SerializeToString()
    tensor = TensorProto(dtype="DT_STRING", string_val=[serialized], tensor_shape=TensorShapeProto())
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=metadata)])


def write_layout(tb_writer: Any, tags: Iterable[str], step: int = 0) -> None:
    """Write :func:`build_layout` of ``tags`` to a ``torch.utils.tensorboard.SummaryWriter`` at ``step``.

    Like ``SummaryWriter.add_custom_scalars`` (which it replaces: it cannot collapse categories). A run
    may write several layouts as its tags appear; TensorBoard shows the one with the highest step.
    """
    tb_writer._get_file_writer().add_summary(layout_summary(build_layout(tags)), global_step=step)


def _place(tag: str) -> tuple[str, tuple, str]:
    """``(category, sort rank, chart title)`` of one tag."""
    parts = tag.split("/")
    if parts[0] == "plasticity" and len(parts) >= 3:
        module, rest, metric = parts[1], parts[2:], parts[-1]
        rank = (_metric_rank(metric), len(rest))  # a module's own series before its parts' (trunk/...)
        if len(rest) >= 2 and metric in _LAYER_METRICS:
            return f"Plasticity · {module}{LAYERS_SUFFIX}", rank, "/".join(rest)
        return f"Plasticity · {module}", rank, "/".join(rest)
    if parts[0] in _FAMILIES and len(parts) >= 2:
        title = "/".join(parts[1:])
        first = _FIRST.get(parts[0], ())
        return _FAMILIES[parts[0]], (first.index(title) if title in first else len(first), 0), title
    return _OTHER, (0, 0), tag


def _metric_rank(metric: str) -> int:
    """Position in the monitor's metric order; unknown metrics (new ones) come after, by first appearance."""
    return METRICS.index(metric) if metric in METRICS else len(METRICS)


def _module_rank(module: str) -> tuple[int, str]:
    order = (*_MODULE_ORDER, *(m for m in MODULES if m not in _MODULE_ORDER))
    return (order.index(module), "") if module in order else (len(order), module)


def _category_order(category: str) -> tuple:
    """Module categories, then per-layer ones (same module order), then the families, then Other."""
    if category.startswith("Plasticity · "):
        name = category.removeprefix("Plasticity · ")
        layers = name.endswith(LAYERS_SUFFIX)
        return (int(layers), *_module_rank(name.removesuffix(LAYERS_SUFFIX) if layers else name))
    families = list(_FAMILIES.values())
    position = families.index(category) if category in families else len(families)
    return (2 + position, 0, "")
