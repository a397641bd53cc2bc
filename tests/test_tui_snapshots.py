"""Snapshot tests (pytest-textual-snapshot) of the monitor's main screens.

Fixed data (the shared seed, Message-IDs pinned), a fixed clock and a relative database path
make every screen identical run to run. The accepted SVGs live in ``tests/__snapshots__``;
after a deliberate change to the screens, review and refresh them with
``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from tests.test_store_views import T0, seed
from tui.app import MonitorApp

Make = Callable[..., MonitorApp]
WIDE = (120, 40)


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Make:
    monkeypatch.chdir(tmp_path)
    seed(tmp_path / "queue.db")

    def build(path: str = "queue.db", **kwargs: object) -> MonitorApp:
        return MonitorApp(path, refresh_every=3600, clock=lambda: T0, actor="tester",
                          **kwargs)  # type: ignore[arg-type]
    return build


def keys(*pressed: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Wait for the first refresh, press ``pressed`` one by one letting each settle."""
    async def run(pilot: Pilot[None]) -> None:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        for key in pressed:
            await pilot.press(key)
            await pilot.pause()
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    return run


def test_start_on_duplicates(snap_compare: Callable[..., bool], make: Make) -> None:
    """At start-up the incident is on screen: ghosts and the multi-send of one lead."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys())


def test_start_on_duplicates_80x24(snap_compare: Callable[..., bool], make: Make) -> None:
    """The same start-up screen fits an 80x24 terminal."""
    assert snap_compare(make(), terminal_size=(80, 24), run_before=keys())


def test_queue(snap_compare: Callable[..., bool], make: Make) -> None:
    """The Queue tab: due now, next, per-campaign counts, scheduled rows in claim order."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys("1"))


def test_in_flight(snap_compare: Callable[..., bool], make: Make) -> None:
    """The In flight tab with the stale claim of the dead worker highlighted."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys("2"))


def test_workers(snap_compare: Callable[..., bool], make: Make) -> None:
    """The Workers tab: alive, presumed dead, stopped."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys("3"))


def test_log(snap_compare: Callable[..., bool], make: Make) -> None:
    """The Log tab, newest attempt first."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys("5"))


def test_detail(snap_compare: Callable[..., bool], make: Make) -> None:
    """The detail screen of a message that was greylisted once."""
    assert snap_compare(make(), terminal_size=WIDE, run_before=keys("1", "down", "enter"))


def test_resolve_dialog(snap_compare: Callable[..., bool], make: Make) -> None:
    """Resolving an unknown message asks sent / failed / requeue."""
    assert snap_compare(make(), terminal_size=WIDE,
                        run_before=keys("down", "down", "down", "u"))


def test_help(snap_compare: Callable[..., bool], make: Make) -> None:
    """The ``?`` help lists every key."""
    assert snap_compare(make(read_only=True), terminal_size=WIDE,
                        run_before=keys("question_mark"))


def test_missing_database(snap_compare: Callable[..., bool], make: Make) -> None:
    """A missing file is a sentence on screen, with the command that creates one."""
    assert snap_compare(make("missing.db"), terminal_size=(80, 24), run_before=keys())


def test_failure_storm(snap_compare: Callable[..., bool], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure storm: red banner (storm and the auto-pause with who, when, why), the health
    line with its sparkline, and the failed list with its true total."""
    import asyncio

    from tests import storm

    monkeypatch.chdir(tmp_path)
    asyncio.run(storm.build(tmp_path / "storm.db"))
    app = MonitorApp("storm.db", refresh_every=3600, clock=lambda: storm.T0, actor="tester")

    async def run(pilot: Pilot[None]) -> None:
        await keys("1")(pilot)
        await pilot.press("slash", *"failed", "enter")
        await keys()(pilot)
    assert snap_compare(app, terminal_size=WIDE, run_before=run)


def test_failure_storm_80x24(snap_compare: Callable[..., bool], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The storm at 80x24: banner, health line and the footer's essential keys still fit."""
    import asyncio

    from tests import storm

    monkeypatch.chdir(tmp_path)
    asyncio.run(storm.build(tmp_path / "storm.db"))
    app = MonitorApp("storm.db", refresh_every=3600, clock=lambda: storm.T0, actor="tester")
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys("1"))
