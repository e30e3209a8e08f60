"""Static replay-ratio controller: exact accounting for any positive ratio, phase, state round trip."""

from __future__ import annotations

import pytest

from rlplastic.rr import StaticRR, make_rr_controller


def issued(ratio, steps: int) -> list[int]:
    controller = StaticRR(ratio)
    return [controller.updates_due(step) for step in range(steps)]


@pytest.mark.parametrize(("ratio", "steps", "total"), [(0.5, 1000, 500), (2.5, 1000, 2500), (1, 7, 7), (2, 10, 20)])
def test_accumulator_is_exact(ratio, steps, total):
    assert sum(issued(ratio, steps)) == total


def test_half_updates_on_the_first_step_of_every_pair_like_drqv2():
    # DrQ-v2 updates when step % 2 == 0, counting from the first post-seed step (an even step).
    assert issued(0.5, 6) == [1, 0, 1, 0, 1, 0]


def test_fractional_ratios_stay_exact_over_long_horizons():
    assert sum(issued(0.1, 1_000_000)) == 100_000  # a float accumulator drifts here
    assert sum(issued("1/3", 300_000)) == 100_000
    pattern = issued(2.5, 4)
    assert pattern == [3, 2, 3, 2]


def test_state_round_trip_continues_the_same_schedule():
    a = StaticRR(0.3)
    for s in range(7):
        a.updates_due(s)
    b = StaticRR(0.3)
    b.load_state_dict(a.state_dict())
    assert [a.updates_due(s) for s in range(7, 50)] == [b.updates_due(s) for s in range(7, 50)]
    assert a.total_updates == b.total_updates == 15  # ceil(50 * 0.3)


@pytest.mark.parametrize("bad", [0, -0.5, "fast"])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match=f"rr.ratio={bad!r}"):
        StaticRR(bad)


def test_unknown_controller_name():
    with pytest.raises(ValueError, match="unknown rr controller 'magic'.*static"):
        make_rr_controller("magic")
