"""The queue file on disk, apart from what SQLite does with it: who may read it, when a path may
become a new queue, and whether the file a process opened is still the one at its path.

* Private: the queue holds recipients and bodies, so it is created ``0600`` (``init --mode`` may
  share it with the file's group) before SQLite writes a byte; SQLite gives its ``-wal`` and
  ``-shm`` the database file's mode.
* Only commands that create a queue (``init``, ``enqueue``) may start one from a missing or
  0-byte file; the others are refused, so a typo in ``--db`` never grows a second, empty queue.
* ``OpenedFile.check``: a file replaced, deleted or stripped of its ``-wal`` under a live writer
  (outside SQLite's guarantees) is noticed before the writer writes again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import NoDatabase, QueueFileChanged, StoreError

FILE_MODE = 0o600
SQLITE_MAGIC = b"SQLite format 3\x00"


def no_queue(path: str, what: str = "") -> NoDatabase:
    return NoDatabase(f"no queue database at {path} ({what}create it with: python -m sender init --db {path})")


def require_queue_file(path: str) -> None:
    """Refuse a missing or 0-byte file (one whose ``-wal`` is also empty): not a queue yet."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise no_queue(path) from None
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror}") from exc
    if size == 0 and not _nonempty(path + "-wal"):
        raise no_queue(path, "the file is empty; ")


def _nonempty(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def create_private(path: str, mode: int = FILE_MODE) -> None:
    """Create the queue file with ``mode`` whatever the umask (an existing empty file is given
    ``mode`` too, before any data goes in); an existing queue is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        if os.path.isfile(path) and os.stat(path).st_size == 0:
            os.chmod(path, mode)
        return
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def set_mode(path: str, mode: int) -> None:
    """``init --mode``: give the queue file and its ``-wal``/``-shm`` that mode."""
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, mode)


def is_sqlite(path: str) -> bool:
    """Whether the file starts with SQLite's magic (damaged pages, not a foreign file)."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """The device and inode a connection opened, and whether its ``-wal`` must exist (WAL mode)."""

    path: str
    dev: int
    ino: int
    wal: bool

    @classmethod
    def of(cls, path: str, wal: bool) -> OpenedFile:
        st = os.stat(path)
        return cls(path, st.st_dev, st.st_ino, wal)

    def check(self) -> None:
        """Raise ``QueueFileChanged`` unless the path still names this file, with its WAL.

        Writing on after the file was replaced, deleted or lost its ``-wal`` would record claims
        and outcomes where no other process looks: duplicates and a SendLog with holes. Two
        ``stat`` calls, a few microseconds (``python -m bench.file_check``), once per turn of the
        daemon's loop."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise QueueFileChanged(f"{self.path}: the queue file was deleted while in use; stopping "
                                   "without writing to it") from None
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            raise QueueFileChanged(f"{self.path}: the queue file was replaced by another file while in "
                                   "use; stopping without writing to either")
        if self.wal and not os.path.exists(self.path + "-wal"):
            raise QueueFileChanged(f"{self.path}: its -wal file was deleted while in use (recent "
                                   "commits may be lost); stopping without writing")
