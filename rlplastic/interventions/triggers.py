r"""Triggers: when an intervention fires (docs/reference.md §4).

A trigger is asked ``should_fire(signals, frame)`` at a decision point (the trainer's log/decision
step), at most once per point, with the latest monitor signals (``monitor.signals()``: keys
``<module>/<metric>`` or ``<module>/<layer>/<metric>``) and the current **environment frame** (the x-axis
of every log, docs/design.md). It answers yes or no and records the decision, so each trigger belongs to one
intervention. Both kinds are stateful and checkpointed (``state_dict`` holds ints and strings only).

* :class:`ScheduleTrigger`: every N frames (N, 2N, 3N, ...) and/or at listed frames. Decision points
  rarely land exactly on a scheduled frame, so it fires at the **first call with frame >= the next
  scheduled frame**; scheduled frames passed since the last call are covered by that one firing
  (never two firings for one scheduled frame, never two for one call).
* :class:`ThresholdTrigger`: when one signal is above (or below) a threshold, strictly, and at least
  ``cooldown_frames`` frames have passed since it last fired. It is level-triggered: while the
  condition holds it fires again every time the cool-down has run out. Monitor probe signals only
  change at probes, so a cool-down shorter than the probe period (in frames) can fire twice on the
  same, pre-intervention value: set ``cooldown_frames`` >= the probe period.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rlplastic.registry import Registry, plain

__all__ = ["TRIGGERS", "ScheduleTrigger", "ThresholdTrigger", "Trigger", "make_trigger"]

#: Config ``kind`` → trigger class; a trigger's keys are its constructor's parameters.
TRIGGERS: Registry[ScheduleTrigger | ThresholdTrigger] = Registry("trigger kind", "trigger")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_frame(frame: Any) -> int:
    if not _is_int(frame) or frame < 0:
        raise ValueError(f"frame={frame!r} must be an int >= 0 (environment frames)")
    return int(frame)


def _check_kind(state: Mapping[str, Any], kind: str) -> None:
    if not isinstance(state, Mapping) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"checkpoint holds a {found!r} trigger, this run uses a {kind!r} trigger")


@TRIGGERS.register("schedule")
class ScheduleTrigger:
    """Fire on a schedule of environment frames.

    :param every_frames: fire at frames N, 2N, 3N, ... (N > 0); ``None`` for none.
    :param at_frames: further frames to fire at (ints >= 0, any order; 0 fires at the first call).
    :raises ValueError: for a bad value, or when neither is given (the trigger would never fire).
    """

    kind = "schedule"

    def __init__(self, every_frames: int | None = None, at_frames: Sequence[int] = ()) -> None:
        if every_frames is not None and (not _is_int(every_frames) or every_frames <= 0):
            raise ValueError(f"schedule.every_frames={every_frames!r} must be an int > 0 or null")
        if isinstance(at_frames, (str, bytes)) or not isinstance(at_frames, Iterable):
            raise ValueError(f"schedule.at_frames={at_frames!r} must be a list of ints >= 0")
        frames = list(at_frames)
        if not all(_is_int(f) and f >= 0 for f in frames):
            raise ValueError(f"schedule.at_frames={frames!r} must be a list of ints >= 0")
        if every_frames is None and not frames:
            raise ValueError("a schedule trigger needs every_frames or at_frames (it would never fire)")
        self.every_frames = None if every_frames is None else int(every_frames)
        self.at_frames: tuple[int, ...] = tuple(sorted({int(f) for f in frames}))
        # every scheduled frame <= _covered has been fired for; -1: none yet
        self._covered = -1

    def next_frame(self) -> int | None:
        """The next scheduled frame not yet fired for (``None`` when the schedule is exhausted)."""
        candidates = []
        i = bisect.bisect_right(self.at_frames, self._covered)
        if i < len(self.at_frames):
            candidates.append(self.at_frames[i])
        if self.every_frames is not None:
            n = self.every_frames
            candidates.append(max(n, (self._covered // n + 1) * n))
        return min(candidates) if candidates else None

    def should_fire(self, signals: Mapping[str, float], frame: int) -> bool:
        """Whether to fire now; a yes covers every scheduled frame <= ``frame``.

        :param signals: ignored (the schedule depends on time only).
        :param frame: current environment frame.
        """
        del signals
        frame = _check_frame(frame)
        due = self.next_frame()
        if due is None or frame < due:
            return False
        self._covered = frame
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "covered": self._covered}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_kind(state, self.kind)
        self._covered = int(state["covered"])

    def __repr__(self) -> str:
        return f"ScheduleTrigger(every_frames={self.every_frames}, at_frames={list(self.at_frames)})"


@TRIGGERS.register("threshold")
class ThresholdTrigger:
    """Fire when a monitor signal crosses a threshold, at most once per cool-down.

    :param signal: signal name, e.g. ``critic/dormant`` (a key of ``monitor.signals()``).
    :param threshold: the level; the comparison is strict (``>`` or ``<``). NaN signals never fire.
    :param above: fire when signal > threshold (``True``) or signal < threshold (``False``).
    :param cooldown_frames: after firing at frame f, do not fire again before frame f + cooldown_frames.
    :param known_signals: the signal names that exist; the name is checked against them now. Without
        it the name is checked at the first call whose ``signals`` is non-empty — pass it when some
        signals appear only later (probe metrics before the first probe), or that check would refuse
        a name that is merely not measured yet. A known signal missing from a call's ``signals`` does
        not fire.
    :raises ValueError: for an unknown signal name (the message lists the known ones) or a bad value.
    """

    kind = "threshold"

    def __init__(
        self,
        signal: str,
        threshold: float,
        above: bool = True,
        cooldown_frames: int = 0,
        known_signals: Collection[str] | None = None,
    ) -> None:
        if not isinstance(signal, str) or not signal:
            raise ValueError(f"threshold.signal={signal!r} must be a signal name such as 'critic/dormant'")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold.threshold={threshold!r} must be a finite number")
        if not isinstance(above, bool):
            raise ValueError(f"threshold.above={above!r} must be a bool")
        if not _is_int(cooldown_frames) or cooldown_frames < 0:
            raise ValueError(f"threshold.cooldown_frames={cooldown_frames!r} must be an int >= 0")
        self.signal = signal
        self.threshold = float(threshold)
        self.above = above
        self.cooldown_frames = int(cooldown_frames)
        self._validated = False
        if known_signals is not None:
            self._validate(known_signals)
        self._last_fired: int | None = None
        #: the signal value read at the latest call (``None`` if absent), for the event log
        self.last_value: float | None = None

    def _validate(self, known: Iterable[str]) -> None:
        known = sorted(known)
        if self.signal not in known:
            raise ValueError(f"unknown signal {self.signal!r} for a threshold trigger: known signals are {known}")
        self._validated = True

    def should_fire(self, signals: Mapping[str, float], frame: int) -> bool:
        """Whether to fire now: condition holds and the cool-down has run out.

        :param signals: latest signal values by name.
        :param frame: current environment frame.
        """
        frame = _check_frame(frame)
        if not self._validated and signals:
            self._validate(signals)
        value = signals.get(self.signal)
        self.last_value = None if value is None else float(value)
        if self.last_value is None:
            return False
        crossed = self.last_value > self.threshold if self.above else self.last_value < self.threshold
        if not crossed:
            return False
        if self._last_fired is not None and frame < self._last_fired + self.cooldown_frames:
            return False
        self._last_fired = frame
        return True

    def state_dict(self) -> dict[str, Any]:
        # -1 for "never fired" keeps the state to plain ints
        return {"kind": self.kind, "last_fired": -1 if self._last_fired is None else self._last_fired}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_kind(state, self.kind)
        last = int(state["last_fired"])
        self._last_fired = None if last < 0 else last

    def __repr__(self) -> str:
        op = ">" if self.above else "<"
        return f"ThresholdTrigger({self.signal} {op} {self.threshold}, cooldown_frames={self.cooldown_frames})"


Trigger = ScheduleTrigger | ThresholdTrigger


def make_trigger(known_signals: Collection[str] | None = None, **cfg: Any) -> Trigger:
    """Build a trigger from a config mapping ``{kind: schedule|threshold, ...}``.

    Examples: ``make_trigger(kind="schedule", every_frames=200_000)``,
    ``make_trigger(kind="threshold", signal="critic/dormant", threshold=0.2, cooldown_frames=100_000)``.

    :param known_signals: passed to :class:`ThresholdTrigger` (a schedule reads no signal).
    :param cfg: ``kind`` and that kind's arguments (Hydra lists are accepted).
    :raises ValueError: for a missing or unknown kind, an unknown key, or a bad value.
    """
    cfg = plain(cfg)
    kind = cfg.pop("kind", None)
    TRIGGERS.check(kind, cfg, context=("known_signals",))
    # only a kind that reads a signal takes the names to check it against
    context = {"known_signals": known_signals} if "known_signals" in TRIGGERS.keys(kind) else {}
    return TRIGGERS.get(kind)(**cfg, **context)
