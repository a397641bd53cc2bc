"""The monitor's totals are the true ones (issue 15): Duplicates counted and paged, campaigns exact.

Pilot tests over real SQLite files from ``tests/findings_queue.py``: more than a page of ghosts,
repeated Message-IDs, multi-sends, unknown messages and stale claims; and three campaigns of
1,500 scheduled messages each, which the old 2,000-row sample miscounted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sender.store import views
from sender.store.db import open_db
from tests import findings_queue as fq
from tests.test_store_views import T0
from tests.test_tui_app import SIZE, cells, keys, make_app, press, settle, text, type_filter
from tui.app import MonitorApp
from tui.widgets.header import StatusHeader


async def test_duplicates_show_true_totals_and_page_to_the_end(tmp_path: Path) -> None:
    """The tab counts every kind in full (the header's unknown and stale figures match), shows
    "1-100 of 615", and ``n`` reaches the last page (the newest stale claims); ``N`` goes back."""
    path = await fq.build(tmp_path / "q.db")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        summary = text(app, "#duplicates-panel .summary")
        assert (f"{fq.GHOSTS} ghosts, {fq.REPEATED} repeated Message-IDs, {fq.MULTI} multi-sends, "
                f"{fq.UNKNOWN} unknown, {fq.STALE} stale claims") in summary
        assert f"1-100 of {fq.TOTAL} findings: ghosts 1-100" in summary
        header = str(app.query_one(StatusHeader).render())
        assert f"{fq.UNKNOWN} unknown, {fq.STALE} stale claims" in header
        assert len(keys(app, "duplicates-panel-table")) == 100
        for _ in range(fq.TOTAL // 100):
            await press(pilot, "n")
        summary = text(app, "#duplicates-panel .summary")
        assert f"601-{fq.TOTAL} of {fq.TOTAL} findings: stale claims 116-{fq.STALE}" in summary
        rows = [int(r[2]) for r in cells(app, "duplicates-panel-table")]
        last_stale = sqlite3.connect(path).execute(
            "SELECT id FROM messages WHERE state = 'sending' ORDER BY lease_until DESC").fetchone()[0]
        assert len(rows) == fq.TOTAL - 600 and last_stale in rows
        await press(pilot, "n")
        assert f"601-{fq.TOTAL} of {fq.TOTAL}" in text(app, "#duplicates-panel .summary")
        await press(pilot, "N")
        summary = text(app, "#duplicates-panel .summary")
        assert f"501-600 of {fq.TOTAL} findings: stale claims 16-115" in summary
        await press(pilot, "N", "N", "N", "N")
        summary = text(app, "#duplicates-panel .summary")
        assert f"101-200 of {fq.TOTAL} findings: ghosts 101-120, repeated Message-IDs 1-80" in summary


async def test_a_new_window_starts_at_the_first_page(tmp_path: Path) -> None:
    """``]`` (another window) goes back to the first page of the report."""
    app = make_app(await fq.build(tmp_path / "q.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4", "n", "n")
        assert app.findings is not None and app.findings.offset == 200
        await press(pilot, "right_square_bracket")
        assert app.findings.offset == 0
        assert f"1-100 of {fq.TOTAL}" in text(app, "#duplicates-panel .summary")


async def test_campaign_counts_are_exact_beyond_the_old_sample(tmp_path: Path) -> None:
    """Three campaigns of 1,500 scheduled messages: each is listed with its exact scheduled and
    due counts (the first 2,000 in claim order held alpha, a third of bravo and no charlie)."""
    path = await fq.build_campaigns(tmp_path / "c.db")
    expected = [["alpha", "1,500", "1,500"], ["bravo", "750", "1,500"], ["charlie", "0", "1,500"]]
    async with open_db(path, readonly=True) as db:
        view = await views.queue_view(db, T0)
    assert [(c.campaign, c.due, c.scheduled) for c in view.campaigns] == [
        ("alpha", 1500, 1500), ("bravo", 750, 1500), ("charlie", 0, 1500)]
    assert [c.oldest_due_at for c in view.campaigns] == list(fq.DUE)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        assert [row[:3] for row in cells(app, "campaigns")] == expected
        summary = text(app, "#queue-panel .summary")
        assert "Due now 2,250" in summary and "cover" not in summary
        await type_filter(pilot, "campaign:charlie")
        assert "of 1,500 matching" in text(app, "#queue-panel .summary")


async def test_slow_campaign_counts_are_read_less_often(tmp_path: Path) -> None:
    """Per-campaign counts that take long are not re-read on every refresh: until ten times
    their duration has passed, the Queue shows the last counts read and says as of when."""
    path = await fq.build_campaigns(tmp_path / "c.db")
    now = [T0]
    app = MonitorApp(path, refresh_every=3600, clock=lambda: now[0], actor="tester")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        app._campaigns_took = 100.0  # as if they had taken 100 s: due again in 1,000 s
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO recipients(id, email) VALUES (99999, 'new@example.com')")
            conn.execute("INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, "
                         "due_at, created_at, updated_at) VALUES (99999, 1, 99999, 'new', '<new@x>', "
                         "?, ?, ?)", (T0 - 1, T0, T0))
        now[0] = T0 + 5
        await press(pilot, "r")
        assert cells(app, "campaigns")[0][:3] == ["alpha", "1,500", "1,500"]
        assert "campaign counts as of 5s ago" in text(app, "#queue-panel .summary")
        assert "Due now 2,256" in text(app, "#queue-panel .summary")  # 5 s later: 5 more due
        app._campaigns_took = 0.0
        await press(pilot, "r")
        assert cells(app, "campaigns")[0][:3] == ["alpha", "1,501", "1,501"]
        assert "as of" not in text(app, "#queue-panel .summary")
