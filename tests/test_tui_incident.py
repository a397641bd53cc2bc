"""The monitor in an incident (issue 15): search the store, see the storm, fix thousands at once.

Pilot tests over real SQLite files: the failure storm of ``tests/storm.py`` (built through the
real write path), the shared seed of ``tests/test_store_views.py``, and a generated queue of
120,000 rows (one ``INSERT ... SELECT`` from a recursive CTE, once per session) for search at
scale. Every change the monitor makes is read back with plain sqlite3.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import Sparkline

from sender.store.db import open_db
from tests import storm
from tests.conftest import Cli
from tests.test_store_views import INCIDENT_ROW, T0, aseed, rows
from tests.test_tui_app import SIZE, cells, keys, make_app, press, settle, text, type_filter
from tui import fmt
from tui.app import MonitorApp
from tui.screens.confirm import Choose
from tui.screens.detail import DetailScreen
from tui.screens.help import HELP, HelpScreen
from tui.widgets.table import FollowTable, RowsTable

BIG = 120_000


@pytest.fixture(scope="session")
def big_queue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120,000 messages (every tenth failed, every hundredth unknown, the rest sent), made in
    one statement per table; the triggers keep counts, FTS and pairs as enqueue would."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    import asyncio

    async def init() -> None:
        async with open_db(str(path), create=True):
            pass
    asyncio.run(init())
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO campaigns(id, name, created_at) VALUES (1, 'bulk', 0), (2, 'other', 0)")
        conn.execute(
            "INSERT INTO recipients(id, email) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
            f"SELECT i + 1 FROM n WHERE i < {BIG}) SELECT i, printf('user%06d@example.com', i) FROM n")
        conn.execute(
            "INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, "
            "due_at, attempts, last_reply, created_at, updated_at) "
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BIG}) "
            "SELECT i, 1 + (i % 2), i, 'k' || i, '<' || i || '.x@example.org>', "
            "CASE WHEN i % 100 = 0 THEN 'unknown' WHEN i % 10 = 0 THEN 'failed' ELSE 'sent' END, "
            f"{T0} - i, 1, CASE WHEN i % 10 = 0 THEN '550 5.1.1 no such user' ELSE '250 ok' END, "
            f"{T0} - 90000, {T0} - i FROM n")
    conn.close()
    return path


async def test_search_finds_a_row_near_the_end_of_a_big_queue(big_queue: Path) -> None:
    """On 120,000 rows, a recipient fragment of a row near the end is found with "1 of 1", a
    state list shows its true total, and a page of the next rows follows."""
    app = make_app(str(big_queue))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        started = time.perf_counter()
        await type_filter(pilot, "user119990")
        took = time.perf_counter() - started
        assert keys(app, "found-table") == ["119990"]
        assert "1 of 1" in text(app, "#queue-panel .summary")
        assert took < 5, took
        await type_filter(pilot, "#119999")
        assert keys(app, "found-table") == ["119999"]
        await type_filter(pilot, "failed")
        summary = text(app, "#queue-panel .summary")
        assert f"1-100 of {BIG // 10 - BIG // 100:,}" in summary
        first = keys(app, "found-table")
        await press(pilot, "n")
        assert "101-200 of" in text(app, "#queue-panel .summary")
        assert not set(first) & set(keys(app, "found-table"))
        await type_filter(pilot, "campaign:bulk reply:5.1.1")  # the failed rows, all in "bulk"
        assert f"of {BIG // 10 - BIG // 100:,} matching" in text(app, "#queue-panel .summary")
        await type_filter(pilot, "example")  # every address: more than the count goes
        assert "1-100 of 50,000+ matching" in text(app, "#queue-panel .summary")
        await type_filter(pilot, "campaign:other reply:5.1.1")
        assert "0 of 0" in text(app, "#queue-panel .summary")


async def test_sort_by_column_in_the_store(tmp_path: Path) -> None:
    """``s`` sorts the Queue's search in SQL by the next column; a header click sorts by that one."""
    app = make_app(await storm.build(tmp_path / "q.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        await type_filter(pilot, "failed")
        await press(pilot, "s")
        assert app.queue_query.order == "-id"
        ids = [int(k) for k in keys(app, "found-table")]
        assert ids == sorted(ids, reverse=True) and len(ids) == 20
        await press(pilot, "s")
        assert app.queue_query.order == "recipient"
        emails = [r[1] for r in cells(app, "found-table")]
        assert emails == sorted(emails)
        table = app.query_one("#found-table", RowsTable)
        table.sort_column = None
        await pilot.click("#found-table", offset=(2, 0))  # the "#" header
        await settle(pilot)
        assert app.queue_query.order == "id"
        ids = [int(k) for k in keys(app, "found-table")]
        assert ids == sorted(ids)


async def test_storm_banner_sparkline_and_top_error(tmp_path: Path) -> None:
    """During a failure storm the health line shows per-minute counts and the commonest reply,
    the sparkline holds 30 minutes of failures, and the red banner says storm and who paused."""
    app = make_app(await storm.build(tmp_path / "q.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        rates = text(app, "#rates")
        assert "failed 4" in rates and "retried 2" in rates and "554 5.7.1" in rates
        assert "pace mail-1: 1 of 4 sessions, 2.0 s apart, 3 throttles" in rates
        data = list(app.query_one(Sparkline).data or [])
        assert len(data) == 30 and data[:24] == [0.0] * 24 and data[-2] == 6.0
        banner = text(app, "#banner")
        assert app.query_one("#banner").display
        assert "FAILURE STORM" in banner and "Access denied" in banner
        assert "SENDING PAUSED by mail-1 at 2025-06-15 15:06:10 UTC" in banner
        assert "consecutive relay errors" in banner


async def test_bulk_retry_of_the_search_writes_one_audit_row(tmp_path: Path) -> None:
    """``/failed`` then ``A``, ``t``, ``y``: the confirmation names the exact count and filter,
    every failed row goes back to scheduled (same Message-ID, attempts reset), one audit row."""
    path = await storm.build(tmp_path / "q.db")
    before = dict(rows(path, "SELECT id, message_id FROM messages WHERE state = 'failed'"))
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        await type_filter(pilot, "failed")
        await press(pilot, "A")
        assert isinstance(app.screen, Choose)
        await press(pilot, "t")
        question = str(app.screen.query_one("#question").render())
        assert "Retry 20 message(s)?" in question and "filter: state failed" in question
        await press(pilot, "y")
    assert len(before) == 20
    ids = ",".join(map(str, before))
    after = dict(rows(path, "SELECT id, message_id FROM messages WHERE state = 'scheduled' "
                            f"AND attempts = 0 AND id IN ({ids})"))
    assert after == before
    assert rows(path, "SELECT actor, action, detail FROM audit WHERE action LIKE 'bulk-%'") == [
        ("tester", "bulk-retry", "20 message(s) -> scheduled; filter: state failed; "
                                 "reason: from the monitor")]


async def test_marks_bound_a_bulk_cancel(tmp_path: Path) -> None:
    """Space marks two scheduled rows; ``A``, ``c``, ``y`` cancels exactly those two."""
    path = await aseed(tmp_path / "queue.db")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "1")
        app.query_one("#queue-table", RowsTable).focus()
        await press(pilot, "space", "down", "space")
        assert app.panel().table.marked == {7, 8}
        await press(pilot, "A", "c")
        assert "Cancel 2 message(s)?" in str(app.screen.query_one("#question").render())
        await press(pilot, "y")
    assert rows(path, "SELECT id FROM messages WHERE state = 'cancelled' ORDER BY id") == [(7,), (8,)]
    assert rows(path, "SELECT action, message_id FROM audit") == [("bulk-cancel", None)]


async def test_dead_worker_is_red_with_its_claims_and_counts(tmp_path: Path) -> None:
    """A worker 190 s without a heartbeat is presumed dead with the claims it holds; the live
    one shows its sent and failed attempts of the last hour."""
    app = make_app(await storm.build(tmp_path / "q.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "3")
        by_name = {r[0]: r for r in cells(app, "workers-panel-table")}
        assert by_name["mail-2"][5] == "presumed dead" and by_name["mail-2"][9].count("#") == 3
        assert by_name["mail-1"][5] == "alive"
        assert (by_name["mail-1"][7], by_name["mail-1"][8]) == ("150", "20")
        assert "1 presumed dead" in text(app, "#workers-panel .summary")


async def test_palette_help_screenshot_and_small_terminal(tmp_path: Path) -> None:
    """The palette lists the app's actions, ``?`` lists every key, ctrl+s saves an SVG in the
    screenshots folder, and at 80x24 the footer still shows quit, help and search."""
    shots = tmp_path / "shots"
    shots.mkdir()
    app = MonitorApp(await aseed(tmp_path / "queue.db"), refresh_every=3600, clock=lambda: T0,
                     actor="tester", screenshots=str(shots))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Search", "Act on all", "Pause", "Sort", "Refresh", "Cancel", "Retry"} <= titles
        names = {"question_mark": "?", "slash": "/", "left_square_bracket": "[",
                 "right_square_bracket": "]"}
        for binding in app.BINDINGS:
            assert isinstance(binding, Binding)
            shown = names.get(binding.key, binding.key)
            assert f"`{shown}`" in HELP or (shown.isdigit() and "`1` … `5`" in HELP), shown
        assert "ctrl+Home" in HELP
        footer = set(app.screen.active_bindings)
        assert {"q", "question_mark", "slash"} <= footer
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await press(pilot, "escape", "ctrl+s")
        assert len(list(shots.glob("*.svg"))) == 1


async def test_detail_lists_observed_copies_and_resolve_says_where(tmp_path: Path) -> None:
    """The detail of the incident row lists its three observed copies beside the SendLog, the
    dedupe key is readable, and the resolve dialog of an unknown seen in a mailbox says where."""
    path = await aseed(tmp_path / "queue.db")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO observations(mid, recipient, at, source, observed_at, fingerprint, "
                     "row_id, traced_by) SELECT message_id, 'd@example.com', ?, 'maildir:/srv/bcc', "
                     "?, 'fp-d', 4, 'message-id' FROM messages WHERE id = 4", (T0 - 600, T0 - 60))
    conn.close()
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(DetailScreen(path, INCIDENT_ROW, T0))
        await settle(pilot)
        observed = cells(app, "observed")
        assert len(observed) == 3 and all(r[0] == "maildir:/srv/lead" for r in observed)
        fields = str(app.screen.query_one("#fields").render())
        assert "\\x1f" not in fields and "\x1f" not in fields and "seen 3 time(s) in a mailbox" in fields
        await press(pilot, "escape", "4")
        table = app.query_one("#duplicates-panel-table", RowsTable)
        table.move_cursor(row=[r.message for r in table.shown_rows].index(4))
        await press(pilot, "u")
        question = str(app.screen.query_one("#question").render())
        assert "seen in mailbox maildir:/srv/bcc at 2025-06-15 14:56:40 UTC" in question


async def test_duplicates_grouped_with_full_explanation(tmp_path: Path) -> None:
    """Duplicates are grouped by recipient (the duplicated lead first), the panel under the
    table explains the row under the cursor in full, and the mailbox's last read is shown."""
    app = make_app(await aseed(tmp_path / "queue.db"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        recipients = [r[0] for r in cells(app, "duplicates-panel-table")]
        assert recipients[:3] == ["lead@example.com"] * 3
        explain = text(app, "#explain")
        assert "observed, never logged" in explain and "Message-IDs:" in explain
        assert "maildir:/srv/lead read" in text(app, "#duplicates-panel .summary")


def test_durations_stay_readable() -> None:
    """Years and months are not printed as thousands of days."""
    assert fmt.ago(T0 + 2957 * 86400 + 16 * 3600, T0) == "in 8.1y"
    assert fmt.span(45 * 86400) == "45d" and fmt.span(3 * 86400 + 4 * 3600) == "3d4h"
    assert fmt.dedupe_key("spring-webinar\x1ferin@example.com") == "spring-webinar · erin@example.com"


async def test_log_follows_unless_the_cursor_moved(tmp_path: Path) -> None:
    """The Log's cursor stays on the newest attempt across refreshes while following; after a
    move it stays on its row, and ``f`` follows again."""
    path = await aseed(tmp_path / "queue.db")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "5")
        table = app.query_one(FollowTable)
        assert table.follow and table.cursor_row == 0
        await press(pilot, "down")
        assert not table.follow
        held = table.current_key()
        await press(pilot, "r")
        assert table.current_key() == held
        await press(pilot, "f")
        assert table.follow and table.cursor_row == 0


async def test_duplicates_give_the_true_total_when_the_report_stops(big_queue: Path) -> None:
    """With 1,200 unknown messages the Duplicates tab says 1,200 and pages through them."""
    app = make_app(str(big_queue))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "4")
        summary = text(app, "#duplicates-panel .summary")
        assert "1,200 unknown" in summary and "1-100 of 1,200 findings: unknown 1-100" in summary
        await press(pilot, "n")
        assert "101-200 of 1,200 findings: unknown 101-200" in text(app, "#duplicates-panel .summary")


def test_screenshots_folder_must_exist(cli: Cli, tmp_path: Path) -> None:
    """``python -m tui --screenshots DIR`` with a missing folder is one error line and exit 2."""
    r = cli("--db", str(tmp_path / "q.db"), "--screenshots", str(tmp_path / "nope"), module="tui")
    assert r.code == 2 and r.err.startswith("error: --screenshots") and len(r.err.splitlines()) == 1


async def test_insecure_tls_is_shown(tmp_path: Path) -> None:
    """A worker running with --tls-insecure (its flag) is named on the health line in red."""
    from sender.store import flags

    path = await aseed(tmp_path / "queue.db")
    async with open_db(path) as db:
        await flags.set_flag(db, "tls_insecure", "1", actor="w1", now=T0)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "TLS verification off (w1 runs --tls-insecure)" in text(app, "#rates")
