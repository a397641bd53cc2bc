"""Pilot tests of the monitor's panels on a seeded queue: rows, detail, filter, help, bad files.

Every test runs the real app (``App.run_test``) over a real SQLite file in ``tmp_path`` with a
fixed clock; the app reads it through its read-only connection exactly as in production.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from tests.test_store_views import INCIDENT_ROW, ROOT, T0, aseed, fixed_mid
from tui.app import FilterInput, MonitorApp
from tui.screens.detail import DetailScreen
from tui.screens.help import HelpScreen
from tui.widgets.table import RowsTable

SIZE = (120, 40)


def make_app(path: str, **kwargs: object) -> MonitorApp:
    return MonitorApp(path, refresh_every=3600, clock=lambda: T0, actor="tester", **kwargs)  # type: ignore[arg-type]


async def settle(pilot: Pilot[None]) -> None:
    """Let the refresh worker (and any detail or action worker) finish and the screen update."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def press(pilot: Pilot[None], *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def type_filter(pilot: Pilot[None], value: str) -> None:
    """``/``, then the text (set at once: typing it key by key only slows the test), then Enter."""
    await press(pilot, "slash")
    pilot.app.query_one(FilterInput).value = value
    await press(pilot, "enter")


def keys(app: MonitorApp, table_id: str) -> list[str]:
    return [r.key for r in app.screen.query_one(f"#{table_id}", RowsTable).shown_rows]


def cells(app: MonitorApp, table_id: str) -> list[list[str]]:
    return [[str(c) for c in r.cells]
            for r in app.screen.query_one(f"#{table_id}", RowsTable).shown_rows]


