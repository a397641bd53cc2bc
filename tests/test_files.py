"""Files (issue #12 items 3, 7, 8): the queue and its -wal/-shm are private, a readable config
holding a password draws a warning, capture folders are 0700, odd input files get a clear error,
only creating commands turn nothing into a queue, a damaged queue stops every command at once with
one instruction, and a daemon whose queue file was replaced or lost its WAL stops without writing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from sender.intake import MAX_BODY_BYTES
from sender.sink import CaptureHandler
from sender.store.db import open_db
from tests.conftest import Cli, Faults, SinkThread
from tests.support import daemon_args, in_state, seed, stop, wait_until

FROM = "team@example.org"
DAMAGED = "the queue file is damaged: run `sqlite3 "


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- private files ---------------------------------------------------------------------------

async def test_a_new_queue_and_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Under a umask of 000 the queue file, its -wal and its -shm are still created owner-only."""
    path = tmp_path / "q.db"
    old = os.umask(0)
    try:
        async with open_db(str(path), create=True) as db:
            async with db.write():
                await db.execute("INSERT INTO flags VALUES ('probe', '1', 0, 'test')")
            assert {mode(path), mode(f"{path}-wal"), mode(f"{path}-shm")} == {0o600}
    finally:
        os.umask(old)


async def test_init_mode_shares_with_the_group_and_refuses_others(cli: Cli, tmp_path: Path) -> None:
    """init --mode 0640 gives the queue and its WAL files that mode; a mode for others is refused."""
    path = tmp_path / "q.db"
    r = cli("init", "--db", str(path), "--mode", "0640")
    assert r.code == 0 and "mode 0640" in r.out, r.err
    async with open_db(str(path)) as db:
        async with db.write():
            await db.execute("INSERT INTO flags VALUES ('probe', '1', 0, 'test')")
        assert {mode(path), mode(f"{path}-wal"), mode(f"{path}-shm")} == {0o640}
    assert cli("init", "--db", str(path), "--mode", "600").code == 0 and mode(path) == 0o600
    r = cli("init", "--db", str(tmp_path / "other.db"), "--mode", "0644")
    assert r.code == 2 and "--mode" in r.err and not (tmp_path / "other.db").exists()


def test_init_warns_about_an_existing_queue_others_can_read(cli: Cli, tmp_path: Path) -> None:
    """A queue made world-readable (or by an older sender) draws a warning from init naming the fix."""
    path = tmp_path / "q.db"
    assert cli("init", "--db", str(path)).code == 0
    path.chmod(0o644)
    r = cli("init", "--db", str(path))
    assert r.code == 0 and "readable by others" in r.err and "--mode 0600" in r.err
    assert "readable by others" not in cli("init", "--db", str(path), "--mode", "0600").err


def test_enqueue_creates_a_private_queue(cli: Cli, tmp_path: Path) -> None:
    """enqueue, which also creates a missing queue, creates it 0600 as well."""
    path = tmp_path / "q.db"
    r = cli("enqueue", "--db", str(path), "--to", "a@example.com", "--subject", "s", "--body", "b",
            "--from", FROM)
    assert r.code == 0, r.err
    assert mode(path) == 0o600


