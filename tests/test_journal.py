"""The start journal (issue #16 item 1): after a worker dies, its claims that it provably never
began go back to ``scheduled`` (no attempt), on the same host and boot with a readable journal;
everything else stays ``unknown``. The journal stays small and private.

Real processes killed by SIGKILL or frozen by SIGSTOP, a real aiosmtpd, real queue files; the boot
id is read from a file the test names (``SENDER_BOOT_ID_FILE``), so "another boot" is one write.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sender.journal import BOOT_ID_ENV, COMPACT_AT, MAGIC, FileJournal, JournalEvidence, journal_dir
from tests.conftest import Cli, Faults, RecordingHandler, SinkThread
from tests.support import daemon_args, in_state, log_statuses, one, query, seed, states, stop, wait_until
from tests.test_fence import FreezeAtRcpt


def boot_file(tmp_path: Path, cli: Cli, value: str = "boot-one") -> Path:
    path = tmp_path / "boot_id"
    path.write_text(value + "\n")
    cli.env[BOOT_ID_ENV] = str(path)
    return path


def kill_with_waiting_claims(db_path: str, cli: Cli, tmp_path: Path) -> None:
    """A worker with one message in flight and two claims waiting (--prefetch 2), SIGKILLed."""
    mails: list[str] = []
    faults = Faults(data_delay=5.0)
    with SinkThread(RecordingHandler(tmp_path / "maildir", faults, on_mail=mails.append)) as sink:
        proc = cli.popen(*daemon_args(db_path, sink.port, "--concurrency", "1", "--prefetch", "2",
                                      "--lease", "2"))  # 10 heartbeats: a loaded machine's stall is not a lapse
        try:
            assert wait_until(lambda: len(mails) == 1 and in_state(db_path, "sending") == 3, 20)
            time.sleep(0.2)
        finally:
            stop(proc, signal.SIGKILL)
    time.sleep(2.2)  # past the lease


async def test_waiting_claims_are_released_after_sigkill_on_the_same_boot(db_path: str, cli: Cli,
                                                                          tmp_path: Path) -> None:
    """The started claim becomes unknown; the two that never started go back to scheduled with no
    attempt and a SendLog 'released' entry; the dead worker's journal is then removed."""
    boot_file(tmp_path, cli)
    await seed(db_path, 3)
    kill_with_waiting_claims(db_path, cli, tmp_path)
    assert (journal_dir(db_path) / "1").exists()
    recovered = cli("recover", "--db", db_path)
    assert recovered.code == 0, recovered
    assert "1 expired claim(s) moved to unknown; 2 never started" in recovered.out
    assert one(db_path, 1)["state"] == "unknown"
    for row in (2, 3):
        assert one(db_path, row)["state"] == "scheduled" and one(db_path, row)["attempts"] == 0
        assert log_statuses(db_path, row) == ["released"]
        assert "start journal shows it never began" in one(db_path, row)["last_reply"]
    assert not (journal_dir(db_path) / "1").exists()


