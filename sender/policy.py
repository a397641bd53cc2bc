"""Sending policy: recipient caps, sender rate limits, send windows, expiry.

Each rule is evaluated *inside the claim transaction* (``queue.exchange``), counting from the
SendLog rather than from in-process counters, so a limit holds across any number of overlapping
processes: two daemons cannot both see "0 of 1 sent today" because the second one's transaction
starts only after the first one's claim is committed.

A message a rule holds back is *deferred*: it stays ``scheduled`` with ``due_at`` moved to the
moment the rule frees it and ``defer_reason`` saying which rule. Nothing is failed or dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .times import UNITS, period, span_seconds

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|m|min|h|d)\s*$")
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WINDOW = re.compile(r"^\s*(?:(?P<days>[a-z,\-]+)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
                     r"(?:\s+(?P<tz>[A-Za-z_+\-/0-9]+))?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` in any ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        return f"{self.count}/{period(self.period)}"


def parse_limit(text: str, what: str = "limit") -> Limit:
    """``"60/1m"``, ``"1/24h"``, ``"500/d"``: count per period."""
    match = _LIMIT.match(text.lower())
    if not match or int(match.group(1)) < 1:
        raise UsageError(f"{what}: expected N/PERIOD such as 60/1m or 1/24h, got {text!r}")
    period = int(match.group(2) or 1) * UNITS[match.group(3)]
    if period <= 0:
        raise UsageError(f"{what}: the period must be positive in {text!r}")
    return Limit(int(match.group(1)), float(period))


def parse_duration(text: str, what: str = "duration") -> float:
    """``"90"`` (seconds), ``"30m"``, ``"48h"``, ``"7d"``."""
    seconds = span_seconds(text)
    if seconds is None:
        raise UsageError(f"{what}: expected a duration such as 90s, 30m, 48h or 7d, got {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Sending hours: ``days`` (0 = Monday), ``[start, end)`` local time in ``tz``."""

    days: frozenset[int]
    start: dtime
    end: dtime
    tz: str = "UTC"
    per_recipient_tz: bool = False

    def zone(self, recipient_tz: str | None) -> ZoneInfo:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only with a send window: 2.4 ms at start

        if self.per_recipient_tz and recipient_tz:
            try:
                return ZoneInfo(recipient_tz)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        return ZoneInfo(self.tz)

    def _open_at(self, local: datetime) -> bool:
        t = local.timetz().replace(tzinfo=None)
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        # overnight window, e.g. 22:00-06:00: the part after midnight belongs to the previous day
        if t >= self.start:
            return local.weekday() in self.days
        return t < self.end and (local.weekday() - 1) % 7 in self.days

    def next_open(self, when: float, recipient_tz: str | None = None) -> float:
        """``when`` if the window is open then, else the first moment it opens (DST-correct)."""
        zone = self.zone(recipient_tz)
        local = datetime.fromtimestamp(when, zone)
        if self._open_at(local):
            return when
        for offset in range(0, 8):
            day = (local + timedelta(days=offset)).date()
            if day.weekday() not in self.days:
                continue
            opening = datetime.combine(day, self.start, tzinfo=zone)
            # a start inside a DST gap does not exist: fold it forward to a real instant
            opening = datetime.fromtimestamp(opening.timestamp(), zone)
            if opening.timestamp() > when and self._open_at(opening):
                return opening.timestamp()
        raise UsageError("send window never opens")  # unreachable for a non-empty day set


def parse_window(text: str, per_recipient_tz: bool = False) -> SendWindow:
    """``"mon-fri 09:00-17:00 Europe/Warsaw"``; days and zone are optional (every day, UTC)."""
    match = _WINDOW.match(text)
    if not match:
        raise UsageError(f"window: expected 'mon-fri 09:00-17:00 Europe/Warsaw', got {text!r}")
    days = _parse_days(match.group("days").lower()) if match.group("days") else frozenset(range(7))
    try:
        start = dtime.fromisoformat(match.group("start").zfill(5))
        end = dtime.fromisoformat(match.group("end").zfill(5))
    except ValueError as exc:
        raise UsageError(f"window: bad time in {text!r}") from exc
    if start == end:
        raise UsageError(f"window: start and end are equal in {text!r}")
    tz = match.group("tz") or "UTC"
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"window: unknown time zone {tz!r}") from exc
    return SendWindow(days, start, end, tz, per_recipient_tz)


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in _DAYS or b not in _DAYS:
                raise UsageError(f"window: unknown day range {part!r}")
            i, j = _DAYS.index(a), _DAYS.index(b)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part in _DAYS:
            days.add(_DAYS.index(part))
        else:
            raise UsageError(f"window: unknown day {part!r} (use mon,tue,...,sun)")
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class CampaignPolicy:
    window: SendWindow | None = None
    recipient_cap: Limit | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Every rule that can hold a due message back. Empty means the fast claim path."""

    recipient_cap: Limit | None = None
    rate: Limit | None = None
    daily_cap: int | None = None
    max_age: float | None = None
    campaigns: Mapping[str, CampaignPolicy] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.recipient_cap or self.rate or self.daily_cap or self.max_age or self.campaigns)

    @property
    def timed(self) -> bool:
        """Rules about *when* a message may go (a rate, a daily cap, a send window): a claim must
        be followed by its send at once, so these turn ``--prefetch`` off."""
        return bool(self.rate or self.daily_cap or any(c.window for c in self.campaigns.values()))

    def for_campaign(self, name: str) -> CampaignPolicy:
        return self.campaigns.get(name) or CampaignPolicy()


def from_settings(recipient_cap: str | None, rate: str | None, daily_cap: int | None,
                  max_age: str | float | None, campaigns: Mapping[str, Mapping[str, Any]] | None) -> Policy:
    """Build and validate the policy once, at start-up; a bad rule is a usage error (exit 2)."""
    parsed: dict[str, CampaignPolicy] = {}
    for name, spec in (campaigns or {}).items():
        unknown = set(spec) - {"window", "recipient_tz", "recipient_cap"}
        if unknown:
            raise UsageError(f"campaign {name}: unknown setting(s) {', '.join(sorted(unknown))}")
        window = (parse_window(str(spec["window"]), bool(spec.get("recipient_tz", False)))
                  if spec.get("window") else None)
        cap = parse_limit(str(spec["recipient_cap"]), f"campaign {name} recipient_cap") \
            if spec.get("recipient_cap") else None
        parsed[name] = CampaignPolicy(window, cap)
    if daily_cap is not None and daily_cap < 0:
        raise UsageError("--daily-cap must be positive")
    return Policy(
        recipient_cap=parse_limit(recipient_cap, "--recipient-cap") if recipient_cap else None,
        rate=parse_limit(rate, "--rate") if rate else None,
        daily_cap=daily_cap or None,
        max_age=parse_duration(str(max_age), "--max-age") if max_age else None,
        campaigns=parsed,
    )
