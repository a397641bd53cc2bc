"""The report as plain text: one table per kind of anomaly, for a terminal or a cron mail.

Plain aligned columns rather than a rich table, so the output is the same on a terminal, in a
pipe and in a test, and Message-IDs are never truncated (operators grep for them).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..times import span, when
from .model import LABELS, PLURALS, TITLES, Ghost, Report, Window


def describe_window(window: Window, now: float) -> str:
    text = f"{when(window.since)} .. {when(window.until)} UTC ({span(window.until - window.since)})"
    if window.anchored:
        text += (f"; nothing happened in the {span(window.until - window.since)} before now, "
                 "so the window ends at the newest activity")
    elif abs(window.until - now) > 1:
        text += f"; ends {span(abs(now - window.until))} before now"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          indent: str = "  ") -> list[str]:
    """Aligned columns; a cell with newlines spans several lines."""
    cells = [[str(c).split("\n") for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(x) for x in lines))

    def line(parts: Sequence[str]) -> str:
        return (indent + "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True))).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    for row in cells:
        for n in range(max(len(lines) for lines in row)):
            out.append(line([lines[n] if n < len(lines) else "" for lines in row]))
    return out


def _section(report: Report, name: str) -> list[str]:
    items = getattr(report, name)
    label, meaning = TITLES[name]
    if name == "missing" and not report.missing_checked:
        return [f"{label}: not checked (name the mailbox with --maildir or --mbox)"]
    if not items:
        return [f"{label}: none"]
    more = "+" if name in report.capped else ""
    shown = (f"first {len(items):,} of {report.counts[name]:,}{more}" if name in report.truncated
             else f"{len(items):,}")
    head = f"{label} ({shown}): {meaning}"
    rows: list[list[object]]
    if name == "ghosts":
        headers = ["time (UTC)", "recipient", "campaign", "Message-ID", "traced to"]
        rows = [[when(g.at), g.recipient or "-", g.campaign or "-",
                 g.mid + (f" (x{g.copies})" if g.copies > 1 else ""), _trace(g)]
                for g in report.ghosts]
    elif name == "repeated_message_ids":
        headers = ["first / last (UTC)", "recipient", "campaign", "Message-ID", "copies", "SendLog"]
        rows = [[f"{when(r.first_at)}\n{when(r.last_at)}", r.recipient, r.campaign or "-",
                 r.mid + (f"\nrow {r.row}" if r.row else ""), r.copies,
                 ", ".join(r.attempts) or "not logged"] for r in report.repeated_message_ids]
    elif name == "multi_sends":
        headers = ["recipient", "campaign", "Message-IDs", "time (UTC)", "seen as"]
        rows = [[m.recipient, m.campaign, "\n".join(s.mid for s in m.mids),
                 "\n".join(when(s.at) for s in m.mids),
                 "\n".join(_seen(s.logged, s.observed) for s in m.mids)]
                for m in report.multi_sends]
    elif name == "unknown":
        headers = ["since (UTC)", "row", "recipient", "campaign", "Message-ID", "reason"]
        rows = [[when(u.since), u.row, u.recipient, u.campaign, u.mid,
                 _cut(u.reason) + ("\nseen in a mailbox: run reconcile" if u.observed else "")]
                for u in report.unknown]
    elif name == "stale_claims":
        headers = ["lease ended (UTC)", "row", "recipient", "campaign", "worker", "last heartbeat"]
        rows = [[when(c.lease_until), c.row, c.recipient, c.campaign, c.worker or "-",
                 when(c.heartbeat_at) + (" (stopped)" if c.worker_stopped else "")]
                for c in report.stale_claims]
    else:
        headers = ["sent (UTC)", "row", "recipient", "campaign", "Message-ID"]
        rows = [[when(m.sent_at), m.row, m.recipient, m.campaign, m.mid]
                for m in report.missing]
    return [head, *table(headers, rows)]


def _trace(g: Ghost) -> str:
    if g.row is None:
        return "no queue row"
    text = f"row {g.row} ({g.row_state})"
    if g.traced_by == "recipient+time":
        text += ", by recipient and time"
    if g.logged_mid and g.logged_mid != g.mid:
        text += f"\nlogged as {g.logged_mid}"
    return text


def _seen(logged: bool, observed: int) -> str:
    parts = ["logged"] if logged else []
    if observed:
        parts.append(f"observed x{observed}" if observed > 1 else "observed")
    return ", ".join(parts) or "-"


def _cut(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(report: Report) -> str:
    counts = report.counts
    if not report.anomalies:
        return "no anomalies found"
    parts = [f"{n:,}{'+' if name in report.capped else ''} {(LABELS if n == 1 else PLURALS)[name]}"
             for name, n in counts.items() if n]
    noun = "anomaly" if report.anomalies == 1 else "anomalies"
    text = f"{report.anomalies:,}{'+' if report.capped else ''} {noun}: " + ", ".join(parts)
    if report.truncated:
        text += f" ({report.listed:,} listed: --limit shows more)"
    return text


def withheld(report: Report) -> str:
    """Not anomalies, but what an operator asks next: how many were not sent on purpose."""
    n = report.withheld
    return (f"WITHHELD (not anomalies): {n.get('suppressed', 0):,} suppressed, never sent; "
            f"{n.get('bounced', 0):,} bounced, address now suppressed (python -m sender suppress list)")


def render(report: Report, *, title: str) -> str:
    """The whole report: title, window, one section per kind (ghosts first), a summary line."""
    lines = [title, f"window: {describe_window(report.window, report.now)}", ""]
    for name in TITLES:
        section = _section(report, name)
        lines += [*section, ""] if len(section) > 1 else section
    if lines[-1]:
        lines.append("")
    if any(report.withheld.values()):
        lines += [withheld(report), ""]
    lines.append(summary(report))
    return "\n".join(lines) + "\n"
