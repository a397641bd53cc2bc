"""The duplicate report: every way a message can have gone out other than exactly once.

``model`` holds the findings (frozen dataclasses, JSON), ``queries`` the windows and
``build_report`` (over the store's reads in ``sender.store.reports``), ``text`` the plain-text
rendering. The monitor and the command line both call ``build_report``.
"""

from __future__ import annotations

from .model import (
    ANOMALIES,
    LIMIT,
    Ghost,
    Missing,
    MultiSend,
    RepeatedMessageId,
    Report,
    Sighting,
    StaleClaim,
    UnknownMessage,
    Window,
    iso,
    parse_since,
    parse_time,
)
from .queries import build_report, report_page, report_totals, resolve_window, window_for

__all__ = [
    "ANOMALIES", "LIMIT", "Ghost", "Missing", "MultiSend", "RepeatedMessageId", "Report", "Sighting",
    "StaleClaim", "UnknownMessage", "Window", "build_report", "iso", "parse_since", "parse_time",
    "report_page", "report_totals", "resolve_window", "window_for",
]
