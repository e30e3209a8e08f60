"""Triggers: schedules (every N frames, listed frames), thresholds with cool-down, state, bad input."""

from __future__ import annotations

import math

import pytest

from rlplastic.interventions.triggers import ScheduleTrigger, ThresholdTrigger, make_trigger
from tests.factories import checkpoint_round_trip


def fired(trigger, frames, values=None, signal="critic/dormant") -> list[int]:
    """Frames at which ``trigger`` fires when asked once at each frame (with ``values`` as the signal)."""
    out = []
    for i, frame in enumerate(frames):
        signals = {} if values is None else {signal: values[i], "critic/fau": 0.5}
        if trigger.should_fire(signals, frame):
            out.append(frame)
    return out


# -- schedule -----------------------------------------------------------------------------------


def test_every_n_frames_on_exact_decision_points():
    trigger = ScheduleTrigger(every_frames=1000)
    assert fired(trigger, range(0, 5001, 500)) == [1000, 2000, 3000, 4000, 5000]  # not at frame 0


def test_every_n_frames_fires_at_the_first_call_past_each_scheduled_frame():
    trigger = ScheduleTrigger(every_frames=5000)
    assert fired(trigger, range(0, 14001, 2000)) == [6000, 10000]
    assert trigger.next_frame() == 15000
    # a long gap covers several scheduled frames with one firing; never twice for one call
    assert fired(trigger, [100_000, 100_000, 104_000, 105_000]) == [100_000, 105_000]


def test_list_of_frames():
    trigger = ScheduleTrigger(at_frames=[1000, 0, 300, 301])
    assert fired(trigger, range(0, 1500, 200)) == [0, 400, 1000]  # 300 and 301 are both covered at 400
    exact = ScheduleTrigger(at_frames=[300, 301])
    assert fired(exact, [300, 300, 301, 302]) == [300, 301]
    assert trigger.next_frame() is None
    assert fired(trigger, [10**9]) == []


def test_every_and_list_combine():
    trigger = ScheduleTrigger(every_frames=1000, at_frames=[250])
    assert fired(trigger, range(0, 3001, 250)) == [250, 1000, 2000, 3000]


def test_schedule_state_round_trip_continues_the_same_decisions():
    frames = list(range(0, 40_000, 1700))
    reference = fired(ScheduleTrigger(every_frames=3000, at_frames=[100, 7000]), frames)
    first = ScheduleTrigger(every_frames=3000, at_frames=[100, 7000])
    head = fired(first, frames[:9])
    resumed = ScheduleTrigger(every_frames=3000, at_frames=[100, 7000])
    resumed.load_state_dict(checkpoint_round_trip(first.state_dict()))
    assert head + fired(resumed, frames[9:]) == reference


# -- threshold ----------------------------------------------------------------------------------


