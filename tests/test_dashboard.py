"""The custom-scalars dashboard: one chart per tag, in legible categories, on a real monitor's tag list."""

from __future__ import annotations

import re

import pytest

from rlplastic.dashboard import build_layout, write_layout
from rlplastic.monitor import make_monitor
from tests.factories import tiny_agent
from tests.test_monitor_integration import compose_monitor

TRAINER_TAGS = ["rr/value", "rr/updates", "events/rr_switch", "events/redo", "events/redo/recycled",
                "train/critic_loss", "eval/episode_reward", "time/fps"]  # fmt: skip
CATEGORIES = [
    "Plasticity · critic", "Plasticity · encoder", "Plasticity · actor",
    "Plasticity · critic · layers", "Plasticity · encoder · layers", "Plasticity · actor · layers",
    "Replay ratio", "Events", "Train", "Eval", "Time",
]  # fmt: skip


@pytest.fixture(scope="module")
def full_monitor():
    """The ``monitor=full`` monitor attached to a tiny pixel DrQ-v2 agent."""
    monitor = make_monitor(**compose_monitor("full"))
    monitor.attach(tiny_agent("pixels"))
    return monitor


def charts(layout: dict) -> list[tuple[str, str, str]]:
    """``(category, chart title, regex)`` of every chart; each chart must hold exactly one regex."""
    out = []
    for category, category_charts in layout.items():
        for title, (kind, regexes) in category_charts.items():
            assert kind == "Multiline" and len(regexes) == 1, (category, title)
            out.append((category, title, regexes[0]))
    return out


def test_every_tag_has_a_chart_of_its_own(full_monitor):
    tags = full_monitor.expected_tags() + TRAINER_TAGS
    assert len(tags) == len(set(tags)) > 60
    layout = build_layout(tags)
    assert list(layout) == CATEGORIES
    matched = []
    for category, title, regex in charts(layout):
        hits = [tag for tag in tags if re.search(regex, tag)]
        assert len(hits) == 1, (category, title, hits)
        matched += hits
    assert sorted(matched) == sorted(tags)  # every tag in exactly one chart
    assert build_layout(tags + tags[::-1]) == layout  # repeats change nothing


def test_charts_read_in_metric_and_layer_order(full_monitor):
    layout = build_layout(full_monitor.expected_tags() + TRAINER_TAGS)
    critic = list(layout["Plasticity · critic"])
    assert critic[:8] == ["fau", "dormant", "srank", "trunk/srank", "erank", "trunk/erank", "weight_norm", "drift"]
    assert [critic.index(m) for m in ("grad_norm", "last_layer_lambda_max", "nc1", "nrc1")] == sorted(
        critic.index(m) for m in ("grad_norm", "last_layer_lambda_max", "nc1", "nrc1")
    )
    assert list(layout["Plasticity · actor"]) == ["fau", "dormant", "trunk/srank", "trunk/erank", "weight_norm",
                                                  "drift", "trunk/feature_norm"]  # fmt: skip
    layers = ["Q1.1", "Q1.3", "Q2.1", "Q2.3"]
    by_metric = [f"{layer}/{metric}" for metric in ("fau", "dormant") for layer in layers]
    assert list(layout["Plasticity · critic · layers"]) == by_metric
    assert layout["Plasticity · critic · layers"]["Q1.1/fau"] == ["Multiline", [r"^plasticity/critic/Q1\.1/fau$"]]
    assert layout["Replay ratio"] == {"value": ["Multiline", ["^rr/value$"]],
                                      "updates": ["Multiline", ["^rr/updates$"]]}  # fmt: skip
    assert list(layout["Events"]) == ["rr_switch", "redo", "redo/recycled"]
    assert list(layout["Time"]) == ["probe_s", "figures_s", "fps"]


def test_unknown_tags_still_get_a_chart():
    layout = build_layout(["plasticity/critic/new_metric", "plasticity/critic/fau", "loss", "rr/other", "rr/value",
                           "plasticity/policy/fau", "plasticity/critic/Q1.1/fau"])  # fmt: skip
    assert list(layout) == ["Plasticity · critic", "Plasticity · policy", "Plasticity · critic · layers",
                            "Replay ratio", "Other"]  # fmt: skip
    assert list(layout["Plasticity · critic"]) == ["fau", "new_metric"]  # known metrics first
    assert list(layout["Replay ratio"]) == ["value", "other"]
    assert layout["Other"] == {"loss": ["Multiline", ["^loss$"]]}
    assert not re.search(layout["Plasticity · critic · layers"]["Q1.1/fau"][1][0], "plasticity/critic/Q1x1/fau")


def test_written_layout_collapses_the_per_layer_categories(full_monitor, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    write_layout(writer, [*full_monitor.expected_tags(), *TRAINER_TAGS])
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    proto = events.Tensors("custom_scalars__config__")[0].tensor_proto
    written = layout_pb2.Layout.FromString(proto.string_val[0])
    expected = build_layout(full_monitor.expected_tags() + TRAINER_TAGS)
    assert [c.title for c in written.category] == list(expected)
    assert [c.title for c in written.category if c.closed] == [c for c in CATEGORIES if c.endswith(" · layers")]
    for category in written.category:
        assert {chart.title: ["Multiline", list(chart.multiline.tag)] for chart in category.chart} == expected[
            category.title
        ]
