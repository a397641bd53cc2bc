"""Fast by default (issue #16): what keeps the sender's CPU per message and its start small.

Speed itself is measured by ``python -m bench``, not here; these tests pin the mechanisms that
the figures in docs/performance.md depend on, so that none of them can quietly come undone: one
long-lived task per session instead of one per message, log lines written once per turn in the
same format, a ``run --once`` that does not import what only ``enqueue`` or a connection needs,
and planner statistics refreshed by the daemon and after large imports. Real SQLite files, real
subprocesses, a real aiosmtpd.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sender import logbuffer
from sender.config import Settings
from sender.daemon import Daemon
from sender.delivery import NullSession, pool
from sender.journal import BOOT_ID_ENV
from sender.store.db import open_db
from tests.conftest import Cli, SinkThread
from tests.support import run_once, seed, settings, states


async def test_sessions_are_long_lived_tasks_not_one_per_message(db_path: str) -> None:
    """200 messages over 4 sessions create a handful of tasks, not one per message."""
    await seed(db_path, 200)
    created = 0
    loop = asyncio.get_running_loop()

    def counting(loop: asyncio.AbstractEventLoop, coro, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        s = settings(db_path, 25, concurrency=4)
        async with open_db(db_path) as db:
            stats = await Daemon(db, s, [NullSession() for _ in range(4)]).run(once=True)
    finally:
        loop.set_task_factory(None)
    assert stats.sent == 200 and states(db_path) == {"sent": 200}
    assert created < 40, f"{created} tasks for 200 messages"


def test_turn_buffer_writes_a_turn_in_one_write_in_the_usual_format() -> None:
    """Info lines wait for the turn's flush and leave in one write; a warning leaves at once; each
    line reads as ``logging.basicConfig``'s format would print it."""
    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    handler = logbuffer.TurnBuffer(Recorder())
    plain = logging.Formatter(logbuffer.FORMAT)
    logger = logging.getLogger("sender.test_speed")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(5):
            logger.info("row=%s sending->sent", i)
        assert writes == []
        handler.flush()
        assert len(writes) == 1 and writes[0].count("\n") == 5
        record = logging.LogRecord("sender.daemon", logging.INFO, __file__, 1, "row=%s x", (7,), None)
        assert handler.format(record) == plain.format(record)
        logger.warning("relay throttling")
        assert len(writes) == 2 and "WARNING sender.test_speed: relay throttling" in writes[1]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_run_logs_every_transition_through_the_turn_buffer(cli: Cli, db_path: str, sink: SinkThread) -> None:
    """``run --once`` still writes one line per transition (and the start and stop lines) to stderr."""
    asyncio.run(seed(db_path, 12))
    r = cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once", "--concurrency", "3")
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert sum("sending->sent outcome=sent" in line for line in lines) == 12
    assert "started: concurrency 3, prefetch 2" in lines[0] and "stopped: sent 12" in lines[-1]


