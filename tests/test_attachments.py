"""Attachments: the ``attachments`` CSV column and ``--attach`` are checked at enqueue (exists,
regular file, readable, size), stored in the queue once per distinct file, and sent as
multipart/mixed with their filenames (RFC 2231 for non-ASCII); the queue is self-contained."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
from pathlib import Path

import pytest

from sender import attachments
from tests.conftest import Cli, CliResult, SinkThread
from tests.support import query, write_csv


def test_attachments_arrive_byte_identical_with_their_names(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """Two files (one with a non-ASCII name) arrive byte for byte, named, after the originals are deleted."""
    pdf = tmp_path / "Oferta \u2013 zażółć.pdf"
    pdf.write_bytes(os.urandom(150_000) + b"\r\n.\r\n\x00end")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nline two\n")
    db = str(tmp_path / "q.db")
    rows = [{"to": "lead@example.com", "subject": "Materials", "body": "Attached.", "from": "team@example.org",
             "attachments": f"{pdf};{notes}"}]
    assert cli("enqueue", "--db", db, "--csv", write_csv(tmp_path / "in.csv", rows)).code == 0
    originals = pdf.read_bytes(), notes.read_bytes()
    pdf.unlink()
    notes.unlink()  # the queue carries its own copies
    out = cli("run", "--db", db, "--smtp-port", str(sink.port), "--once")
    assert out.code == 0, out.err
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    files = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_attachments()]
    assert files == [("Oferta \u2013 zażółć.pdf", "application/pdf", originals[0]),
                     ("notes.txt", "text/plain", originals[1])]
    assert b"filename*=utf-8''Oferta" in sink.received[0].raw  # RFC 2231
    assert msg.get_body(("plain",)).get_content().strip() == "Attached."  # type: ignore[union-attr]


def test_a_thousand_messages_with_one_file_store_it_once(tmp_path: Path, cli: Cli) -> None:
    """1,000 rows attaching the same 1 MB file grow the queue file by one copy, plus a link row
    (under 200 bytes) per message: 1,000 copies would be a gigabyte."""
    blob = tmp_path / "deck.pdf"
    blob.write_bytes(os.urandom(1024 * 1024))
    sizes = {}
    for name, column in (("plain", ""), ("attached", str(blob))):
        db = str(tmp_path / f"{name}.db")
        rows = [{"to": f"lead{i}@example.com", "subject": "Deck", "body": "Here.", "from": "team@example.org",
                 "attachments": column} for i in range(1000)]
        out = cli("enqueue", "--db", db, "--csv", write_csv(tmp_path / f"{name}.csv", rows))
        assert out.code == 0, out.err
        sizes[name] = os.path.getsize(db) + (os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0)
    growth = sizes["attached"] - sizes["plain"]
    print(f"queue file: {sizes['plain']} bytes without, {sizes['attached']} with the attachment: "
          f"+{growth} for a {blob.stat().st_size}-byte file on 1,000 rows")
    assert blob.stat().st_size <= growth < blob.stat().st_size + 1000 * 200
    assert query(str(tmp_path / "attached.db"), "SELECT count(*), sum(size) FROM attachments") == [(1, 1024 * 1024)]
    assert query(str(tmp_path / "attached.db"), "SELECT count(*) FROM message_attachments") == [(1000,)]


def test_flag_attach(tmp_path: Path, cli: Cli, sink: SinkThread) -> None:
    """--attach (repeatable) on a flag enqueue sends the file."""
    data = tmp_path / "a.bin"
    data.write_bytes(b"\x00\x01binary")
    db = str(tmp_path / "q.db")
    assert cli("enqueue", "--db", db, "--to", "lead@example.com", "--subject", "s", "--body", "b",
               "--from", "team@example.org", "--attach", str(data)).code == 0
    assert cli("run", "--db", db, "--smtp-port", str(sink.port), "--once").code == 0
    msg = email.message_from_bytes(sink.received[0].raw, policy=email.policy.default)
    [part] = msg.iter_attachments()
    assert part.get_payload(decode=True) == b"\x00\x01binary"


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: str(d / "missing.pdf"), "no such file"),
    (lambda d: str(d), "not a regular file"),
    (lambda d: _big(d), "byte limit"),
    (lambda d: _unreadable(d), "not readable"),
])
def test_bad_attachments_are_refused(tmp_path: Path, cli: Cli, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    """A missing, non-regular, oversized or unreadable file is exit 2 with the reason; nothing queued."""
    path = make(tmp_path)
    db = str(tmp_path / "q.db")
    rows = [{"to": "lead@example.com", "subject": "s", "body": "b", "from": "team@example.org", "attachments": path}]
    args = ("enqueue", "--db", db, "--csv", write_csv(tmp_path / "in.csv", rows))
    root_reads_it = reason == "not readable" and os.access(path, os.R_OK)  # root: run without that power
    out = _without_read_override(cli, *args) if root_reads_it else cli(*args)
    assert out.code == 2 and out.err.startswith("error: ") and reason in out.err, out.err
    assert not Path(db).exists()


def _without_read_override(cli: Cli, *args: str) -> CliResult:
    """Root's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (``setpriv``, util-linux), so a mode
    000 file is as unreadable to the command as to any other user."""
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cli.cmd(*args)],
                          cwd=cli.cwd, env=cli.environ(), capture_output=True, text=True, timeout=60)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _big(folder: Path) -> str:
    path = folder / "big.bin"
    with path.open("wb") as fh:
        fh.truncate(attachments.MAX_FILE_BYTES + 1)
    return str(path)


def _unreadable(folder: Path) -> str:
    path = folder / "secret.pdf"
    path.write_bytes(b"x")
    path.chmod(0)
    return str(path)
