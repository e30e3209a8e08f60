"""Replay-ratio controllers: how many gradient updates each agent step is owed.

The replay ratio (RR) is gradient updates per **agent step** (docs/design.md): RR 0.5 is one update every
two agent steps, as DrQ-v2's ``update_every_steps: 2``. Controllers keep the owed updates as an exact
fraction, so any positive ratio — 0.5, 2.5, 1/3 — is exact over any horizon, and a ratio that changes
mid-run continues from the credit already accrued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from rlplastic.monitor.signals import CRITIC_EPISODE_FAU, check_signal, first_update_signal
from rlplastic.registry import Registry

CONTROLLERS: Registry[StaticRR] = Registry("rr controller", "rr")
"""Replay-ratio controllers by config name (``configs/rr/<name>.yaml``)."""

# Ratios come from YAML floats; a bounded denominator turns 0.1 into exactly 1/10 rather than the
# nearest binary fraction, so "RR 0.1" means one update every ten steps, forever.
_MAX_DENOMINATOR = 1_000_000


def as_ratio(value: float | int | str | Fraction, name: str = "rr.ratio") -> Fraction:
    """Parse a replay ratio (``0.5``, ``2``, ``"1/3"``) into an exact positive fraction.

    Raises:
        ValueError: if the value is not a number or not > 0.
    """
    try:
        ratio = Fraction(str(value)).limit_denominator(_MAX_DENOMINATOR)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name}={value!r} is not a number: a replay ratio is a number > 0, e.g. 0.5") from None
    if ratio <= 0:
        raise ValueError(f"{name}={value!r} must be > 0 (gradient updates per agent step, e.g. 0.5 or 2)")
    return ratio


class UpdateAccumulator:
    """Exact bookkeeping of owed updates: after n steps at ratio r, ``ceil(n·r)`` updates are issued.

    ``ceil`` rather than ``floor`` puts an update on the first step of every period, which matches
    DrQ-v2's ``step % update_every_steps == 0`` for RR 0.5 when counting starts at an even step.
    """

    def __init__(self) -> None:
        self.owed = Fraction(0)
        self.issued = 0

    def step(self, ratio: Fraction) -> int:
        """Accrue one agent step at ``ratio`` and return the number of updates to run now."""
        self.owed += ratio
        due = math.ceil(self.owed) - self.issued
        self.issued += due
        return due

    def state_dict(self) -> dict[str, int]:
        return {"owed_num": self.owed.numerator, "owed_den": self.owed.denominator, "issued": self.issued}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.owed = Fraction(state["owed_num"], state["owed_den"])
        self.issued = int(state["issued"])


def validate_signal(name: str) -> str:
    """Check a monitor signal name (``critic/episode_fau``, ``critic/dormant``, ``critic/Q1.1/fau``): the monitor
    owns the names (:func:`rlplastic.monitor.signals.check_signal`).

    Raises:
        ValueError: naming the signal and the allowed modules and metrics.
    """
    return check_signal(name)


class CheckWindow:
    """Signal values since the last check, and when the next check is due (every ``every_frames``).

    Checks happen at the first observation at or after each mark, as episode ends rarely fall on it.
    """

    def __init__(self, every_frames: int) -> None:
        if every_frames <= 0:
            raise ValueError(f"rr.check_every_frames={every_frames} must be > 0")
        self.every_frames = int(every_frames)
        self.next_check = self.every_frames
        self.total, self.count = 0.0, 0

    def add(self, value: float, frame: int) -> float | None:
        """Record a value; at a check, return the mean since the last check and start a new window."""
        self.total += value
        self.count += 1
        if frame < self.next_check:
            return None
        while self.next_check <= frame:
            self.next_check += self.every_frames
        mean = self.total / self.count
        self.total, self.count = 0.0, 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {"next_check": self.next_check, "total": self.total, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.next_check, self.total, self.count = int(state["next_check"]), state["total"], int(state["count"])


@CONTROLLERS.register("static")
class StaticRR:
    """A fixed replay ratio.

    Args:
        ratio: gradient updates per agent step (> 0; fractional and > 1 both allowed).
    """

    name = "static"

    def __init__(self, ratio: float | str = 0.5) -> None:
        self.ratio = as_ratio(ratio)
        self._accumulator = UpdateAccumulator()

    @property
    def value(self) -> float:
        """The current replay ratio, for logging as ``rr/value``."""
        return float(self.ratio)

    @property
    def total_updates(self) -> int:
        """Updates issued so far, for logging as ``rr/updates``."""
        return self._accumulator.issued

    @property
    def signals_needed(self) -> tuple[str, ...]:
        """Monitor signals :meth:`observe` reads (the trainer checks the monitor provides them)."""
        return ()

    def updates_due(self, step: int) -> int:
        """Updates owed for agent step ``step`` (call once per agent step once updates may start)."""
        del step  # the ratio, not the time, decides
        return self._accumulator.step(self.ratio)

    def observe(self, signals: Mapping[str, float], frame: int) -> list[str]:
        """Take plasticity signals at an episode end; return the events it caused (``rr_switch``)."""
        del signals, frame
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accumulator": self._accumulator.state_dict(), **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint holds a {state.get('name')!r} RR controller, this run uses {self.name!r}")
        self._accumulator.load_state_dict(state["accumulator"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def _set_ratio(self, ratio: Fraction) -> list[str]:
        if ratio == self.ratio:
            return []
        self.ratio = ratio
        return ["rr_switch"]


@CONTROLLERS.register("adaptive")
class AdaptiveRR(StaticRR):
    """Adaptive Replay Ratio (Ma et al., ICLR 2024), every knob named.

    Starts at ``low``. At the first episode end at or after each ``check_every_frames`` mark, it
    compares the signal's mean over a window with the previous check's; if they differ by less than
    ``threshold`` (the paper's "<"), it switches to ``high`` once and for good. The first check
    compares against the signal's value at the very first update (``<module>/first_update_fau``).

    Args:
        signal: monitor signal to watch; a per-episode FAU signal (``critic/episode_fau``, the paper's
            critic FAU) or any other monitor signal (then read as its latest value).
        low: the starting ratio (0.5 = DrQ-v2).
        high: the ratio after the switch.
        check_every_frames: frames between checks (50,000 = every 50 DMC episodes, as released).
        window: ``last_episode`` (the released code: the updates of the last finished episode only)
            or ``since_last_check`` (every episode since the previous check, equal-weighted).
        threshold: plateau threshold on |mean − previous mean|.
        inclusive: compare with ``≤`` (the released code) instead of ``<`` (the paper text).
    """

    name = "adaptive"
    WINDOWS = ("last_episode", "since_last_check")

    def __init__(
        self,
        signal: str = CRITIC_EPISODE_FAU,
        low: float = 0.5,
        high: float = 2.0,
        check_every_frames: int = 50_000,
        window: str = "last_episode",
        threshold: float = 0.001,
        inclusive: bool = False,
    ) -> None:
        super().__init__(low)
        self.signal = validate_signal(signal)
        self.low, self.high = as_ratio(low, "rr.low"), as_ratio(high, "rr.high")
        if window not in self.WINDOWS:
            raise ValueError(f"rr.window={window!r} is not supported: allowed are {list(self.WINDOWS)}")
        if threshold < 0:
            raise ValueError(f"rr.threshold={threshold} must be >= 0")
        self.checks = CheckWindow(check_every_frames)
        self.window = window
        self.threshold = float(threshold)
        self.inclusive = bool(inclusive)
        self.switched_at_frame: int | None = None
        self._previous: float | None = None

    @property
    def signals_needed(self) -> tuple[str, ...]:
        first = first_update_signal(self.signal)
        return (self.signal,) if first is None else (self.signal, first)

    def observe(self, signals: Mapping[str, float], frame: int) -> list[str]:
        if self.switched_at_frame is not None or self.signal not in signals:
            return []  # one-way; and no episode with updates has closed yet
        if self._previous is None and len(self.signals_needed) == 2 and self.signals_needed[1] in signals:
            self._previous = float(signals[self.signals_needed[1]])  # the very first update's FAU
        window_mean = self.checks.add(float(signals[self.signal]), frame)
        if window_mean is None:
            return []
        mean = float(signals[self.signal]) if self.window == "last_episode" else window_mean
        previous, self._previous = self._previous, mean
        if previous is None:
            return []
        change = abs(mean - previous)
        if change <= self.threshold if self.inclusive else change < self.threshold:
            self.switched_at_frame = int(frame)
            return self._set_ratio(self.high)
        return []

    def _extra_state(self) -> dict[str, Any]:
        return {
            "ratio": (self.ratio.numerator, self.ratio.denominator),
            "switched_at_frame": self.switched_at_frame,
            "previous": self._previous,
            "checks": self.checks.state_dict(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.ratio = Fraction(*state["ratio"])
        self.switched_at_frame = state["switched_at_frame"]
        self._previous = state["previous"]
        self.checks.load_state_dict(state["checks"])


@CONTROLLERS.register("adaptive_ref")
class AdaptiveRRReference(AdaptiveRR):
    """The released Adaptive-RR code's rule exactly (Guozheng-Ma/Adaptive-Replay-Ratio, dae0d09).

    Checks at the end of every ``check_every_episodes``-th episode (counting every episode, seed
    episodes included), on the critic FAU of that last finished episode, against the previous
    check's value — the first time against the very first update's FAU — with ``≤``.
    """

    name = "adaptive_ref"

    def __init__(
        self, low: float = 0.5, high: float = 2.0, check_every_episodes: int = 50, threshold: float = 0.001
    ) -> None:
        super().__init__(CRITIC_EPISODE_FAU, low, high, check_every_frames=1, threshold=threshold, inclusive=True)
        if check_every_episodes <= 0:
            raise ValueError(f"rr.check_every_episodes={check_every_episodes} must be > 0")
        self.check_every_episodes = int(check_every_episodes)
        self._episodes = 0

    def observe(self, signals: Mapping[str, float], frame: int) -> list[str]:
        self._episodes += 1
        if self.switched_at_frame is not None or self._episodes % self.check_every_episodes:
            return []
        if self.signal not in signals:
            return []
        if self._previous is None:
            self._previous = signals.get(first_update_signal(self.signal))
        mean = float(signals[self.signal])
        previous, self._previous = self._previous, mean
        if previous is not None and abs(mean - previous) <= self.threshold:
            self.switched_at_frame = int(frame)
            return self._set_ratio(self.high)
        return []

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "episodes": self._episodes}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        super()._load_extra_state(state)
        self._episodes = int(state["episodes"])


@CONTROLLERS.register("ladder")
class LadderRR(StaticRR):
    """Beyond the paper: climb a ladder of ratios as a plasticity signal plateaus.

    Every ``check_every_frames`` (at episode ends) the signal's mean since the last check is
    compared with the previous check's. After at least ``min_dwell_frames`` on a rung, a plateau
    (|change| < ``threshold``) moves one rung up; with ``drop`` set, a fall of more than ``drop``
    (previous − mean > drop, e.g. FAU collapsing) moves one rung down.

    Args:
        ratios: the rungs, strictly increasing (e.g. ``[0.5, 1, 2, 4]``); starts on the first.
        signal: any monitor signal (``critic/episode_fau``, ``critic/dormant``, ``critic/nc1``, ...).
        check_every_frames: frames between checks.
        threshold: plateau threshold.
        drop: fall that steps down (``None``: never step down).
        min_dwell_frames: frames on a rung before it may move again.
    """

    name = "ladder"

    def __init__(
        self,
        ratios: Sequence[float] = (0.5, 1, 2, 4),
        signal: str = CRITIC_EPISODE_FAU,
        check_every_frames: int = 50_000,
        threshold: float = 0.001,
        drop: float | None = None,
        min_dwell_frames: int = 100_000,
    ) -> None:
        rungs = [as_ratio(r, "rr.ratios") for r in ratios]
        if not rungs:
            raise ValueError("rr.ratios=[] is empty: a ladder needs at least one ratio, e.g. [0.5, 1, 2]")
        if any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)):
            raise ValueError(f"rr.ratios={list(ratios)} must be strictly increasing")
        super().__init__(rungs[0])
        self.rungs = rungs
        self.signal = validate_signal(signal)
        if drop is not None and drop <= 0:
            raise ValueError(f"rr.drop={drop} must be > 0 or null")
        if threshold < 0 or min_dwell_frames < 0:
            raise ValueError(f"rr.threshold={threshold} and rr.min_dwell_frames={min_dwell_frames} must be >= 0")
        self.checks = CheckWindow(check_every_frames)
        self.threshold = float(threshold)
        self.drop = drop
        self.min_dwell_frames = int(min_dwell_frames)
        self.rung = 0
        self.rung_since_frame = 0
        self._previous: float | None = None

    @property
    def signals_needed(self) -> tuple[str, ...]:
        return (self.signal,)

    def observe(self, signals: Mapping[str, float], frame: int) -> list[str]:
        if self.signal not in signals:
            return []
        mean = self.checks.add(float(signals[self.signal]), frame)
        if mean is None:
            return []
        previous, self._previous = self._previous, mean
        if previous is None or frame - self.rung_since_frame < self.min_dwell_frames:
            return []
        if self.drop is not None and previous - mean > self.drop and self.rung > 0:
            self.rung -= 1
        elif abs(mean - previous) < self.threshold and self.rung < len(self.rungs) - 1:
            self.rung += 1
        else:
            return []
        self.rung_since_frame = int(frame)
        return self._set_ratio(self.rungs[self.rung])

    def _extra_state(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "rung_since_frame": self.rung_since_frame,
            "previous": self._previous,
            "checks": self.checks.state_dict(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.rung = int(state["rung"])
        self.ratio = self.rungs[self.rung]
        self.rung_since_frame = int(state["rung_since_frame"])
        self._previous = state["previous"]
        self.checks.load_state_dict(state["checks"])


def make_rr_controller(name: str, **kwargs: Any) -> StaticRR:
    """Build a controller by its config name (``configs/rr/<name>.yaml``), its settings checked against its signature.

    Raises:
        ValueError: for an unknown name or key (naming ``rr`` and what is allowed) or a bad setting.
    """
    return CONTROLLERS.build(name, kwargs)
