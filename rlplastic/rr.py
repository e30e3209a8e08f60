"""Replay-ratio controllers: how many gradient updates each agent step is owed.

The replay ratio (RR) is gradient updates per **agent step** (DESIGN.md): RR 0.5 is one update every
two agent steps, as DrQ-v2's ``update_every_steps: 2``. Controllers keep the owed updates as an exact
fraction, so any positive ratio — 0.5, 2.5, 1/3 — is exact over any horizon, and a ratio that changes
mid-run continues from the credit already accrued.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

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

    def updates_due(self, step: int) -> int:
        """Updates owed for agent step ``step`` (call once per agent step once updates may start)."""
        del step  # a static ratio does not depend on time
        return self._accumulator.step(self.ratio)

    def observe(self, signals: dict[str, float], step: int) -> list[str]:
        """Take plasticity signals; a static controller ignores them and reports no events."""
        del signals, step
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accumulator": self._accumulator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint holds a {state.get('name')!r} RR controller, this run uses {self.name!r}")
        self._accumulator.load_state_dict(state["accumulator"])


CONTROLLERS: dict[str, type] = {"static": StaticRR}


def make_rr_controller(name: str, **kwargs: Any) -> StaticRR:
    """Build a controller by its config name.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in CONTROLLERS:
        raise ValueError(f"unknown rr controller {name!r}: allowed are {sorted(CONTROLLERS)}")
    return CONTROLLERS[name](**kwargs)
