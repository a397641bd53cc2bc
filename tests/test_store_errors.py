"""Every read keeps the one-line-error promise: a damaged, locked, foreign or missing queue file
gives ``status`` and ``report`` one ``error:`` line (no traceback) and the monitor a message on
screen; and the monitor finds its queue through the same settings as the command line.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.support import seed
from tui import source
from tui.__main__ import settings_db


def _damage(path: Path) -> None:
    """Drop tables every read needs: the file opens, its statements fail."""
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE state_counts; DROP TABLE observations;")
    conn.close()


@pytest.fixture
async def queue(tmp_path: Path) -> Path:
    path = tmp_path / "q.db"
    await seed(str(path), 2)
    return path


@pytest.fixture
def locked(queue: Path) -> Iterator[Path]:
    """The queue held by another process's exclusive lock for the whole test."""
    conn = sqlite3.connect(queue, isolation_level=None)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE messages SET updated_at = updated_at")
    yield queue
    conn.execute("ROLLBACK")
    conn.close()


def _one_line(cli: Cli, *args: str) -> str:
    r = cli(*args, timeout=60)
    lines = r.err.strip().splitlines()
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    return lines[0]


@pytest.mark.parametrize("command", ["status", "report"])
def test_damaged_queue_gives_one_line(cli: Cli, queue: Path, command: str) -> None:
    """A queue missing the tables a read needs is an ``error:`` line naming the file, not a traceback."""
    _damage(queue)
    assert str(queue) in _one_line(cli, command, "--db", str(queue))


@pytest.mark.parametrize("command", ["status", "report"])
def test_foreign_and_missing_files_give_one_line(cli: Cli, tmp_path: Path, command: str) -> None:
    """A file that is not a queue, and a path with no file, each give one line and exit 2."""
    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database at all\n" * 100)
    assert "not a sender queue" in _one_line(cli, command, "--db", str(foreign))
    assert "no queue database" in _one_line(cli, command, "--db", str(tmp_path / "absent.db"))


@pytest.mark.parametrize("command", ["init", "status", "run"])
def test_a_database_url_of_no_known_engine_is_bad_input(cli: Cli, tmp_path: Path, command: str) -> None:
    """``--db mysql://…`` names no engine: one line, exit 2, and no file is made from the URL."""
    extra = ["--once"] if command == "run" else []
    line = _one_line(cli, command, "--db", "mysql://root@127.0.0.1/test", *extra)
    assert "no database engine for mysql://" in line
    assert cli(command, "--db", "mysql://root@127.0.0.1/test", *extra).code == 2
    assert not (tmp_path / "mysql:").exists() and not list(Path.cwd().glob("mysql:*"))


def test_locked_queue_gives_one_line(cli: Cli, locked: Path) -> None:
    """A queue another process holds exclusively is reported as locked once the busy wait ends."""
    assert "locked" in _one_line(cli, "status", "--db", str(locked))


async def test_monitor_shows_each_broken_file_as_a_message(queue: Path, tmp_path: Path) -> None:
    """The monitor's loaders turn a damaged, foreign or missing file into text, never an exception."""
    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database at all\n" * 100)
    _damage(queue)
    for path, words in ((queue, "cannot read"), (foreign, "not a sender queue"),
                        (tmp_path / "absent.db", "no queue database")):
        snap = await source.load(str(path), time.time())
        assert snap.error is not None and words in snap.error, snap.error
        found = await source.load_findings(str(path), time.time(), 3600.0)
        assert not found.available and words in found.note, found.note


def test_monitor_reads_the_same_settings_as_the_command_line(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``sender.toml``, ``--config`` and ``$SENDER_DB`` choose the monitor's queue as they do the CLI's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENDER_DB", raising=False)
    monkeypatch.delenv("SENDER_CONFIG", raising=False)
    assert settings_db(None, None) == "sender.db"
    (tmp_path / "sender.toml").write_text('db = "from_toml.db"\n')
    assert settings_db(None, None) == "from_toml.db"
    (tmp_path / "other.toml").write_text('db = "from_flag.db"\n')
    assert settings_db(None, "other.toml") == "from_flag.db"
    monkeypatch.setenv("SENDER_DB", "from_env.db")
    assert settings_db(None, None) == "from_env.db"
    assert settings_db("given.db", None) == "given.db"