@pytest.mark.parametrize(("file_mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_config_with_a_password_readable_by_others_draws_a_warning(cli: Cli, tmp_path: Path,
                                                                   file_mode: int, warned: bool) -> None:
    """A sender.toml holding the password and readable by group or others is flagged, as ssh does."""
    path = tmp_path / "sender.toml"
    path.write_text('[smtp]\nuser = "mailer"\npassword = "s3cret"\n')
    path.chmod(file_mode)
    r = cli("config", "--show")
    assert r.code == 0, r.err
    assert ("chmod 600" in r.err) is warned
    assert "s3cret" not in r.err + r.out


def test_config_without_a_password_draws_no_warning(cli: Cli, tmp_path: Path) -> None:
    """A world-readable config file that holds no secret is fine."""
    path = tmp_path / "sender.toml"
    path.write_text('[smtp]\nhost = "mail.example.org"\n')
    path.chmod(0o644)
    r = cli("config", "--show")
    assert r.code == 0 and "chmod" not in r.err


def test_capture_folders_are_0700(tmp_path: Path) -> None:
    """The sink's maildir (and its cur/new/tmp) is created owner-only, even under umask 000."""
    old = os.umask(0)
    try:
        CaptureHandler(tmp_path / "capture")
    finally:
        os.umask(old)
    assert {mode(tmp_path / "capture" / sub) for sub in ("", "cur", "new", "tmp")} == {0o700}


def test_demo_keep_folder_is_private(cli: Cli, tmp_path: Path) -> None:
    """demo --keep DIR makes DIR 0700 and its copy of the queue 0600."""
    keep = tmp_path / "kept"
    r = cli("demo", "--keep", str(keep), timeout=120)
    assert r.code == 0, r.err
    assert mode(keep) == 0o700 and mode(keep / "sample.db") == 0o600


# --- odd input files ---------------------------------------------------------------------------

def test_csv_that_is_not_a_regular_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    """A directory, a FIFO or /dev/null as --csv says "not a regular file", exit 2, no queue made."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    db = tmp_path / "q.db"
    for path in (str(tmp_path), str(fifo), "/dev/null"):
        r = cli("enqueue", "--db", str(db), "--csv", path, "--from", FROM, timeout=20)
        assert r.code == 2 and "not a regular file" in r.err, (path, r.err)
    r = cli("enqueue", "--db", str(db), "--csv", str(tmp_path / "absent.csv"), "--from", FROM)
    assert r.code == 2 and "no such file" in r.err
    assert not db.exists()


@pytest.mark.parametrize(("to", "words"), [
    ("bad@", "nothing after the @"),
    ("@example.com", "nothing before the @"),
    ('"a\tb"@example.com', "TAB"),
    ("a\tb@example.com", "TAB"),
    ("x" * 65 + "@example.com", "longer than 64"),
    ('"x y' + "x" * 61 + '"@example.com', "longer than 64"),
])
def test_bad_addresses_are_refused_at_enqueue_with_a_reason(cli: Cli, tmp_path: Path, to: str,
                                                            words: str) -> None:
    """Each bad address is refused at enqueue (exit 2) with a reason a person can act on."""
    db = tmp_path / "q.db"
    r = cli("enqueue", "--db", str(db), "--to", to, "--subject", "s", "--body", "b", "--from", FROM)
    assert r.code == 2 and words in r.err and "index out of range" not in r.err, r.err
    assert not db.exists()


def test_a_64_octet_local_part_is_accepted(cli: Cli, tmp_path: Path) -> None:
    """The SMTP limit itself (64 octets before the @) still queues."""
    r = cli("enqueue", "--db", str(tmp_path / "q.db"), "--to", "x" * 64 + "@example.com", "--subject", "s",
            "--body", "b", "--from", FROM)
    assert r.code == 0, r.err


def test_body_file_is_bounded(cli: Cli, tmp_path: Path) -> None:
    """--body-file /dev/zero, or a file one byte over the limit, is refused at once, not read whole."""
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (MAX_BODY_BYTES + 1))
    for path in ("/dev/zero", str(big)):
        started = time.monotonic()
        r = cli("enqueue", "--db", str(tmp_path / "q.db"), "--to", "a@example.com", "--subject", "s",
                "--body-file", path, "--from", FROM, timeout=30)
        assert r.code == 2 and "byte limit" in r.err, r.err
        assert time.monotonic() - started < 20
    assert not (tmp_path / "q.db").exists()


# --- nothing becomes a queue by accident ------------------------------------------------------

@pytest.mark.parametrize("command", [["run", "--once", "--smtp-port", "1"], ["recover"], ["pause"],
                                     ["observe", "--maildir", "MAILDIR"], ["status"], ["report"]])
def test_an_empty_or_missing_file_is_not_turned_into_a_queue(cli: Cli, tmp_path: Path,
                                                            command: list[str]) -> None:
    """Commands other than init and enqueue refuse a 0-byte or missing file and leave it as it was."""
    CaptureHandler(tmp_path / "maildir")
    args = [str(tmp_path / "maildir") if a == "MAILDIR" else a for a in command]
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (empty, tmp_path / "missing.db"):
        r = cli(*args, "--db", str(path))
        assert r.code == 2 and "no queue database at" in r.err and "init" in r.err, r.err
    assert empty.stat().st_size == 0 and not Path(f"{empty}-wal").exists()
    assert not (tmp_path / "missing.db").exists()


def test_init_turns_an_empty_file_into_a_private_queue(cli: Cli, tmp_path: Path) -> None:
    """init is the command that may fill a 0-byte file, and it makes it 0600 first."""
    empty = tmp_path / "empty.db"
    empty.touch(mode=0o644)
    assert cli("init", "--db", str(empty)).code == 0
    assert mode(empty) == 0o600 and cli("status", "--db", str(empty)).code == 0


# --- damaged files -----------------------------------------------------------------------------

def _damage(path: str, tables: tuple[str, ...]) -> None:
    """Overwrite the root page of each table (or, for "*", every page but the first) with noise."""
    conn = sqlite3.connect(path)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    conn.close()
    pages = range(2, count + 1) if tables == ("*",) else [roots[t] for t in tables]
    noise = bytes((i * 37 + 11) % 256 for i in range(size))
    with open(path, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * size)
            fh.write(noise)


@pytest.mark.parametrize(("tables", "commands"), [
    (("messages",), (["status"], ["run", "--once", "--smtp-port", "1"])),
    (("send_log",), (["run", "--once", "--smtp-port", "1"],)),
    (("observations", "observations_at"), (["report"],)),
    (("*",), (["status"], ["report"], ["run", "--once", "--smtp-port", "1"], ["recover"])),
])
async def test_a_damaged_queue_stops_each_command_at_once(db_path: str, cli: Cli, tables: tuple[str, ...],
                                                          commands: tuple[list[str], ...]) -> None:
    """A queue with damaged pages makes status, report, run --once and recover exit 1 within
    seconds with the integrity-check instruction, never a traceback, and run --once does not retry."""
    await seed(db_path, 300)
    _damage(db_path, tables)
    for command in commands:
        started = time.monotonic()
        r = cli(*command, "--db", db_path, timeout=60)
        assert r.code == 1, (command, r.err)
        assert r.err.strip().splitlines()[-1] == f"error: {DAMAGED}{db_path} 'PRAGMA integrity_check'`; " \
                                                 "restore from backup"
        assert "Traceback" not in r.err and time.monotonic() - started < 20


def test_a_file_with_a_damaged_header_page_is_still_reported_as_damaged(db_path: str, cli: Cli) -> None:
    """Noise after the SQLite magic (page 1 damaged) is a damaged queue, exit 1, not "not ours"."""
    asyncio.run(seed(db_path, 50))
    with open(db_path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xa5" * 3996)
    r = cli("status", "--db", db_path)
    assert r.code == 1 and DAMAGED in r.err and "Traceback" not in r.err, r.err


# --- the file under a running daemon -----------------------------------------------------------

def _idle_daemon(cli: Cli, db_path: str, port: int) -> tuple[subprocess.Popen[str], Path]:
    proc = cli.popen(*daemon_args(db_path, port))
    log_path: Path = proc.log_path  # type: ignore[attr-defined]
    assert wait_until(lambda: "started" in log_path.read_text(), 15), log_path.read_text()
    return proc, log_path


@pytest.mark.parametrize("change", ["replace", "delete", "delete-wal"])
async def test_run_stops_when_its_queue_file_is_no_longer_on_disk(db_path: str, cli: Cli, sink: SinkThread,
                                                                  tmp_path: Path, change: str) -> None:
    """A daemon whose queue file was replaced, deleted or lost its -wal exits 1 within a second
    or two, naming the cause, and writes nothing into the file now at that path."""
    await seed(db_path, 2, send_at=time.time() + 3600)
    other = str(tmp_path / "other.db")
    await seed(other, 1, send_at=time.time() + 3600)
    proc, log_path = _idle_daemon(cli, db_path, sink.port)
    other_bytes = Path(other).read_bytes()
    try:
        if change == "replace":
            os.replace(other, db_path)
        elif change == "delete":
            os.unlink(db_path)
        else:
            os.unlink(f"{db_path}-wal")
        code = proc.wait(10)
    finally:
        stop(proc)
    text = log_path.read_text()
    words = {"replace": "was replaced", "delete": "was deleted", "delete-wal": "-wal file was deleted"}[change]
    assert code == 1 and words in text and "Traceback" not in text, text
    if change == "replace":
        assert Path(db_path).read_bytes() == other_bytes


@pytest.mark.parametrize("prefetch", ["0", "2"])
async def test_outcomes_held_when_the_wal_vanishes_are_logged_not_written(db_path: str, cli: Cli,
                                                                          faulty_sink: SinkThread,
                                                                          faults: Faults, prefetch: str) -> None:
    """The -wal deleted during a send: the send finishes, its outcome is logged as not recorded
    (row and Message-ID), nothing more is claimed nor started (claims waiting under --prefetch 2,
    whose commit the lost -wal may have held, stay unsent), and the daemon exits 1."""
    faults.data_delay = 1.0
    await seed(db_path, 3)
    proc = cli.popen(*daemon_args(db_path, faulty_sink.port, "--concurrency", "1", "--prefetch", prefetch))
    log_path: Path = proc.log_path  # type: ignore[attr-defined]
    try:
        assert wait_until(lambda: in_state(db_path, "sending") == 1 + int(prefetch), 15)
        time.sleep(0.3)  # the claim is committed and the session is in its DATA delay
        os.unlink(f"{db_path}-wal")
        code = proc.wait(20)
    finally:
        stop(proc)
    text = log_path.read_text()
    assert code == 1, text
    assert "-wal file was deleted" in text and "claiming stopped" in text
    assert "outcome sent could not be recorded" in text and "mid=<1." in text
    assert len(faulty_sink.received) == 1


def _misroute_table(db_path: str, table: str) -> None:
    """Damage the live queue the way a bad disk would, through SQLite: point ``table`` at an index's
    root page, so every connection's next read of it finds a malformed b-tree."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    try:
        index = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'send_log_mid'").fetchone()[0]
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (index, table))
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.close()


