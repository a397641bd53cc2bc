"""The start journal: which claims a worker began, so that a crash need not make the rest ``unknown``.

Before a session sends ``MAIL FROM`` for a claim, the worker appends ``ROW TOKEN`` to its own
journal, ``QUEUE.journal/<worker id>`` (folder 0700, file 0600), with one plain ``write()``: no
fsync, a few microseconds. The file's first line names the machine's boot id, the host, the worker
and its pid. When another process recovers that worker's claims (its lease expired), on the same
host, under the same boot id, with the journal readable and well formed, a claimed row absent from
the journal was provably never begun: it goes back to ``scheduled`` with no attempt counted.
Every other case keeps the old rule, ``unknown``.

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

``StartMarks`` (the worker's side) and ``StartEvidence`` (the recoverer's) are the interface a
PostgreSQL engine fills in with a marker table written asynchronously and trusted only if the
server has not restarted since the claim.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
BOOT_ID_ENV = "SENDER_BOOT_ID_FILE"  # where to read the boot id instead (tests)
MAGIC = "sender-start-journal/1"
COMPACT_AT = 512  # entries in the file beyond those outstanding before it is rewritten


def boot_id() -> str | None:
    """This boot of this machine (Linux), or None where the system does not say."""
    try:
        value = Path(os.environ.get(BOOT_ID_ENV) or BOOT_ID_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def journal_dir(db_path: str) -> Path:
    return Path(f"{db_path}.journal")


def worker_of(token: str) -> int | None:
    """The worker id a claim token starts with (``<worker id>.<random>``)."""
    head, _, _ = token.partition(".")
    return int(head) if head.isdigit() else None


class StartMarks(Protocol):
    """The worker's side: a mark before each start, cheap; dropped once the outcome is stored."""

    def started(self, row: int, token: str) -> None: ...

    def settled(self, rows: Iterable[int]) -> None: ...

    def close(self, *, clean: bool) -> None: ...


class StartEvidence(Protocol):
    """The recoverer's side, inside its transaction: which of a dead worker's ``(row, token)``
    claims provably never started (an empty set when nothing can be proven). ``host`` is the
    host the worker's row names (None when the row is gone)."""

    def unstarted(self, host: str | None, worker_id: int, claims: Sequence[tuple[int, str]]) -> set[int]: ...

    def forget(self, worker_id: int) -> None: ...


class NoMarks:
    """No journal (no boot id, or it could not be created): every crash leaves ``unknown``."""

    def started(self, row: int, token: str) -> None:
        return None

    def settled(self, rows: Iterable[int]) -> None:
        return None

    def close(self, *, clean: bool) -> None:
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
        self._live: dict[int, str] = {}
        self._lines = 0
        self._fd: int | None = self._create(self.path)

    def _create(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(fd, self._header)
        return fd

    def started(self, row: int, token: str) -> None:
        """Append the start mark. If that fails, make sure no recoverer trusts the journal (it
        is removed); if even that fails, raise: the message must not start."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, f"{row} {token}\n".encode())
        except OSError as exc:
            self._disable(exc)
            return
        self._live[row] = token
        self._lines += 1

    def _disable(self, exc: OSError) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)  # raises if the journal cannot be taken away
        log.warning("start journal %s failed (%s) and was removed: a crash now leaves this "
                    "worker's claims unknown", self.path, exc)

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
            os.write(fd, self._header + "".join(f"{r} {t}\n" for r, t in self._live.items()).encode())
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self._lines = fd, len(self._live)

    def close(self, *, clean: bool) -> None:
        """Close; with ``clean`` (every outcome stored) the file goes too."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            if clean:
                self.path.unlink(missing_ok=True)


def open_marks(db_path: str, worker_id: int, host: str) -> StartMarks:
    """The journal for this worker, or ``NoMarks`` where none can be kept (then crashes leave
    ``unknown``, the rule without a journal)."""
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


class JournalEvidence:
    """Reads dead workers' journals on this host and boot; trusts nothing else."""

    def __init__(self, db_path: str, host: str | None = None) -> None:
        self.folder = journal_dir(db_path)
        self.host = host or socket.gethostname()
        self.boot = boot_id()

    def unstarted(self, host: str | None, worker_id: int, claims: Sequence[tuple[int, str]]) -> set[int]:
        if self.boot is None or host != self.host:
            return set()
        marks = self._read(worker_id)
        if marks is None:
            return set()
        return {r for r, token in claims if (r, token) not in marks}

    def _read(self, worker_id: int) -> set[tuple[int, str]] | None:
        """The marks of a journal of this boot, host and worker, or None (missing, unreadable,
        foreign or damaged: prove nothing)."""
        try:
            text = (self.folder / str(worker_id)).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None
        lines = text.split("\n")
        head = lines[0].split(" ")
        expected = [MAGIC, f"boot={self.boot}", f"host={self.host}", f"worker={worker_id}"]
        if head[:4] != expected or lines[-1] != "":
            return None
        marks: set[tuple[int, str]] = set()
        for line in lines[1:-1]:
            row, sep, token = line.partition(" ")
            if not sep or not row.isdigit() or not token or " " in token:
                return None
            marks.add((int(row), token))
        return marks

    def forget(self, worker_id: int) -> None:
        """A dead worker's claims are all settled: its journal is no longer needed."""
        (self.folder / str(worker_id)).unlink(missing_ok=True)
        (self.folder / f"{worker_id}.new").unlink(missing_ok=True)  # a rewrite cut short
