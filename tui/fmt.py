"""Formatting for display: times and durations come from ``sender.times`` (one module for the
report and the monitor; relative times against the app's injected clock), text helpers live here.
"""

from __future__ import annotations

from sender.times import ago, when, window
from sender.times import clock as span

__all__ = ["ago", "dedupe_key", "lit", "plural", "short", "span", "when", "window"]


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
