"""Formatting of times and durations for display.

Absolute times are shown in UTC so that screens from different hosts (and snapshot tests)
agree; relative times are computed against the app's injected clock.
"""

from __future__ import annotations

import time


def when(ts: float | None) -> str:
    """``2025-06-15 15:06:40`` (UTC), or a dash."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def span(seconds: float) -> str:
    """A short duration: ``42s``, ``3m05s``, ``2h10m``, ``3d4h``, ``45d``, ``8.1y``."""
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


def ago(ts: float | None, now: float) -> str:
    """``5s ago`` for the past, ``in 3m00s`` for the future."""
    if ts is None:
        return "-"
    delta = now - ts
    return f"{span(delta)} ago" if delta >= 0 else f"in {span(delta)}"


def window(seconds: float) -> str:
    """A report window: ``1h``, ``24h``, ``7d``."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return span(seconds)


def dedupe_key(key: str) -> str:
    """A dedupe key as the operator wrote its parts: ``spring-webinar · erin@example.com``
    (the parts are joined with the unit separator, ``\\x1f``, which prints as nothing)."""
    return " · ".join(key.split("\x1f"))


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def short(text: str | None, width: int) -> str:
    """One line, at most ``width`` characters."""
    line = " ".join((text or "").split())
    return line if len(line) <= width else line[: width - 1] + "…"


def lit(text: str | None) -> str:
    """``text`` as literal Textual markup: every ``[`` escaped (``textual.markup.escape``
    leaves ``[ `` alone, which the parser then eats), and a trailing backslash kept from
    escaping the tag that follows."""
    out = (text or "").replace("[", "\\[")
    return out + "\u200b" if out.endswith("\\") else out
