"""The start journal: which claims a worker began, so that a crash need not make the rest ``unknown``.

Before a session sends ``MAIL FROM`` for a claim, the worker appends ``ROW TOKEN`` to its own
journal, ``QUEUE.journal/<worker id>`` (folder 0700, file 0600), with one plain ``write()``: no
fsync, a few microseconds. The file's first line names the machine's boot id, the host, the worker
and its pid. When another process recovers that worker's claims (its lease expired), on the same
host, under the same boot id, with the journal readable and well formed, a claimed row absent from
the journal was provably never begun: it goes back to ``scheduled`` with no attempt counted.
Every other case keeps the old rule, ``unknown``.

When a session gets the relay's final ``250`` for a row, the worker appends ``ROW TOKEN 250 REPLY``
(the reply's first 200 characters) the same way. A recoverer that trusts the journal records such
a row ``sent``, with the journaled reply, instead of ``unknown``: a ``250`` after the data is the
relay's acceptance, a fact, and the entry can only exist if it was received. So a crash leaves
``unknown`` only the messages its sessions were in the middle of, at most one per session, even
with outcomes waiting for the next turn's write.

Why the absence is proof: a ``write()`` that returned is in the kernel's page cache, which other
processes read at once and which outlives the death of the writer (SIGKILL, a crash, OOM); it
does not outlive a power loss or a kernel crash, and those change the boot id, so a journal from
an earlier boot is never trusted. A frozen worker (SIGSTOP) is no exception: its lease fence
(``fence.py``) keeps it from sending any message's final dot after its own deadline, which comes
before the recoverer can see the lease expire; so a row released here is never completed by it,
even if it wakes up and begins it late. See docs/design.md.

The journal stays small: entries are dropped once the store has recorded their outcomes (the
file is truncated to its header whenever nothing is outstanding, rewritten with only the
outstanding entries when it grows), and it is removed when the worker stops cleanly or a
recoverer has settled all of a dead worker's claims.

``StartMarks`` (the worker's side) and ``StartEvidence`` (the recoverer's) are the interface;
the queue's engine picks their implementations (``open_marks``, ``evidence_for``): this file
journal for a queue file, a marker table committed asynchronously for PostgreSQL
(``store/pg_marks.py``), trusted only while the server has not restarted.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .store.engine import Store, Tx

log = logging.getLogger(__name__)

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
BOOT_ID_ENV = "SENDER_BOOT_ID_FILE"  # where to read the boot id instead (tests)
MAGIC = "sender-start-journal/2"  # /2 adds delivered entries; /1 journals (start marks only) still read
MAGICS = (MAGIC, "sender-start-journal/1")
REPLY_CHARS = 200  # of a delivered entry's reply
COMPACT_AT = 512  # entries in the file beyond those outstanding before it is rewritten


def boot_id() -> str | None:
    """This boot of this machine (Linux), or None where the system does not say."""
    try:
        value = Path(os.environ.get(BOOT_ID_ENV) or BOOT_ID_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def is_file_queue(db_path: str) -> bool:
    """Journals live beside a queue file; a database server's queue (a URL) has none yet."""
    from .store.engine import engine_for

    return engine_for(db_path).name == "sqlite"


def journal_dir(db_path: str) -> Path:
    return Path(f"{db_path}.journal")


def worker_of(token: str) -> int | None:
    """The worker id a claim token starts with (``<worker id>.<random>``)."""
    head, _, _ = token.partition(".")
    return int(head) if head.isdigit() else None


@dataclass(frozen=True, slots=True)
class Proof:
    """What a dead worker's start marks prove about its claims: ``unstarted`` rows never began;
    ``delivered`` rows got the relay's final reply (``row -> (code, reply)``)."""

    unstarted: set[int] = field(default_factory=set)
    delivered: dict[int, tuple[int, str]] = field(default_factory=dict)


NOTHING = Proof()


class StartMarks(Protocol):
    """The worker's side: a mark before each start (written when ``started`` returns) and one on
    each relay acceptance, cheap; dropped once the outcome is stored."""

    async def started(self, row: int, token: str) -> None: ...

    def delivered(self, row: int, token: str, code: int, reply: str) -> bool: ...

    def settled(self, rows: Iterable[int]) -> None: ...

    async def close(self, *, clean: bool) -> None: ...