class HoldOutcomeAfter250:
    """The sink's MAIL hook. At the first MAIL it takes the queue's write lock, so the worker gets
    its 250 for that message but its next turn cannot write the outcome; at the second MAIL (the
    next waiting claim, started at once) it holds the line, so that message stays in flight."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.mails = 0
        self.conn: sqlite3.Connection | None = None
        self.release = threading.Event()

    def __call__(self, address: str) -> None:
        self.mails += 1
        if self.mails == 1:
            self.conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("BEGIN IMMEDIATE")
        elif self.mails == 2:
            self.release.wait(20)

    def unlock(self) -> None:
        self.release.set()
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


def delivered_entry(db_path: str, row: int) -> bool:
    journal = journal_dir(db_path) / "1"
    lines = journal.read_text().splitlines() if journal.exists() else []
    return any(line.startswith(f"{row} ") and line.split(" ")[2:3] == ["250"] for line in lines)


async def test_a_250_whose_outcome_was_not_written_is_sent_after_sigkill(db_path: str, cli: Cli,
                                                                        tmp_path: Path) -> None:
    """SIGKILL after the relay's 250 and before the outcome is written (the queue is locked):
    the journaled 250 makes that row sent (attempt counted, SendLog with the relay's reply), the
    one in flight unknown, the waiting one scheduled; exactly one copy of the sent row arrives."""
    boot_file(tmp_path, cli)
    await seed(db_path, 3)
    hook = HoldOutcomeAfter250(db_path)
    with SinkThread(RecordingHandler(tmp_path / "maildir", on_mail=hook)) as sink:
        proc = cli.popen(*daemon_args(db_path, sink.port, "--concurrency", "1", "--prefetch", "2",
                                      "--lease", "3"))
        try:
            assert wait_until(lambda: hook.mails == 2 and delivered_entry(db_path, 1), 20), proc.log_path.read_text()  # type: ignore[attr-defined]
            assert states(db_path) == {"sending": 3}  # the 250 of row 1 is not in the store
            stop(proc, signal.SIGKILL)
        finally:
            stop(proc, signal.SIGKILL)
            hook.unlock()
        first = [r for r in sink.received if r.rcpt_tos == ["r0@example.com"]]
        assert wait_until(lambda: time.time() > one(db_path, 1)["lease_until"], 10)
        recovered = cli("recover", "--db", db_path)
        assert recovered.code == 0, recovered
        assert ("1 expired claim(s) moved to unknown; 1 never started (start journal), back to scheduled; "
                "1 delivered (the relay's 250 in the start journal), recorded sent") in recovered.out, recovered
        row = one(db_path, 1)
        assert (row["state"], row["attempts"]) == ("sent", 1)
        assert row["last_reply"].startswith("250 ")
        assert query(db_path, "SELECT status, smtp_code, smtp_reply FROM send_log WHERE message_id = 1") == [
            ("sent", 250, row["last_reply"][4:])]
        assert (one(db_path, 2)["state"], one(db_path, 3)["state"]) == ("unknown", "scheduled")
        assert one(db_path, 3)["attempts"] == 0
        assert not (journal_dir(db_path) / "1").exists()
        assert cli(*daemon_args(db_path, sink.port, "--once")).code == 0
        copies = Counter(r.rcpt_tos[0] for r in sink.received)
    assert len(first) == 1 and copies["r0@example.com"] == 1 and copies["r2@example.com"] == 1, copies
    assert states(db_path) == {"sent": 2, "unknown": 1}
    assert "sending->sent reason=lease expired, the relay's 250 is in the start journal" in recovered.err


@pytest.mark.parametrize("case", ["missing", "other-boot", "other-host", "damaged"])
async def test_without_a_trustworthy_journal_every_claim_stays_unknown(db_path: str, cli: Cli,
                                                                       tmp_path: Path, case: str) -> None:
    """No journal, a journal from another boot, a worker of another host or a damaged journal
    proves nothing: all three expired claims become unknown, as without a journal."""
    boot = boot_file(tmp_path, cli)
    await seed(db_path, 3)
    kill_with_waiting_claims(db_path, cli, tmp_path)
    journal = journal_dir(db_path) / "1"
    if case == "missing":
        journal.unlink()
    elif case == "other-boot":
        boot.write_text("boot-two\n")  # as after a power loss: page-cache writes may be gone
    elif case == "other-host":
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE workers SET host = 'elsewhere'")
    else:
        with journal.open("a") as f:
            f.write("garbage\n")
    recovered = cli("recover", "--db", db_path)
    assert recovered.code == 0 and "3 expired claim(s) moved to unknown" in recovered.out, recovered
    assert states(db_path) == {"unknown": 3}


async def test_another_daemons_heartbeat_releases_them_too(db_path: str, cli: Cli, tmp_path: Path) -> None:
    """Recovery by a running daemon's heartbeat (not only ``recover``) uses the journal, and that
    daemon then sends the released rows: each copy once, the started one left unknown."""
    boot_file(tmp_path, cli)
    await seed(db_path, 3)
    kill_with_waiting_claims(db_path, cli, tmp_path)
    with SinkThread(RecordingHandler(tmp_path / "maildir2")) as sink:
        assert cli(*daemon_args(db_path, sink.port, "--once")).code == 0
        received = [r.rcpt_tos[0] for r in sink.received]
    assert states(db_path) == {"unknown": 1, "sent": 2}
    assert sorted(received) == ["r1@example.com", "r2@example.com"]


async def test_the_journal_stays_bounded_and_private(db_path: str) -> None:
    """Thousands of starts, each settled soon after: the file never holds much more than the
    outstanding marks plus COMPACT_AT, is truncated to its header when nothing is outstanding,
    and is 0600 in a 0700 folder; a clean close removes it."""
    journal = FileJournal(db_path, 7, "host", "boot")
    header = journal.path.read_bytes()
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal_dir(db_path).stat().st_mode) & 0o077 == 0
    biggest = 0
    for row in range(1, 5001):
        await journal.started(row, f"7.t{row // 4}")
        if row > 4:
            journal.settled([row - 4])  # four outstanding at any time
        biggest = max(biggest, journal.path.read_text().count("\n") - 1)
    assert biggest <= 4 + COMPACT_AT + 1
    journal.settled(range(4997, 5001))
    assert journal.path.read_bytes() == header
    await journal.close(clean=True)
    assert not journal.path.exists()


async def test_a_running_daemon_keeps_only_a_header_when_idle(db_path: str, cli: Cli, tmp_path: Path) -> None:
    """After its sends are recorded the daemon's journal is its header line alone; SIGTERM removes it."""
    boot_file(tmp_path, cli)
    await seed(db_path, 40)
    journal = journal_dir(db_path) / "1"
    with SinkThread(RecordingHandler(tmp_path / "maildir")) as sink:
        proc = cli.popen(*daemon_args(db_path, sink.port, "--concurrency", "4", "--prefetch", "1"))
        try:
            assert wait_until(lambda: states(db_path) == {"sent": 40}, 30)
            assert wait_until(lambda: journal.exists() and journal.read_text().count("\n") == 1, 5)
            assert journal.read_text().startswith(f"{MAGIC} boot=boot-one ")
            assert stop(proc) == 0
        finally:
            stop(proc, signal.SIGKILL)
    assert not journal.exists()


async def test_evidence_trusts_only_a_well_formed_journal_of_this_boot(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows absent from a journal of this boot, host and worker are unstarted; nothing else is."""
    db_path = str(tmp_path / "q.db")
    boot = tmp_path / "boot_id"
    boot.write_text("b1\n")
    monkeypatch.setenv(BOOT_ID_ENV, str(boot))
    journal = FileJournal(db_path, 3, "h", "b1")
    await journal.started(10, "3.aa")
    claims = [(10, "3.aa"), (11, "3.aa"), (12, "3.bb")]
    assert JournalEvidence(db_path, host="h").unstarted("h", 3, claims) == {11, 12}
    assert JournalEvidence(db_path, host="other").unstarted("h", 3, claims) == set()
    boot.write_text("b2\n")
    assert JournalEvidence(db_path, host="h").unstarted("h", 3, claims) == set()
    await journal.close(clean=False)
    os.unlink(journal.path)
    boot.write_text("b1\n")
    assert JournalEvidence(db_path, host="h").unstarted("h", 3, claims) == set()
    assert JournalEvidence(db_path, host="h").unstarted(None, 3, claims) == set()


async def test_delivered_entries_are_proof_kept_by_compaction_and_dropped_when_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 250 noted for a started claim is read back with its reply (one line, at most 200
    characters); a rewrite keeps it while the row is outstanding and settling drops it (the
    file is back to its header when nothing is outstanding); a version-1 journal (start marks
    only) is still read, but a delivered entry in one, or one for a claim never started, makes
    the journal prove nothing."""
    db_path = str(tmp_path / "q.db")
    boot = tmp_path / "boot_id"
    boot.write_text("b1\n")
    monkeypatch.setenv(BOOT_ID_ENV, str(boot))
    journal = FileJournal(db_path, 3, "h", "b1")
    await journal.started(10, "3.aa")
    journal.delivered(10, "3.aa", 250, "2.0.0 Ok:\r\n queued as " + "x" * 300)
    await journal.started(11, "3.aa")
    journal.delivered(12, "3.aa", 250, "never started: not noted")
    claims = [(10, "3.aa"), (11, "3.aa"), (12, "3.aa")]
    evidence = JournalEvidence(db_path, host="h")
    proof = evidence.proof(None, "h", 3, claims)
    assert proof.unstarted == {12} and list(proof.delivered) == [10]
    code, reply = proof.delivered[10]
    assert code == 250 and reply.startswith("2.0.0 Ok: queued as xxx") and len(reply) == 200
    for row in range(100, 100 + COMPACT_AT + 2):  # past COMPACT_AT settled entries: a rewrite
        await journal.started(row, "3.bb")
        journal.settled([row])
    lines = journal.path.read_text().splitlines()
    assert "100 3.bb" not in lines and lines[1:4] == ["10 3.aa", lines[2], "11 3.aa"], lines[:5]
    assert evidence.proof(None, "h", 3, claims).delivered == proof.delivered
    text = journal.path.read_text()
    journal.settled([10, 11])  # nothing outstanding: back to the header
    assert journal.path.read_text().count("\n") == 1
    await journal.close(clean=False)
    old = text.splitlines()[0].replace(MAGIC, "sender-start-journal/1") + "\n10 3.aa\n11 3.aa\n"
    journal.path.write_text(old)
    assert evidence.proof(None, "h", 3, claims) == type(proof)({12}, {})
    journal.path.write_text(old + "11 3.aa 250 ok\n")
    assert evidence.proof(None, "h", 3, claims).unstarted == set()
    journal.path.write_text(text + "12 3.aa 250 ok\n")
    assert evidence.proof(None, "h", 3, claims).delivered == {}


async def test_frozen_worker_with_waiting_claims_released_by_its_journal(queue: str, cli: Cli,
                                                                         tmp_path: Path) -> None:
    """SIGSTOP a worker (--prefetch 2) past its lease; recover releases its two waiting claims by
    the journal (on PostgreSQL, by its start marks) and another run sends them; SIGCONT: the woken
    worker starts neither and cuts its own transaction before the final dot: every message arrives
    exactly once, and no mark is left."""
    boot_file(tmp_path, cli)
    await seed(queue, 3)
    hook = FreezeAtRcpt(queue)
    with SinkThread(RecordingHandler(tmp_path / "maildir", Faults(rcpt=hook))) as sink:
        hook.proc = proc = cli.popen(*daemon_args(queue, sink.port, "--concurrency", "1", "--lease", "2",
                                                  "--prefetch", "2"))
        try:
            assert hook.frozen.wait(20)
            time.sleep(2.5)
            recovered = cli("recover", "--db", queue)
            assert "1 expired claim(s) moved to unknown; 2 never started" in recovered.out, recovered
            assert cli(*daemon_args(queue, sink.port, "--once")).code == 0
            assert states(queue) == {"unknown": 1, "sent": 2}
            proc.send_signal(signal.SIGCONT)
            assert wait_until(lambda: states(queue) == {"sent": 3}, 15), states(queue)
            time.sleep(1.0)  # had the worker started a released row, its copy would be here now
            assert stop(proc) == 0
        finally:
            proc.send_signal(signal.SIGCONT)
            stop(proc, signal.SIGKILL)
        copies = Counter(r.message_id for r in sink.received)
    assert len(copies) == 3 and max(copies.values()) == 1, copies
    assert query(queue, "SELECT count(*) FROM send_log WHERE status = 'sent'") == [(3,)]
    text = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert "lease fence: transaction cut before the final dot" in text
    if "://" in queue:
        from tests.test_pg_marks import marks

        assert marks(queue) == set()