def text(app: MonitorApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_queue_panel_lists_scheduled_messages(tmp_path: Path) -> None:
    """Queue shows scheduled rows in claim order, per-campaign counts and the oldest due message."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        assert app.active_tab == "queue"
        assert keys(app, "queue-table") == ["7", "2", "8", "9"]
        assert cells(app, "campaigns") == [["spring", "1", "3", "1m00s ago", ""],
                                           ["welcome", "0", "1", "in 1h00m", ""]]
        summary = text(app, "#queue-panel .summary")
        assert "Due now 1" in summary and "oldest due #7" in summary and "next #2" in summary


async def test_a_load_that_finishes_during_shutdown_is_dropped(tmp_path: Path) -> None:
    """Textual removes widgets one by one on quit; a refresh or report landing then (seen in CI:
    the header already gone, the tabs not yet) is dropped instead of failing the app."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        snap, found = app.snapshot, app.findings
        assert snap is not None and found is not None
        await app.query_one("#header").remove()  # what shutdown does first to some widgets
        app.apply(snap)
        app.apply_findings(found)
    app.apply(snap)  # and after the app has stopped altogether
    app.apply_findings(found)


async def test_in_flight_panel_highlights_stale_claims(tmp_path: Path) -> None:
    """In flight lists each claim with its worker and age, and marks the expired lease stale."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "2")
        rows = cells(app, "inflight-panel-table")
        assert [r[0] for r in rows] == ["5", "6"]
        assert rows[0][3] == "w2" and rows[0][6].startswith("expired 36m40s ago")
        assert rows[1][3] == "w1" and rows[1][5] == "30s ago" and rows[1][6] == "4m30s left"
        assert "1 stale" in text(app, "#inflight-panel .summary")


async def test_workers_panel_tells_alive_dead_and_stopped(tmp_path: Path) -> None:
    """Workers shows pid, host, heartbeat age and alive / presumed dead / stopped."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "3")
        rows = cells(app, "workers-panel-table")
        assert [(r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows] == [
            ("w1", "101", "host-a", "5s ago", "alive", "1"),
            ("w2", "202", "host-b", "50m00s ago", "presumed dead", "1"),
            ("w3", "303", "host-a", "58m20s ago", "stopped", "0")]
        header = text(app, "#header")
        assert "1 alive" in header and "1 presumed dead" in header and "1 stopped" in header


async def test_duplicates_panel_opens_on_the_incident(tmp_path: Path) -> None:
    """At start-up the Duplicates tab is shown with the incident's ghosts and multi-send."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.active_tab == "duplicates"
        rows = cells(app, "duplicates-panel-table")
        kinds = [(r[1], r[2]) for r in rows]
        assert ("ghost", str(INCIDENT_ROW)) in kinds and ("multi-send", str(INCIDENT_ROW)) in kinds
        assert ("unknown", "4") in kinds and ("stale claim", "5") in kinds
        ghosts = {r[6] for r in rows if r[1] == "ghost"}
        assert ghosts == {fixed_mid(INCIDENT_ROW, "3f2a9c0d1e4b5a66"),
                          fixed_mid(INCIDENT_ROW, "9b8c7d6e5f4a3b2c")}
        assert "2 duplicates" not in text(app, "#header")  # 2 ghosts + 1 multi-send
        assert "3 duplicates" in text(app, "#header")


async def test_duplicates_window_changes_with_brackets(tmp_path: Path) -> None:
    """``[`` and ``]`` shorten and lengthen the report window, and the report reruns."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "left_square_bracket", "left_square_bracket", "left_square_bracket")
        assert app.findings is not None and app.findings.span == 3600
        assert "Report over 1h" in text(app, "#duplicates-panel .summary")
        await press(pilot, "right_square_bracket")
        assert app.findings.span == 6 * 3600


@pytest.mark.skipif(not (ROOT / "sample.db").exists(), reason="sample.db not generated yet")
async def test_sample_db_incident_is_visible_at_start(tmp_path: Path) -> None:
    """Opening (a copy of) sample.db lands on Duplicates with the incident's ghosts listed first."""
    path = tmp_path / "sample.db"
    shutil.copy(ROOT / "sample.db", path)
    app = MonitorApp(str(path), refresh_every=3600, clock=time.time, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.active_tab == "duplicates"
        rows = cells(app, "duplicates-panel-table")
        assert rows[0][1] == "ghost"
        assert any(r[1] == "multi-send" and len(r[6].split()) >= 3 for r in rows)


async def test_log_panel_and_filter(tmp_path: Path) -> None:
    """Log lists recent attempts newest first; ``/`` filters by recipient and Escape clears it."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "5")
        assert [r[1] for r in cells(app, "log-panel-table")] == ["6", "10", "5", "4", "3", "2", "1"]
        await type_filter(pilot, "lead@example.com")
        assert [r[1] for r in cells(app, "log-panel-table")] == ["10"]
        assert "filter lead@example.com" in text(app, "#header")
        await press(pilot, "slash", "escape")
        assert len(cells(app, "log-panel-table")) == 7
        await type_filter(pilot, "failed")
        assert [r[3] for r in cells(app, "log-panel-table")] == ["failed"]


async def test_filter_belongs_to_its_tab(tmp_path: Path) -> None:
    """A Queue search (a campaign's name) lists that campaign's messages in every state, leaves
    the other tabs unfiltered, and Escape in the table clears it."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        await type_filter(pilot, "welcome")
        assert keys(app, "found-table") == ["8", "5", "6", "4"]  # by state, then row
        assert "4 of 4" in text(app, "#queue-panel .summary")
        await press(pilot, "3")
        assert len(keys(app, "workers-panel-table")) == 3
        await press(pilot, "1", "escape")
        assert app.filters["queue"] == "" and not app.query_one("#found-table").display
        assert keys(app, "queue-table") == ["7", "2", "8", "9"]


async def test_detail_screen_shows_every_attempt(tmp_path: Path) -> None:
    """Enter on a row opens the message: fields, Message-ID and each SendLog attempt."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1", "down", "enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.row_id == 2
        fields = text(app, "#fields")
        assert fixed_mid(2) in fields and "b@example.com" in fields and "scheduled" in fields
        attempts = cells(app, "attempts")
        assert [(r[1], r[2], r[6]) for r in attempts] == [("1", "retry", "451 4.7.1 greylisted")]
        await press(pilot, "escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_help_and_tab_keys(tmp_path: Path) -> None:
    """``?`` opens the key help, Escape closes it, and the digit keys switch tabs."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await press(pilot, "escape")
        for key, tab in (("5", "log"), ("2", "inflight"), ("4", "duplicates")):
            await press(pilot, key)
            assert app.active_tab == tab


async def test_q_quits(tmp_path: Path) -> None:
    """``q`` leaves the app."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")


@pytest.mark.parametrize(("make", "expected"), [
    (None, "no queue database at"),
    (lambda p: p.write_bytes(b"this is not sqlite at all" * 100), "not a sender queue database"),
    (_foreign, "not a sender queue database"),
    (lambda p: p.mkdir(), "cannot"),
])
async def test_bad_database_paths_show_a_message(tmp_path: Path, make: object,
                                                 expected: str) -> None:
    """A missing file, a non-SQLite file, someone else's database or a folder: a sentence on screen."""
    path = tmp_path / "queue.db"
    if make is not None:
        make(path)  # type: ignore[operator]
    app = make_app(str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        problem = app.query_one("#problem", Static)
        assert problem.display
        assert expected in str(problem.render())
        assert "Traceback" not in str(problem.render())


async def test_locked_database_shows_a_message(tmp_path: Path) -> None:
    """A file locked exclusively by another process gives a clear message, not a traceback."""
    path = await aseed(tmp_path / "queue.db")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        app = make_app(path)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert "locked" in str(app.query_one("#problem", Static).render())
    finally:
        holder.close()


async def test_refreshes_keep_up_while_three_writers_commit(tmp_path: Path) -> None:
    """Three threads committing durable writes in turn never stall or break the refresh."""
    path = await aseed(tmp_path / "queue.db")
    stop = threading.Event()

    def writer(n: int) -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        conn.execute("PRAGMA synchronous = FULL")
        while not stop.is_set():
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE workers SET heartbeat_at = heartbeat_at WHERE id = ?", (n,))
                conn.execute("COMMIT")
            except sqlite3.OperationalError:  # a daemon waits out a busy lock the same way
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            time.sleep(0.002)
        conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2, 3)]
    app = MonitorApp(path, refresh_every=0.05, clock=lambda: T0, actor="tester")
    try:
        for t in threads:
            t.start()
        async with app.run_test(size=SIZE) as pilot:
            refreshes, last = 0, app.snapshot
            started = time.monotonic()
            while refreshes < 5 and time.monotonic() - started < 10:
                await pilot.pause(0.05)
                if app.snapshot is not last and app.snapshot is not None:
                    assert app.snapshot.error is None
                    refreshes, last = refreshes + 1, app.snapshot
            assert refreshes >= 5
            await press(pilot, "1")
            assert app.active_tab == "queue"
    finally:
        stop.set()
        for t in threads:
            t.join()