class StartEvidence(Protocol):
    """The recoverer's side, inside its transaction ``tx``: which of a dead worker's ``(row, token)``
    claims provably never started and which the relay provably accepted (``NOTHING`` when
    nothing can be proven). ``host`` is the host the worker's row names (None when the row is gone)."""

    def proof(self, tx: Tx, host: str | None, worker_id: int, claims: Sequence[tuple[int, str]]) -> Proof: ...

    def forget(self, tx: Tx, worker_id: int) -> None: ...


class NoMarks:
    """No journal (no boot id, or it could not be created): every crash leaves ``unknown``."""

    async def started(self, row: int, token: str) -> None:
        return None

    def delivered(self, row: int, token: str, code: int, reply: str) -> bool:
        return False

    def settled(self, rows: Iterable[int]) -> None:
        return None

    async def close(self, *, clean: bool) -> None:
        return None


def _header(boot: str, host: str, worker_id: int) -> bytes:
    return f"{MAGIC} boot={boot} host={host} worker={worker_id} pid={os.getpid()}\n".encode()


class FileJournal:
    """One worker's journal file, appended with ``os.write`` on an ``O_APPEND`` descriptor."""

    def __init__(self, db_path: str, worker_id: int, host: str, boot: str) -> None:
        folder = journal_dir(db_path)
        folder.mkdir(mode=0o700, exist_ok=True)
        self.path = folder / str(worker_id)
        self._header = _header(boot, host, worker_id)
        self._live: dict[int, bytes] = {}  # row -> its entries in the file (start, and delivered)
        self._lines = 0
        self._stale = False  # the journal stopped taking marks but its file could not be removed
        self._fd: int | None = self._create(self.path)

    def _create(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(fd, self._header)
        return fd

    async def started(self, row: int, token: str) -> None:
        """Append the start mark. If that fails, make sure no recoverer trusts the journal (it
        is removed); if even that fails, raise: the message must not start (as long as a file
        without its mark could be trusted)."""
        if self._fd is None:
            if self._stale:
                self._remove()
            return
        entry = b"%d %s\n" % (row, token.encode())
        try:
            os.write(self._fd, entry)
        except OSError as exc:
            self._disable(exc)
            return
        self._live[row] = entry
        self._lines += 1

    def delivered(self, row: int, token: str, code: int, reply: str) -> bool:
        """Append the relay's acceptance; True when it is in the journal. Best effort: without
        it a crash leaves the row ``unknown`` (the rule without this entry), never wrong; a
        failed write disables the journal as for a start mark."""
        if self._fd is None or row not in self._live or not _accepted(str(code)):
            return False
        entry = b"%d %s %d %s\n" % (row, token.encode(), code, _one_line(reply))
        try:
            os.write(self._fd, entry)
        except OSError as exc:
            self._disable(exc)
            return False
        self._live[row] += entry
        self._lines += 1
        return True

    def _disable(self, exc: OSError) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._stale = True
        self._remove()
        log.warning("start journal %s failed (%s) and was removed: a crash now leaves this "
                    "worker's claims unknown", self.path, exc)

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)  # raises if the journal cannot be taken away
        self._stale = False

    def settled(self, rows: Iterable[int]) -> None:
        """The store recorded these rows' outcomes: their marks are no longer needed."""
        for row in rows:
            self._live.pop(row, None)
        if self._fd is None or self._lines == 0:
            return
        try:
            if not self._live:
                os.ftruncate(self._fd, len(self._header))
                self._lines = 0
            elif self._lines > len(self._live) + COMPACT_AT:
                self._compact()
        except OSError as exc:  # the old marks stay: more marks only means more unknown
            log.warning("start journal %s could not be shortened: %s", self.path, exc)

    def _compact(self) -> None:
        """Rewrite with only the outstanding marks; the rename swaps whole files, so a reader
        sees the old journal or the new one, never a half."""
        assert self._fd is not None
        tmp = self.path.with_name(self.path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            os.write(fd, self._header + b"".join(self._live.values()))
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self._lines = fd, len(self._live)

    async def close(self, *, clean: bool) -> None:
        """Close; with ``clean`` (every outcome stored) the file goes too."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            if clean:
                self.path.unlink(missing_ok=True)


def _accepted(code: str) -> bool:
    return len(code) == 3 and code.isdigit() and code[0] == "2"


def _one_line(reply: str) -> bytes:
    """A reply as it goes into a delivered entry: one line of ASCII, at most REPLY_CHARS."""
    text = " ".join(reply.split())[:REPLY_CHARS]
    return text.encode("ascii", "backslashreplace")


async def open_marks(db: Store, worker_id: int, host: str) -> StartMarks:
    """The journal for this worker, as its queue's engine keeps one, or ``NoMarks`` where none can
    be kept (then crashes leave ``unknown``, the rule without a journal)."""
    from .errors import StoreError

    db_path = db.path
    if db.engine.name == "postgres":
        from .store.pg_marks import open_pg_marks

        try:
            return await open_pg_marks(db, worker_id)
        except StoreError as exc:
            log.warning("cannot keep start marks (%s): a crash leaves claims unknown", exc)
            return NoMarks()
    boot = boot_id()
    if boot is None:
        log.info("no boot id on this system: no start journal (a crash leaves claims unknown)")
        return NoMarks()
    try:
        return FileJournal(db_path, worker_id, host, boot)
    except OSError as exc:
        log.warning("cannot create a start journal next to %s (%s): a crash leaves claims unknown",
                    db_path, exc)
        return NoMarks()


def evidence_for(db_path: str) -> StartEvidence:
    """What a recoverer of the queue at ``db_path`` reads: its engine's kind of start journal."""
    from .store.engine import engine_for

    if engine_for(db_path).name == "postgres":
        from .store.pg_marks import PgEvidence

        return PgEvidence()
    return JournalEvidence(db_path)


class JournalEvidence:
    """Reads dead workers' journals on this host and boot; trusts nothing else."""

    def __init__(self, db_path: str, host: str | None = None) -> None:
        self.folder = journal_dir(db_path)
        self.host = host or socket.gethostname()
        self.boot = boot_id() if is_file_queue(db_path) else None  # None: trusts no journal

    def proof(self, tx: Tx | None, host: str | None, worker_id: int,
              claims: Sequence[tuple[int, str]]) -> Proof:
        if self.boot is None or host != self.host:
            return NOTHING
        read = self._read(worker_id)
        if read is None:
            return NOTHING
        started, delivered = read
        return Proof({r for r, token in claims if (r, token) not in started},
                     {r: delivered[(r, token)] for r, token in claims if (r, token) in delivered})

    def unstarted(self, host: str | None, worker_id: int, claims: Sequence[tuple[int, str]]) -> set[int]:
        return self.proof(None, host, worker_id, claims).unstarted

    def _read(self, worker_id: int) -> tuple[set[tuple[int, str]], dict[tuple[int, str], tuple[int, str]]] | None:
        """The start marks and delivered entries of a journal of this boot, host and worker, or
        None (missing, unreadable, foreign or damaged: prove nothing)."""
        try:
            text = (self.folder / str(worker_id)).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None
        lines = text.split("\n")
        head = lines[0].split(" ")
        expected = [f"boot={self.boot}", f"host={self.host}", f"worker={worker_id}"]
        if not head or head[0] not in MAGICS or head[1:4] != expected or lines[-1] != "":
            return None
        started: set[tuple[int, str]] = set()
        delivered: dict[tuple[int, str], tuple[int, str]] = {}
        for line in lines[1:-1]:
            parts = line.split(" ", 3)
            if len(parts) < 2 or not parts[0].isdigit() or not parts[1]:
                return None
            claim = (int(parts[0]), parts[1])
            if len(parts) == 2:
                started.add(claim)
            elif head[0] == MAGIC and _accepted(parts[2]) and claim in started:
                delivered[claim] = (int(parts[2]), parts[3] if len(parts) == 4 else "")
            else:
                return None
        return started, delivered

    def forget(self, tx: Tx | None, worker_id: int) -> None:
        """A dead worker's claims are all settled: its journal is no longer needed."""
        (self.folder / str(worker_id)).unlink(missing_ok=True)
        (self.folder / f"{worker_id}.new").unlink(missing_ok=True)  # a rewrite cut short
