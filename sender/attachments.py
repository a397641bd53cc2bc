"""Attachments: checked at enqueue, stored in the queue content-addressed, loaded for a claim.

The queue stays self-contained (moving the file moves the attachments, deleting the original
changes nothing): each distinct file is stored once in ``attachments`` under its SHA-256, and
``message_attachments`` links rows to it, so one PDF sent to 10,000 leads is stored once.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024
MAX_FILES = 10
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Attachment:
    """One checked file of a message to queue."""

    path: str
    filename: str
    content_type: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Part:
    """One attachment of a claim, ready to build (``data`` is shared by every claim of a batch)."""

    filename: str
    content_type: str
    data: bytes


# Hashing the same file for every row of a 10,000-row CSV would dominate the import.
_checked: dict[tuple[str, int, int], tuple[str, int]] = {}


def _digest(path: str) -> tuple[str, int]:
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _checked[key] = (digest.hexdigest(), stat.st_size)
    return _checked[key]


def check(value: str) -> tuple[Attachment, ...]:
    """The ``attachments`` column: paths separated by ``;`` (relative to the current folder)."""
    from .intake import check_header

    paths = [p.strip() for p in value.split(";") if p.strip()]
    if len(paths) > MAX_FILES:
        raise InputError(f"attachments: at most {MAX_FILES} files per message")
    out: list[Attachment] = []
    for path in paths:
        file = Path(path)
        if not file.exists():
            raise InputError(f"attachments: {path}: no such file")
        if not file.is_file():
            raise InputError(f"attachments: {path}: not a regular file")
        if not os.access(file, os.R_OK):
            raise InputError(f"attachments: {path}: not readable")
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"attachments: {path}: {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        try:
            sha, size = _digest(path)
        except OSError as exc:
            raise InputError(f"attachments: {path}: {exc.strerror}") from None
        name = check_header("attachments: file name", file.name)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        out.append(Attachment(str(file), name, kind, sha, size))
    if sum(a.size for a in out) > MAX_TOTAL_BYTES:
        raise InputError(f"attachments: over {MAX_TOTAL_BYTES} bytes in all")
    return tuple(out)


