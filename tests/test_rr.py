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
    allowed = r"allowed are \['static', 'adaptive', 'adaptive_ref', 'ladder'\]"
    with pytest.raises(ValueError, match=rf"unknown rr 'magic': {allowed}"):
        make_rr_controller("magic")


# --- adaptive controllers -----------------------------------------------------------------------

from rlplastic.rr import AdaptiveRR, AdaptiveRRReference, LadderRR  # noqa: E402

EXACT = 2**-10  # a threshold and FAU steps that are exact in binary, so "at the threshold" is exact


def feed(controller, episode_faus, first=0.5, frames_per_episode=1000):
    """Observe one signal value per episode end; return (frame, new ratio) of every switch."""
    switches = []
    for episode, value in enumerate(episode_faus, start=1):
        frame = episode * frames_per_episode
        signals = {"critic/episode_fau": value, "critic/first_update_fau": first}
        if controller.observe(signals, frame):
            switches.append((frame, controller.value))
    return switches


def test_adaptive_ref_checks_every_50th_episode_against_the_first_update_first():
    ref = AdaptiveRRReference(threshold=EXACT)
    # Episode 50 is within the threshold of the first update's FAU (0.5): switch at the first check.
    assert feed(ref, [0.3] * 49 + [0.5 - EXACT]) == [(50_000, 2.0)]
    # Episodes between checks are ignored, whatever they hold.
    ref = AdaptiveRRReference(threshold=EXACT)
    assert feed(ref, [0.5] * 49 + [0.4] + [0.5] * 49 + [0.4 + EXACT / 2]) == [(100_000, 2.0)]


def test_adaptive_ref_compares_with_at_most_the_threshold():
    at = AdaptiveRRReference(threshold=EXACT)
    assert feed(at, [0.1] * 49 + [0.5 + EXACT]) == [(50_000, 2.0)]  # exactly at: switches (≤)
    above = AdaptiveRRReference(threshold=EXACT)
    assert feed(above, [0.1] * 49 + [0.5 + 2 * EXACT]) == []  # just above: stays
    paper = AdaptiveRR(threshold=EXACT, check_every_frames=50_000)
    assert feed(paper, [0.1] * 49 + [0.5 + EXACT]) == []  # the paper's strict "<" does not


def test_adaptive_switches_once_and_never_back():
    ctrl = AdaptiveRR(threshold=EXACT, check_every_frames=10_000)
    values = [0.4] * 10 + [0.4] * 10 + [0.1] * 30  # plateau at the second check, then a collapse
    assert feed(ctrl, values) == [(20_000, 2.0)]
    assert ctrl.value == 2.0 and ctrl.switched_at_frame == 20_000


def test_adaptive_since_last_check_window_averages_every_episode():
    last = AdaptiveRR(threshold=EXACT, check_every_frames=4_000, window="last_episode")
    since = AdaptiveRR(threshold=EXACT, check_every_frames=4_000, window="since_last_check")
    # Check 1 (episodes 1-4) vs first update 0.5: last episode 0.5 → plateau; mean 0.375 → no.
    values = [0.25, 0.25, 0.5, 0.5]
    assert feed(last, values) == [(4_000, 2.0)]
    assert feed(since, values) == []
    # Check 2: mean of episodes 5-8 equals check 1's mean 0.375 → plateau.
    assert feed(AdaptiveRR(threshold=EXACT, check_every_frames=4_000, window="since_last_check"),
                values + [0.375] * 4) == [(8_000, 2.0)]  # fmt: skip


def test_ladder_steps_up_on_plateaus_down_on_drops_and_respects_dwell():
    ladder = LadderRR([0.5, 1, 2], check_every_frames=1_000, threshold=EXACT, drop=0.25, min_dwell_frames=2_000)
    values = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.125, 0.125, 0.125]
    # frame 2000: plateau, dwell 2000 reached → up to 1; 3000: dwell 1000 < 2000 → stay;
    # 4000: plateau → up to 2; 5000, 6000: dwell/top; 7000: drop 0.375 > 0.25 → down to 1;
    # 8000: dwell; 9000: plateau at the new level → up to 2 again.
    assert feed(ladder, values) == [(2_000, 1.0), (4_000, 2.0), (7_000, 1.0), (9_000, 2.0)]


def test_fractional_ratio_stays_exact_after_a_switch():
    ctrl = AdaptiveRR(low=0.5, high="5/2", threshold=EXACT, check_every_frames=1_000)
    total = sum(ctrl.updates_due(s) for s in range(1000))
    assert total == 500
    feed(ctrl, [0.5])
    assert ctrl.value == 2.5
    assert sum(ctrl.updates_due(s) for s in range(1000)) == 2500


def test_controller_state_round_trip_gives_the_same_decisions():
    values = [0.3] * 7 + [0.3] * 30
    a = LadderRR([0.5, 1, 2, 4], check_every_frames=3_000, threshold=EXACT, min_dwell_frames=3_000)
    feed(a, values[:7])
    b = LadderRR([0.5, 1, 2, 4], check_every_frames=3_000, threshold=EXACT, min_dwell_frames=3_000)
    b.load_state_dict(a.state_dict())

    def rest(ctrl):
        out = []
        for episode, value in enumerate(values[7:], start=8):
            ctrl.observe({"critic/episode_fau": value}, episode * 1000)
            out.append((ctrl.value, ctrl.updates_due(episode)))
        return out

    assert rest(a) == rest(b)
    assert b.value == 4.0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: AdaptiveRR(signal="critic/happiness"), "unknown signal 'critic/happiness'"),
        (lambda: AdaptiveRR(signal="brain/fau"), "unknown signal 'brain/fau'"),
        (lambda: LadderRR([]), r"rr.ratios=\[\] is empty"),
        (lambda: LadderRR([0.5, 0]), "rr.ratios=0 must be > 0"),
        (lambda: LadderRR([1, 0.5]), "must be strictly increasing"),
        (lambda: AdaptiveRR(high=-2), "rr.high=-2 must be > 0"),
        (lambda: AdaptiveRR(window="forever"), "rr.window='forever'"),
        (lambda: make_rr_controller("adaptive", signal="brain/fau"), "^rr.adaptive: unknown signal 'brain/fau'"),
        (lambda: make_rr_controller("static", ratio=0), r"^rr.ratio=0 must be > 0"),
        (
            lambda: make_rr_controller("adaptive", speed=3),
            r"unknown rr.adaptive key\(s\) \['speed'\]: allowed are \['signal', 'low', 'high', 'check_every_frames'",
        ),
    ],
)
def test_bad_controller_settings(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
