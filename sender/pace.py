"""How fast one process sends to its relay: AIMD on throttling, one backoff per outage round.

``Pace`` is per process and lives in memory: a throttle halves the active sessions and the rate of
message starts (multiplicative decrease, once per burst); each accepted message adds a session back
and half a message per second (additive increase) until the pace is unlimited again.
``Outage`` counts rounds: every attempt that began before the current round started and failed
belongs to that round, so sessions failing together count once. The daemon publishes the pace in
the flags table (``status --json`` shows it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MIN_SPACING = 0.25  # the first throttle: at most 4 message starts a second
MAX_SPACING = 30.0
RATE_STEP = 0.5  # each accepted message adds half a message per second
OUTAGE_BASE = 1.5  # the first hold, +-20%: 1.2-1.8 s


@dataclass
class Pace:
    sessions: int
    active: int = 0
    spacing: float = 0.0
    throttles: int = 0
    last_reply: str = ""
    decreased_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.active = self.active or self.sessions

    @property
    def slowed(self) -> bool:
        return self.active < self.sessions or self.spacing > 0

    def throttled(self, reply: str, started: float, now: float) -> bool:
        """A throttle for an attempt begun at ``started``: halve the sessions and the rate, once per
        burst (attempts begun before the last decrease met the old pace). True when it changed."""
        self.throttles += 1
        self.last_reply = reply[:200]
        if started < self.decreased_at:
            return False
        self.decreased_at = now
        self.active = max(1, self.active // 2)
        self.spacing = min(MAX_SPACING, max(MIN_SPACING, self.spacing * 2))
        return True

    def accepted(self) -> bool:
        """One message accepted: a session back and half a message per second more. True when changed."""
        if not self.slowed:
            return False
        self.active = min(self.sessions, self.active + 1)
        if self.spacing:
            self.spacing = 1.0 / (1.0 / self.spacing + RATE_STEP)
            if self.spacing < MIN_SPACING / 4:
                self.spacing = 0.0
        return True

    def release_delay(self, hint: float | None) -> float:
        """How long a throttled claim waits before it is due again."""
        return max(hint or 0.0, 2 * self.spacing, 1.0)

    def to_json(self, worker: str) -> dict[str, object]:
        return {"worker": worker, "sessions": self.active, "of": self.sessions,
                "spacing_s": round(self.spacing, 2), "throttles": self.throttles, "last": self.last_reply}


@dataclass
class Outage:
    """Backoff per round of failing sessions, capped by ``--max-hold``."""

    max_hold: float
    rounds: int = 0
    round_at: float = float("-inf")

    def failed(self, started: float, now: float, rng: random.Random | None = None) -> float | None:
        """An attempt begun at ``started`` met an outage at ``now``: the new hold, or None when it
        belongs to the round already counted."""
        if started < self.round_at:
            return None
        self.rounds += 1
        self.round_at = now
        exponent = min(self.rounds - 1, 30)  # capped before exponentiation: never overflows
        return min(self.max_hold, OUTAGE_BASE * 2 ** exponent * (rng or random).uniform(0.8, 1.2))

    def reached(self) -> bool:
        """The relay answered: True when this ends an outage."""
        ended = self.rounds > 0
        self.rounds = 0
        return ended

    @property
    def probing(self) -> bool:
        return self.rounds > 0