@pytest.mark.parametrize("prefetch", ["0", "2"])
async def test_a_queue_damaged_under_a_running_daemon_stops_it_and_its_outcome_is_logged(
        db_path: str, cli: Cli, faulty_sink: SinkThread, faults: Faults, prefetch: str) -> None:
    """Pages damaged while a send is in progress: the send finishes, nothing more is claimed,
    the outcome it holds is logged with its row and Message-ID, and the daemon exits 1 at once
    with the integrity-check instruction instead of retrying. Claiming ahead, the session may
    start one waiting claim (committed before the damage) before the next turn finds it."""
    faults.data_delay = 1.0
    await seed(db_path, 3)
    proc = cli.popen(*daemon_args(db_path, faulty_sink.port, "--concurrency", "1", "--prefetch", prefetch))
    log_path: Path = proc.log_path  # type: ignore[attr-defined]
    try:
        assert wait_until(lambda: in_state(db_path, "sending") == 1 + int(prefetch), 15)
        _misroute_table(db_path, "messages")
        code = proc.wait(20)
    finally:
        stop(proc)
    text = log_path.read_text()
    assert code == 1, text
    assert text.strip().splitlines()[-1] == f"error: {DAMAGED}{db_path} 'PRAGMA integrity_check'`; restore from backup"
    assert "claiming stopped" in text and "outcome sent could not be recorded" in text and "mid=<1." in text
    assert "Traceback" not in text and "retrying" not in text
    assert 1 <= len(faulty_sink.received) <= (1 if prefetch == "0" else 2)