def test_run_once_on_an_empty_queue_imports_only_what_it_needs(tmp_path: Path, db_path: str) -> None:
    """An empty ``run --once`` loads neither the SMTP client, nor the enqueue path, nor a TLS store."""
    asyncio.run(seed(db_path, 0))
    probe = (
        "import sys, ssl\n"
        "made = []\n"
        "real = ssl.create_default_context\n"
        "ssl.create_default_context = lambda *a, **k: made.append(1) or real(*a, **k)\n"
        "from sender.cli import main\n"
        f"code = main(['run', '--db', {db_path!r}, '--once', '--smtp-port', '1', '--worker', 'probe'])\n"
        "heavy = ('aiosmtplib', 'csv', 'tomllib', 'email.message', 'sender.cli_enqueue', 'sender.intake',"
        " 'sender.message')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules), len(made))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split("\n")[0] == "0 [] 0", out.stdout + out.stderr


async def test_the_daemon_leaves_planner_statistics(db_path: str, sink: SinkThread) -> None:
    """A run ends with ``PRAGMA optimize``: the queue has ``sqlite_stat1`` rows for its messages."""
    await seed(db_path, 50)
    assert (await run_once(db_path, sink.port)).sent == 50
    conn = sqlite3.connect(db_path)
    try:
        tables = {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1")}
    finally:
        conn.close()
    assert "messages" in tables


def test_a_large_import_refreshes_the_statistics(cli: Cli, tmp_path: Path, db_path: str) -> None:
    """``enqueue`` of at least LARGE_IMPORT rows ends with ``PRAGMA optimize``; a small one does not."""
    from sender.cli_enqueue import LARGE_IMPORT

    def stat_tables() -> set[str]:
        conn = sqlite3.connect(db_path)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
                return set()
            return {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1")}
        finally:
            conn.close()

    for name, n in (("small.csv", 10), ("large.csv", LARGE_IMPORT)):
        path = tmp_path / name
        with path.open("w", encoding="utf-8") as fh:
            fh.write("to,subject,body\n")
            fh.writelines(f"{name[0]}{i}@example.com,s,b\n" for i in range(n))
        r = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", "team@example.org")
        assert r.code == 0, r.err
        if name == "small.csv":
            assert "messages" not in stat_tables()
    assert "messages" in stat_tables()


def test_the_default_claims_ahead() -> None:
    """The default is two claims waiting per session (chosen by measurement); 0 stays the strict mode."""
    assert Settings().prefetch == 2


async def _transactions(db_path: str, port: int, n: int) -> tuple[int, int]:
    """(transactions, claim transactions) of an in-process ``run --once`` of ``n`` messages."""
    await seed(db_path, n)
    s = settings(db_path, port, concurrency=4, prefetch=2, heartbeat=10.0)
    async with open_db(db_path) as db:
        count = 0
        real = db.transaction

        async def counted(fn):  # type: ignore[no-untyped-def]
            nonlocal count
            count += 1
            return await real(fn)

        db.transaction = counted  # type: ignore[method-assign]
        stats = await Daemon(db, s, pool(s)).run(once=True)
    assert stats.sent == n and states(db_path) == {"sent": n}
    conn = sqlite3.connect(db_path)
    try:
        claims = conn.execute("SELECT count(DISTINCT claim_token) FROM send_log").fetchone()[0]
    finally:
        conn.close()
    return count, claims


async def test_journaled_250s_share_the_claims_commits(db_path: str, tmp_path: Path, sink: SinkThread,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With the start journal, sent outcomes wait for the next claim's commit: about one
    transaction per claim. Without a journal (no boot id), every turn writes its outcomes."""
    boot = tmp_path / "boot_id"
    boot.write_text("b1\n")
    monkeypatch.setenv(BOOT_ID_ENV, str(boot))
    journaled, claims = await _transactions(db_path, sink.port, 400)
    assert journaled <= claims * 1.2 + 4, (journaled, claims)  # measured: 109 for 98 claims
    monkeypatch.setenv(BOOT_ID_ENV, str(tmp_path / "no-such-file"))
    plain, claims = await _transactions(str(tmp_path / "plain.db"), sink.port, 400)
    assert plain > 2 * journaled, (plain, journaled, claims)  # measured: 109 against about 400


def test_a_command_parses_the_same_with_only_its_own_parser_built() -> None:
    """``main`` builds only the parser of the command its arguments start with (the others cost
    about 5 ms of an empty ``run --once``); what it parses is exactly what the full parser does."""
    from sender.cli import build_parser

    for argv in (["run", "--db", "q.db", "--once", "--concurrency", "3", "--prefetch", "0"],
                 ["status", "--json"], ["suppress", "add", "a@example.com", "--reason", "bounced"],
                 ["retry", "--state", "expired", "--yes"], ["pause", "--campaign", "c"]):
        assert vars(build_parser(argv[0]).parse_args(argv)) == vars(build_parser().parse_args(argv)), argv
