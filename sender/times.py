"""Times and durations, formatted and parsed in one place (the report, the monitor, the policy).

Absolute times are shown in UTC so screens and reports from different hosts (and snapshot tests)
agree; a time given without an offset is read as UTC.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])?\s*$", re.IGNORECASE)


# --- this host's clock -----------------------------------------------------------------------

SKEW_ENV = "SENDER_TEST_CLOCK_OFFSET"
"""Seconds added to this host's clock: a test-only skew, so one machine can play a host whose
clock is minutes off (the database-time tests). Never set in production."""


def _skew() -> float:
    try:
        return float(os.environ.get(SKEW_ENV) or 0.0)
    except ValueError:
        return 0.0


_SKEW = _skew()


def host_time() -> float:
    """This host's wall clock in Unix seconds (``time.time()``, plus the test-only skew)."""
    return time.time() + _SKEW


# --- parsing ---------------------------------------------------------------------------------

def span_seconds(text: str, *, unit_required: bool = False) -> float | None:
    """``"30s"``, ``"90m"``, ``"48h"``, ``"7d"``, ``"2w"`` (and a bare ``"90"`` as seconds unless
    ``unit_required``) to seconds; None if ``text`` is not such a span."""
    match = _SPAN.match(str(text))
    if not match or (unit_required and not match.group(2)):
        return None
    return float(match.group(1)) * UNITS[(match.group(2) or "s").lower()]


def parse_iso(text: str) -> float:
    """ISO 8601 (``Z`` or an offset; none means UTC) to Unix seconds; ``ValueError`` if not one."""
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


# --- formatting ------------------------------------------------------------------------------

def when(stamp: float | None) -> str:
    """Unix seconds -> ``2025-03-09 07:46:00`` (UTC); ``-`` for none."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(stamp: float | None) -> str | None:
    """Unix seconds -> ``2025-03-09T07:46:00Z`` (fractions kept only when present)."""
    if stamp is None:
        return None
    moment = datetime.fromtimestamp(stamp, UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def period(seconds: float) -> str:
    """A rule's period in its largest whole unit: ``60`` -> ``1m``, ``86400`` -> ``1d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def span(seconds: float) -> str:
    """A report window's length: ``86400`` -> ``24h``, ``604800`` -> ``7d``, ``5400`` -> ``90m``."""
    if seconds < 2 * 86400 and seconds % 3600 == 0 and seconds:
        return f"{int(seconds // 3600)}h"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{int(seconds)}s"


def clock(seconds: float) -> str:
    """A short elapsed time: ``42s``, ``3m05s``, ``2h10m``, ``3d4h``, ``45d``, ``8.1y``."""
    s = int(abs(seconds))
    if s >= 365 * 86400:
        return f"{s / (365.25 * 86400):.1f}y"
    if s >= 30 * 86400:
        return f"{s // 86400}d"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def ago(stamp: float | None, now: float) -> str:
    """``5s ago`` for the past, ``in 3m00s`` for the future."""
    if stamp is None:
        return "-"
    delta = now - stamp
    return f"{clock(delta)} ago" if delta >= 0 else f"in {clock(delta)}"


def window(seconds: float) -> str:
    """The monitor's window choice: ``1h``, ``24h``, ``7d``."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return clock(seconds)