def test_threshold_above_with_cooldown():
    trigger = ThresholdTrigger("critic/dormant", 0.2, cooldown_frames=3000)
    frames = [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
    values = [0.1, 0.3, 0.4, 0.5, 0.25, 0.1, 0.15, 0.2, 0.21, 0.9]
    # 1000: crossing; 2000-3000 cooling; 4000: still above, cool-down over; 7000: 0.2 is not > 0.2;
    # 8000: 4000 + 3000 <= 8000, fires; 9000: cooling again
    assert fired(trigger, frames, values) == [1000, 4000, 8000]
    assert trigger.last_value == 0.9


def test_threshold_below_without_cooldown_fires_every_time_the_condition_holds():
    trigger = ThresholdTrigger("critic/srank", 10.0, above=False)
    assert fired(trigger, [0, 10, 20, 30, 40], [12, 9, 8, 10, 3], signal="critic/srank") == [10, 20, 40]


def test_threshold_missing_or_nan_signal_does_not_fire():
    trigger = ThresholdTrigger("critic/dormant", 0.2, known_signals=["critic/dormant", "critic/fau"])
    assert not trigger.should_fire({}, 0)
    assert not trigger.should_fire({"critic/fau": 0.9}, 10)  # known but not measured yet
    assert not trigger.should_fire({"critic/dormant": math.nan}, 20)
    assert trigger.should_fire({"critic/dormant": 0.3}, 30)


def test_threshold_state_round_trip_continues_the_same_decisions():
    frames = list(range(0, 30_000, 1000))
    values = [0.1 + 0.4 * ((i // 3) % 2) for i in range(len(frames))]  # 3 low, 3 high, ...
    reference = fired(ThresholdTrigger("critic/dormant", 0.2, cooldown_frames=4000), frames, values)
    assert len(reference) >= 3
    first = ThresholdTrigger("critic/dormant", 0.2, cooldown_frames=4000)
    head = fired(first, frames[:11], values[:11])
    assert head and head[-1] > 11_000 - 4000  # the cool-down is still running at the checkpoint
    resumed = ThresholdTrigger("critic/dormant", 0.2, cooldown_frames=4000)
    resumed.load_state_dict(checkpoint_round_trip(first.state_dict()))
    assert head + fired(resumed, frames[11:], values[11:]) == reference


def test_unknown_signal_name():
    with pytest.raises(
        ValueError, match=r"unknown signal 'critic/dormnt'.*known signals are \['critic/dormant', 'critic/fau'\]"
    ):
        ThresholdTrigger("critic/dormnt", 0.2, known_signals={"critic/fau", "critic/dormant"})
    lazy = ThresholdTrigger("critic/dormnt", 0.2)
    assert not lazy.should_fire({}, 0)  # nothing measured yet: checked later
    with pytest.raises(ValueError, match=r"unknown signal 'critic/dormnt'.*\['critic/dormant'\]"):
        lazy.should_fire({"critic/dormant": 0.5}, 10)


# -- config and bad input -----------------------------------------------------------------------


def test_make_trigger():
    schedule = make_trigger(kind="schedule", every_frames=100, at_frames=(5,))
    assert isinstance(schedule, ScheduleTrigger) and schedule.at_frames == (5,)
    threshold = make_trigger(kind="threshold", signal="critic/dormant", threshold=0.2, above=True, cooldown_frames=10)
    assert isinstance(threshold, ThresholdTrigger) and threshold.cooldown_frames == 10
    with pytest.raises(ValueError, match="unknown signal 'x'"):
        make_trigger(kind="threshold", signal="x", threshold=1.0, known_signals=["critic/dormant"])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"kind": "sometimes"}, r"unknown trigger 'sometimes': allowed are \['schedule', 'threshold'\]"),
        ({}, "unknown trigger None"),
        ({"kind": "schedule", "every": 5}, r"unknown trigger.schedule key\(s\) \['every'\]: allowed are"),
        ({"kind": "schedule"}, "needs every_frames or at_frames"),
        ({"kind": "schedule", "every_frames": 0}, "every_frames=0 must be an int > 0"),
        ({"kind": "schedule", "at_frames": [10, -1]}, r"at_frames=\[10, -1\] must be a list of ints >= 0"),
        ({"kind": "threshold", "signal": "critic/dormant", "threshold": math.inf}, "threshold=inf must be a finite"),
        ({"kind": "threshold", "signal": "a", "threshold": 1, "cooldown_frames": -5}, "cooldown_frames=-5 must be"),
        ({"kind": "threshold", "signal": "", "threshold": 1}, "signal='' must be a signal name"),
    ],
)
def test_bad_config(cfg, message):
    with pytest.raises(ValueError, match=message):
        make_trigger(**cfg)


def test_bad_frame():
    with pytest.raises(ValueError, match="frame=-1 must be an int >= 0"):
        ScheduleTrigger(every_frames=10).should_fire({}, -1)
    with pytest.raises(ValueError, match=r"checkpoint holds a 'threshold' trigger, this run uses a 'schedule'"):
        ScheduleTrigger(every_frames=10).load_state_dict(ThresholdTrigger("a", 1.0).state_dict())
