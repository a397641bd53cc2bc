"""Operator actions from the monitor: each changes exactly the intended row and writes its audit.

Actions go through ``sender.store.operator`` on a short-lived writable connection after a confirmation;
the tests drive them with keys, then read the queue back with plain sqlite3 (or psycopg: the
actions run on both engines through the ``queue`` fixture) and compare every row of ``messages``
and ``send_log`` before and after.
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.test_store_views import T0, aseed, rows
from tests.test_tui_app import SIZE, make_app, press, settle
from tui.app import MonitorApp
from tui.screens.confirm import Choose
from tui.widgets.table import RowsTable


def tables(path: str) -> dict[str, dict[object, tuple[object, ...]]]:
    return {name: {r[0]: r for r in rows(path, f"SELECT * FROM {name} ORDER BY id")}
            for name in ("messages", "send_log")}


def changed(before: dict[str, dict[object, tuple[object, ...]]],
            after: dict[str, dict[object, tuple[object, ...]]]) -> dict[str, list[object]]:
    return {name: sorted(k for k in after[name] if before[name].get(k) != after[name][k])  # type: ignore[type-var]
            for name in before}


def audit(path: str) -> list[tuple[object, ...]]:
    return rows(path, "SELECT at, actor, action, message_id FROM audit ORDER BY id")


async def select(pilot: Pilot[None], tab_key: str, table_id: str, key: str) -> None:
    """Switch tab and put the cursor on the row with ``key``."""
    await press(pilot, tab_key)
    table = pilot.app.query_one(f"#{table_id}", RowsTable)
    table.focus()
    table.move_cursor(row=[r.key for r in table.shown_rows].index(key))
    await settle(pilot)


async def test_cancel_scheduled_message(queue: str) -> None:
    """``c`` then ``y`` cancels the selected scheduled message and nothing else."""
    path = await aseed(queue)
    before = tables(path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "1", "queue-table", "9")
        await press(pilot, "c")
        assert isinstance(app.screen, Choose)
        await press(pilot, "y")
        assert "9" not in [r.key for r in app.query_one("#queue-table", RowsTable).shown_rows]
    assert rows(path, "SELECT state FROM messages WHERE id = 9") == [("cancelled",)]
    assert changed(before, tables(path)) == {"messages": [9], "send_log": []}
    assert audit(path) == [(T0, "tester", "cancel", 9)]


async def test_retry_failed_message_from_the_log(queue: str) -> None:
    """``t`` on a failed attempt in the Log re-schedules that message with the same Message-ID."""
    path = await aseed(queue)
    before = tables(path)
    mid = rows(path, "SELECT message_id FROM messages WHERE id = 3")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "5", "log-panel-table", "3")  # attempt 3 is message 3's
        await press(pilot, "t", "y")
    assert rows(path, "SELECT state, attempts FROM messages WHERE id = 3") == [("scheduled", 0)]
    assert rows(path, "SELECT message_id FROM messages WHERE id = 3") == mid
    assert changed(before, tables(path)) == {"messages": [3], "send_log": []}
    assert audit(path) == [(T0, "tester", "retry", 3)]


@pytest.mark.parametrize(("key", "state", "log_status"), [
    ("s", "sent", "sent"), ("f", "failed", "failed"), ("r", "scheduled", "requeued")])
async def test_resolve_unknown(queue: str, key: str, state: str, log_status: str) -> None:
    """``u`` on an unknown message offers sent / failed / requeue; the choice settles that row only."""
    path = await aseed(queue)
    before = tables(path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        duplicates = app.query_one("#duplicates-panel-table", RowsTable)
        await select(pilot, "4", "duplicates-panel-table",
                     next(r.key for r in duplicates.shown_rows if r.key.startswith("unknown:4")))
        await press(pilot, "u")
        assert isinstance(app.screen, Choose)
        await press(pilot, key)
    assert rows(path, "SELECT state FROM messages WHERE id = 4") == [(state,)]
    assert rows(path, "SELECT status FROM send_log WHERE message_id = 4") == [(log_status,)]
    assert changed(before, tables(path)) == {"messages": [4], "send_log": [4]}
    assert audit(path) == [(T0, "tester", f"resolve-{'requeue' if key == 'r' else state}", 4)]


async def test_pause_and_resume_sending(queue: str) -> None:
    """``p`` asks why, pauses every daemon through the flag with that reason (header and banner
    show who, when and why); ``p`` again resumes."""
    path = await aseed(queue)
    before = tables(path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "p")
        app.screen.query_one(Input).value = "relay outage"
        await press(pilot, "enter")
        assert rows(path, "SELECT value, set_by FROM flags WHERE key = 'paused'") == [
            ("relay outage", "tester")]
        assert "SENDING PAUSED" in str(app.query_one("#header").render())
        banner = str(app.query_one("#banner").render())
        assert "by tester" in banner and "relay outage" in banner and "2025-06-15" in banner
        await press(pilot, "p", "y")
        assert not app.query_one("#banner").display
    assert rows(path, "SELECT key FROM flags WHERE key = 'paused'") == []
    assert changed(before, tables(path)) == {"messages": [], "send_log": []}
    assert audit(path) == [(T0, "tester", "pause", None), (T0, "tester", "resume", None)]


async def test_action_from_the_detail_screen(queue: str) -> None:
    """The action keys act on the message the detail screen shows."""
    path = await aseed(queue)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "1", "queue-table", "8")
        await press(pilot, "enter", "c", "y")
        assert "cancelled" in str(app.screen.query_one("#fields").render())
    assert rows(path, "SELECT id FROM messages WHERE state = 'cancelled'") == [(8,)]


async def test_wrong_state_and_backing_out_change_nothing(queue: str) -> None:
    """Cancel on a sent message is refused before any dialog; Escape in a dialog changes nothing."""
    path = await aseed(queue)
    before = tables(path)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "5", "log-panel-table", "1")  # message 1 is sent
        await press(pilot, "c")
        assert not isinstance(app.screen, Choose)
        await select(pilot, "1", "queue-table", "9")
        await press(pilot, "c", "escape")
        await press(pilot, "p", "n")
        assert not isinstance(app.screen, Choose)
    assert changed(before, tables(path)) == {"messages": [], "send_log": []}
    assert audit(path) == []


async def test_read_only_hides_every_action(queue: str) -> None:
    """With ``--read-only`` the action keys are gone from the footer and the palette, no key
    opens a dialog or writes anything, and the header says so."""
    path = await aseed(queue)
    before = tables(path)
    app = MonitorApp(path, refresh_every=3600, clock=lambda: T0, actor="tester", read_only=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert "READ-ONLY" in str(app.query_one("#header").render())
        await select(pilot, "1", "queue-table", "9")
        await press(pilot, "c", "p")
        await select(pilot, "5", "log-panel-table", "3")
        await press(pilot, "t", "u", "space", "A")
        assert not isinstance(app.screen, Choose)
        shown = set(app.screen.active_bindings)
        assert not shown & {"c", "t", "u", "p", "space", "A"} and {"q", "slash"} <= shown
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Search" in titles and not {"Pause", "Cancel", "Act on all"} & set(titles)
    assert changed(before, tables(path)) == {"messages": [], "send_log": []}
    assert audit(path) == [] and rows(path, "SELECT count(*) FROM flags") == [(0,)]
