"""Health at a glance: the rates line with a 30-minute sparkline, and the red incident banner.

The banner appears when sending is paused (who, when, the reason) or when failures dominate
the last five minutes (a failure storm: the count and the commonest reply), whatever tab is open.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from sender.store.health import SPARK_MINUTES, Health

from .. import fmt
from ..source import Snapshot


class HealthBar(Horizontal):
    """``sent 12/min · retried 0/min · failed 340/min`` and failures per minute as a sparkline."""

    def compose(self) -> ComposeResult:
        yield Sparkline([0.0] * SPARK_MINUTES, id="spark")
        yield Static(id="rates")

    def show(self, snap: Snapshot | None) -> None:
        h = snap.health if snap else None
        if h is None:
            self.display = False
            return
        self.display = True
        m = h.per_minute
        text = (f"[dim]failures/min, {SPARK_MINUTES}m[/dim]  last minute: sent "
                f"[b $success]{m.sent:,}[/] retried [b $warning]{m.retried:,}[/] failed "
                f"[b $error]{m.failed:,}[/]")
        if h.top_error:
            text += (f"  ·  top error 5m: [b]{fmt.lit(fmt.short(h.top_error, 48))}[/] "
                     f"({h.top_error_count:,})")
        if h.pace:
            text += "  ·  [b $warning]relay throttling, pace[/] " + fmt.lit("; ".join(h.pace.values()))
        if h.tls_insecure:
            text += (f"  ·  [b $error]TLS verification off[/] ({fmt.lit(h.tls_insecure)} runs "
                     "--tls-insecure)")
        self.query_one("#rates", Static).update(text)
        data = [float(x.failed + x.retried) for x in h.minutes]
        spark = self.query_one(Sparkline)
        if list(spark.data or []) != data:
            spark.data = data


class Banner(Static):
    """Red, only during an incident."""

    def show(self, snap: Snapshot | None) -> None:
        lines = banner_lines(snap.health if snap else None, snap.now if snap else 0.0)
        self.display = bool(lines)
        self.update("\n".join(lines))


def banner_lines(h: Health | None, now: float) -> list[str]:
    if h is None:
        return []
    out = []
    if h.pause_reason is not None:
        out.append(f"⏸ SENDING PAUSED by {fmt.lit(h.paused_by)} at {fmt.when(h.paused_at)} UTC "
                   f"({fmt.ago(h.paused_at, now)}): {fmt.lit(h.pause_reason)}")
    for name, reason in list(h.paused_campaigns.items())[:3]:
        out.append(f"⏸ campaign {fmt.lit(name)} paused: {fmt.lit(reason)}")
    if h.storm:
        r = h.recent
        line = (f"⚠ FAILURE STORM: {r.failed + r.retried:,} failed or retried, {r.sent:,} sent "
                "in 5 min")
        if h.top_error:
            line += f"; mostly {fmt.lit(fmt.short(h.top_error, 50))}"
        out.append(line + "  ·  /failed, then A")
    return out
