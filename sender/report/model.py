"""The duplicate report's values: its findings as frozen dataclasses, its window, its JSON shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UsageError
from ..times import iso, parse_iso, span_seconds

LIMIT = 100  # items per finding list; ``truncated`` names the lists that had more, ``totals`` counts
ANOMALIES = ("ghosts", "repeated_message_ids", "multi_sends", "unknown", "stale_claims", "missing")
DUPLICATES = ANOMALIES[:3]  # the kinds that mean a second copy went out
LABELS = {"ghosts": "ghost", "repeated_message_ids": "repeated Message-ID", "multi_sends": "multi-send",
          "unknown": "unknown", "stale_claims": "stale claim", "missing": "missing"}
PLURALS = {**LABELS, "ghosts": "ghosts", "repeated_message_ids": "repeated Message-IDs",
           "multi_sends": "multi-sends", "stale_claims": "stale claims"}
TITLES = {  # the text report's heading and one-line meaning of each kind
    "ghosts": ("GHOSTS", "delivered, but absent from SendLog"),
    "repeated_message_ids": ("REPEATED MESSAGE-IDS", "one Message-ID delivered more than once"),
    "multi_sends": ("MULTI-SENDS", "one recipient + campaign, more than one Message-ID"),
    "unknown": ("UNKNOWN", "may or may not have been delivered; never resent automatically"),
    "stale_claims": ("STALE CLAIMS", "sending, lease expired, worker presumed dead"),
    "missing": ("MISSING", "logged as sent, never observed"),
}


@dataclass(frozen=True, slots=True)
class Window:
    """The closed interval ``[since, until]`` a report covers.

    ``anchored`` means the database had no activity in the span ending now, so the window was
    moved to end at its newest activity (an idle queue, or the fixed-time ``sample.db``)."""

    since: float
    until: float
    anchored: bool = False


@dataclass(frozen=True, slots=True)
class Ghost:
    """A Message-ID seen in a mailbox that SendLog has never heard of."""

    mid: str
    recipient: str
    at: float
    copies: int
    subject: str
    sources: tuple[str, ...]
    row: int | None
    traced_by: str | None
    campaign: str | None
    row_state: str | None
    logged_mid: str | None


@dataclass(frozen=True, slots=True)
class RepeatedMessageId:
    """One Message-ID that one mailbox holds more than once for the same recipient."""

    mid: str
    recipient: str
    copies: int
    first_at: float
    last_at: float
    sources: tuple[str, ...]
    row: int | None
    campaign: str | None
    attempts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sighting:
    """One Message-ID of a multi-send: when, and whether SendLog has it and a mailbox saw it."""

    mid: str
    at: float
    logged: bool
    observed: int
    row: int | None


@dataclass(frozen=True, slots=True)
class MultiSend:
    """One recipient + campaign that got (or was logged with) several distinct Message-IDs."""

    recipient: str
    campaign: str
    mids: tuple[Sighting, ...]

    @property
    def first_at(self) -> float:
        return min(s.at for s in self.mids)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message that may or may not have been delivered; ``observed`` means reconcile can
    settle it now."""

    row: int
    mid: str
    recipient: str
    campaign: str
    since: float
    reason: str
    worker: str | None
    attempts: int
    observed: bool


@dataclass(frozen=True, slots=True)
class StaleClaim:
    """A ``sending`` row whose lease ran out; its worker's last heartbeat says why."""

    row: int
    mid: str
    recipient: str
    campaign: str
    worker: str | None
    claimed_at: float | None
    lease_until: float
    heartbeat_at: float | None
    worker_stopped: bool


@dataclass(frozen=True, slots=True)
class Missing:
    """Logged as sent, but absent from the mailboxes observed for that time."""

    row: int
    mid: str
    recipient: str
    campaign: str
    sent_at: float
    reply: str


@dataclass(frozen=True, slots=True)
class Report:
    window: Window
    now: float
    ghosts: list[Ghost] = field(default_factory=list)
    repeated_message_ids: list[RepeatedMessageId] = field(default_factory=list)
    multi_sends: list[MultiSend] = field(default_factory=list)
    unknown: list[UnknownMessage] = field(default_factory=list)
    stale_claims: list[StaleClaim] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    missing_checked: bool = False
    truncated: tuple[str, ...] = ()  # the lists that hold fewer items than their total
    totals: dict[str, int] = field(default_factory=dict)  # true count per kind (default: listed)
    offset: int = 0  # a page (``report_page``): where it starts among all items, kinds end to end
    capped: tuple[str, ...] = ()  # kinds whose total is a lower bound ("10,000+": only missing)
    # Not anomalies: messages deliberately not sent (suppressed address) or bounced (now suppressed),
    # in the whole queue, as ``status`` counts them.
    withheld: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """The true number of each kind, also of a list cut short."""
        return {name: self.totals.get(name, len(getattr(self, name))) for name in ANOMALIES}

    @property
    def anomalies(self) -> int:
        return sum(self.counts.values())

    @property
    def listed(self) -> int:
        return sum(len(getattr(self, name)) for name in ANOMALIES)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape: the six keys, each a list of objects, times in ISO UTC; when a
        list stops short of its total, also ``truncated`` (the cut kinds) and ``totals`` (every
        kind's true count; ``capped`` names a total that is a lower bound), so a report without
        a cut list keeps exactly the six keys; and ``withheld``, the queue's suppressed and
        bounced counts, when there are any."""
        out: dict[str, Any] = {name: [_jsonable(asdict(item)) for item in getattr(self, name)]
                               for name in ANOMALIES}
        if self.truncated:
            out["truncated"] = list(self.truncated)
            out["totals"] = self.counts
        if self.capped:
            out["capped"] = list(self.capped)
        if any(self.withheld.values()):
            out["withheld"] = self.withheld
        return out


def parse_since(text: str, now: float) -> tuple[float, float | None]:
    """``24h``/``90m``/``7d``/``2w``/``30s`` or an ISO 8601 time -> (since, span or None).

    A time without an offset is UTC. Raises ``UsageError`` with the accepted forms."""
    span = span_seconds(text, unit_required=True)
    if span is not None:
        if span > now:
            raise UsageError(f"--since {text!r}: reaches back before 1970; give a shorter span or a time")
        return now - span, span
    return parse_time(text, "--since"), None


LAST_SECOND = 253402214400.0  # 9999-12-31T00:00:00Z: a day of room for any offset


def parse_time(text: str, flag: str) -> float:
    try:
        stamp = parse_iso(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a duration like 90m, 24h, 7d or an ISO 8601 "
                         "time like 2025-03-09T07:00:00+01:00") from None
    if not 0 <= stamp < LAST_SECOND:
        raise UsageError(f"{flag} {text!r}: outside 1970-01-01 to 9999-12-30")
    return stamp


# ``--json`` keeps the names it has always had; in Python a Message-ID is ``mid``.
_JSON_KEYS = {"mid": "message_id", "logged_mid": "logged_message_id", "mids": "message_ids"}


def _jsonable(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {_JSON_KEYS.get(k, k): _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if (key == "at" or key.endswith(("_at", "_until")) or key == "since") and \
            isinstance(value, int | float) and not isinstance(value, bool):
        return iso(value)
    return value
