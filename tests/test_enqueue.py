"""Enqueue: bad input is refused whole and clearly, repeats are skipped, and what is queued is
exactly what the recipient's server receives.

The command-line tests run ``python -m sender enqueue`` as a real process over a real SQLite
file that already holds queued messages, and compare a full dump of that file before and after
each refused import. Delivery goes to a real aiosmtpd on 127.0.0.1 and is decoded there with
``email.policy.default``. Property tests (hypothesis) throw arbitrary header text at the
validator and the message builder.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import sqlite3
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sender import intake
from sender.errors import InputError
from sender.intake import check_address, make_message
from sender.message import build, row_of
from tests.conftest import Cli, SinkThread

FROM = "Team <team@example.org>"
HEADERS = {"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
           "Content-Transfer-Encoding"}


def _query(db_path: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def _dump(db_path: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return list(conn.iterdump())


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    return path


@pytest.fixture(scope="module")
def queued_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    path = _write_csv(folder / "first.csv", ["to", "subject", "body"],
                      [[f"old{i}@example.com", f"Old {i}", "b"] for i in range(3)])
    r = Cli(cwd=folder)("enqueue", "--db", str(folder / "q.db"), "--csv", str(path), "--from", FROM)
    assert r.code == 0, r.err
    assert not (folder / "q.db-wal").exists() or (folder / "q.db-wal").stat().st_size == 0
    return folder / "q.db"


@pytest.fixture
def queued(queued_template: Path, db_path: str) -> str:
    """A queue file that already holds three scheduled messages (a copy, made by the real CLI)."""
    shutil.copyfile(queued_template, db_path)
    return db_path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- bad input: exit 2, one line naming line and reason, nothing changed ----------------------

GOOD = "ok@example.com,Hello,Body\r\n"
BAD_CSV: dict[str, tuple[bytes, str]] = {
    "invalid address": (f"to,subject,body\r\n{GOOD}not-an-address,Hi,B\r\n".encode(),
                        r"line 3: to: invalid address 'not-an-address'"),
    "CR/LF in subject": (f'to,subject,body\r\n{GOOD}x@example.com,"Hi\r\nBcc: evil@evil.example",B\r\n'
                         .encode(), r"line 3: subject: contains a line break"),
    "bare LF in subject": (b'to,subject,body\r\nx@example.com,"Hi\nTo: evil@evil.example",B\r\n',
                           r"line 2: subject: contains a line break"),
    "CR/LF in address": (f'to,subject,body\r\n{GOOD}"x@example.com\r\nBcc: evil@evil.example",Hi,B\r\n'
                         .encode(), r"line 3: to: contains a line break"),
    "two addresses in one": (b'to,subject,body\r\n"x@example.com, evil@evil.example",Hi,B\r\n',
                             r"line 2: to: invalid address"),
    "vertical tab in name": (b"to,subject,body,name\r\nx@example.com,Hi,B,Jo\x0bBcc: e@evil.example\r\n",
                             r"line 2: name: contains the control character '\\x0b'"),
    "two From addresses": (b'to,subject,body,from\r\nx@example.com,Hi,B,"a@example.org, b@evil.example"\r\n',
                           r"line 2: from: expected one address"),
    "stray bracket in From": (b"to,subject,body,from\r\nx@example.com,Hi,B,a@example.org>\r\n",
                              r"line 2: from: expected one address"),
    "missing column": (b"to,body\r\nx@example.com,B\r\n", r"line 1: header lacks column\(s\) subject"),
    "unknown column": (b"to,subject,body,colour\r\nx@example.com,Hi,B,red\r\n",
                       r"line 1: unknown column\(s\) colour"),
    "empty required field": (f"to,subject,body\r\n{GOOD}x@example.com,,B\r\n".encode(),
                             r"line 3: subject: required, but empty"),
    "too few fields": (f"to,subject,body\r\n{GOOD}x@example.com,Hi\r\n".encode(),
                       r"line 3: fewer fields than the header's 3"),
    "unparseable date": (b"to,subject,body,send_at\r\nx@example.com,Hi,B,next tuesday\r\n",
                         r"line 2: send_at: not an ISO 8601 time: 'next tuesday'"),
    "non-UTF-8": (f"to,subject,body,name\r\n{GOOD.strip()},A\r\nx@example.com,Hi,B,J".encode()
                  + b"\xf6rg\r\n", r"line 3: not UTF-8 text"),
    "empty file": (b"", r"line 1: empty file"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_is_refused_whole(case: str, cli: Cli, queued: str, tmp_path: Path) -> None:
    """Each kind of bad CSV exits 2 with one line naming the line and reason, and changes nothing."""
    content, reason = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    before = _dump(queued)

    r = cli("enqueue", "--db", queued, "--csv", str(path), "--from", FROM)

    assert r.code == 2, (r.out, r.err)
    line = _one_line(r.err)
    assert line.startswith(f"error: {path}: line "), line
    assert re.search(reason, line), line
    assert _dump(queued) == before
    assert _query(queued, "SELECT count(*) FROM messages") == [(3,)]


def test_ten_megabyte_body_is_refused(cli: Cli, queued: str, tmp_path: Path) -> None:
    """A 10 MB body is refused with exit 2 naming its line, and nothing is queued."""
    path = tmp_path / "huge.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(f"to,subject,body\r\n{GOOD}huge@example.com,Big,")
        fh.write("x" * (10 * 1024 * 1024))
        fh.write("\r\n")
    before = _dump(queued)

    r = cli("enqueue", "--db", queued, "--csv", str(path), "--from", FROM)

    assert r.code == 2
    line = _one_line(r.err)
    assert "line 3:" in line and "larger than" in line, line
    assert _dump(queued) == before


def test_body_over_the_limit_but_under_the_csv_field_limit_is_refused() -> None:
    """A multi-byte body over the byte limit is refused by the validator, naming its size."""
    with pytest.raises(InputError, match=r"body: \d+ bytes, over the"):
        make_message({"to": "a@example.com", "subject": "s", "body": "é" * intake.MAX_BODY_BYTES},
                     line=7)


FLAG_CASES = {
    "CR/LF in subject": (["--to", "x@example.com", "--subject", "Hi\r\nBcc: evil@evil.example"],
                         "subject: contains a line break"),
    "LF in address": (["--to", "x@example.com\nBcc: evil@evil.example", "--subject", "Hi"],
                      "to: contains a line break"),
    "extra recipient": (["--to", "x@example.com, evil@evil.example", "--subject", "Hi"],
                        "to: invalid address"),
    "display name as address": (["--to", "X <x@example.com>", "--subject", "Hi"],
                                "to: invalid address"),
    "bad date": (["--to", "x@example.com", "--subject", "Hi", "--send-at", "31/12/2030"],
                 "send_at: not an ISO 8601 time"),
    "bad default From": (["--to", "x@example.com", "--subject", "Hi", "--from", "nobody"],
                         "--from/SENDER_FROM: expected one address"),
    "two default Froms": (["--to", "x@example.com", "--subject", "Hi", "--from",
                           "team@example.org, evil@evil.example"], "--from/SENDER_FROM: expected one address"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_bad_flags_are_refused(case: str, cli: Cli, queued: str) -> None:
    """Bad values given as flags exit 2 with a one-line reason and queue nothing."""
    flags, reason = FLAG_CASES[case]
    if "--from" not in flags:
        flags = [*flags, "--from", FROM]
    before = _dump(queued)

    r = cli("enqueue", "--db", queued, "--body", "B", *flags)

    assert r.code == 2, (r.out, r.err)
    assert reason in _one_line(r.err)
    assert _dump(queued) == before


def test_missing_folder_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    """A --db in a folder that does not exist is exit 2 with one line, for init and enqueue alike."""
    db = str(tmp_path / "nowhere" / "q.db")
    r = cli("init", "--db", db)
    assert r.code == 2 and "does not exist" in _one_line(r.err)
    r = cli("enqueue", "--db", db, "--to", "a@example.com", "--subject", "s", "--body", "b",
            "--from", FROM)
    assert r.code == 2 and "does not exist" in _one_line(r.err)
    assert not (tmp_path / "nowhere").exists()


def test_skip_invalid_queues_good_rows_and_lists_bad(cli: Cli, queued: str, tmp_path: Path) -> None:
    """--skip-invalid queues every good row and names each bad one on stderr."""
    path = _write_csv(tmp_path / "mixed.csv", ["to", "subject", "body", "send_at"], [
        ["a@example.com", "A", "b", ""],
        ["broken", "B", "b", ""],
        ["c@example.com", "C", "b", "2030-01-01T09:00:00+02:00"],
        ["d@example.com", "Hi\nBcc: evil@evil.example", "b", ""],
        ["e@example.com", "E", "b", "soon"],
    ])
    r = cli("enqueue", "--db", queued, "--csv", str(path), "--from", FROM, "--skip-invalid")

    assert r.code == 0, r.err
    assert "queued 2," in r.out
    skipped = [line for line in r.err.splitlines() if line.startswith("skipped invalid")]
    # Physical lines: the quoted subject with a line break spans lines 5 and 6.
    assert [re.search(r"line (\d+):", line).group(1) for line in skipped] == ["3", "5", "7"]  # type: ignore[union-attr]
    assert _query(queued, "SELECT r.email FROM messages m JOIN recipients r ON r.id = m.recipient_id "
                          "WHERE r.email NOT LIKE 'old%' ORDER BY 1") == [("a@example.com",), ("c@example.com",)]
    [(due,)] = _query(queued, "SELECT due_at FROM messages m JOIN recipients r ON r.id = m.recipient_id "
                              "WHERE r.email = 'c@example.com'")
    assert due == 1893481200.0  # 2030-01-01 07:00 UTC: the offset was honoured


# --- idempotency ------------------------------------------------------------------------------

def test_same_csv_twice_queues_each_once(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """Importing the same CSV twice queues every message once; the second run reports them skipped."""
    path = _write_csv(tmp_path / "leads.csv", ["to", "subject", "body", "campaign"],
                      [[f"lead{i}@example.com", "Hi", "b", "spring"] for i in range(50)])
    first = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", FROM)
    mids = _query(db_path, "SELECT id, message_id FROM messages ORDER BY id")
    second = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", FROM)

    assert (first.code, second.code) == (0, 0)
    assert "queued 50, skipped 0" in first.out
    assert "queued 0, skipped 50" in second.out
    assert _query(db_path, "SELECT id, message_id FROM messages ORDER BY id") == mids
    assert len(mids) == 50


def test_dedupe_key_defaults_to_campaign_and_recipient(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """The same recipient is queued once per campaign (case-insensitively) unless rows give their own dedupe_key."""
    path = _write_csv(tmp_path / "d.csv", ["to", "subject", "body", "campaign", "dedupe_key"], [
        ["lead@example.com", "First", "b", "spring", ""],
        ["Lead@Example.com", "Same campaign, same person", "b", "spring", ""],
        ["lead@example.com", "Other campaign", "b", "autumn", ""],
        ["lead@example.com", "Step 2", "b", "spring", "spring-step-2"],
        ["lead@example.com", "Step 2 again", "b", "spring", "spring-step-2"],
    ])
    r = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", FROM)

    assert r.code == 0, r.err
    assert "queued 3, skipped 2" in r.out
    assert _query(db_path, "SELECT b.subject FROM messages m JOIN message_bodies b "
                           "ON b.message_id = m.id ORDER BY m.id") == \
        [("First",), ("Other campaign",), ("Step 2",)]


def test_flag_enqueue_repeated_is_skipped(cli: Cli, db_path: str) -> None:
    """The same --to/--campaign given twice queues one message."""
    args = ["enqueue", "--db", db_path, "--to", "a@example.com", "--subject", "s", "--body", "b",
            "--campaign", "c1", "--from", FROM]
    assert "queued 1, skipped 0" in cli(*args).out
    assert "queued 0, skipped 1" in cli(*args).out
    assert _query(db_path, "SELECT count(*) FROM messages") == [(1,)]


# --- Message-ID and encoding at the receiving end ---------------------------------------------

def test_message_id_embeds_row_and_domain(cli: Cli, db_path: str, tmp_path: Path) -> None:
    """Each Message-ID is minted at enqueue, unique, embeds its queue row id and the From domain."""
    path = _write_csv(tmp_path / "m.csv", ["to", "subject", "body", "from"], [
        ["a@example.com", "s", "b", ""],
        ["b@example.com", "s", "b", "Other <news@mail.example.net>"],
    ])
    assert cli("enqueue", "--db", db_path, "--csv", str(path), "--from", FROM).code == 0
    rows = _query(db_path, "SELECT id, message_id FROM messages ORDER BY id")
    assert [row_of(mid) for _id, mid in rows] == [row_id for row_id, _mid in rows]
    assert rows[0][1].endswith("@example.org>") and rows[1][1].endswith("@mail.example.net>")
    assert len({mid for _id, mid in rows}) == 2


def test_non_ascii_names_and_subjects_arrive_encoded(cli: Cli, sink: SinkThread, db_path: str,
                                                     tmp_path: Path) -> None:
    """Non-ASCII display names, subjects and bodies travel as 7-bit headers and decode back exactly."""
    rows = [
        ["jorg@example.com", "Grüße aus Köln — Ihr Material 📎", "Hallo Jörg,\nanbei.", "Jörg Müller"],
        ["ivan@example.com", "Ваш материал", "Привет!", "Иван Петров"],
        ["li@example.com", "资料已发送", "你好", "李雷, \"Lei\" <x>"],
        ["ann@bücher.example", "Plain subject", "plain body", ""],
    ]
    path = _write_csv(tmp_path / "intl.csv", ["to", "subject", "body", "name"], rows)
    r = cli("enqueue", "--db", db_path, "--csv", str(path), "--from", "Équipe Ventes <team@example.org>")
    assert r.code == 0, r.err
    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0

    got = {}
    for m in sink.received:
        head = m.raw.split(b"\r\n\r\n", 1)[0]
        assert head.isascii(), head
        msg = BytesParser(policy=policy.default).parsebytes(m.raw)
        [to] = msg["To"].addresses
        body = msg.get_content().replace("\r\n", "\n").rstrip("\n")
        got[to.addr_spec] = (msg["Subject"], body, to.display_name,
                             msg["From"].addresses[0].display_name)
    assert got == {
        "jorg@example.com": (rows[0][1], "Hallo Jörg,\nanbei.", "Jörg Müller", "Équipe Ventes"),
        "ivan@example.com": (rows[1][1], "Привет!", "Иван Петров", "Équipe Ventes"),
        "li@example.com": (rows[2][1], "你好", "李雷, \"Lei\" <x>", "Équipe Ventes"),
        "ann@xn--bcher-kva.example": ("Plain subject", "plain body", "", "Équipe Ventes"),
    }
    assert sorted(r for m in sink.received for r in m.rcpt_tos) == sorted(got)


def test_quoted_local_part_arrives_unchanged(cli: Cli, sink: SinkThread, db_path: str) -> None:
    """A valid quoted local part ("first last"@domain) reaches the server unchanged in RCPT and To."""
    r = cli("enqueue", "--db", db_path, "--to", '"first last"@example.com', "--subject", "s",
            "--body", "b", "--from", FROM)
    assert r.code == 0, r.err
    assert cli("run", "--db", db_path, "--smtp-port", str(sink.port), "--once").code == 0

    [m] = sink.received
    assert m.rcpt_tos == ['"first last"@example.com']
    msg = BytesParser(policy=policy.default).parsebytes(m.raw)
    assert [a.addr_spec for a in msg["To"].addresses] == ['"first last"@example.com']


# --- properties -------------------------------------------------------------------------------

# Text that is mostly harmless but rich in the characters header injection is made of.
_NASTY = st.sampled_from(list("\r\n\t\x0b\x0c\x1c\x85\u2028\u2029\x00 :;,<>@\"'=?é€😀"))
HEADER_TEXT = st.text(alphabet=st.one_of(_NASTY, st.characters()), max_size=60)
BREAK = st.sampled_from(["\r", "\n", "\r\n", "\n\r"])


def _parse(data: bytes) -> Any:
    return BytesParser(policy=policy.default).parsebytes(data)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=HEADER_TEXT, name=HEADER_TEXT, from_name=HEADER_TEXT)
@example(subject="Hi\r\nBcc: evil@evil.example", name="", from_name="")
@example(subject="Hi", name="a@evil.example, b@evil.example", from_name="x\rTo: y@evil.example")
@example(subject="=?utf-8?q?Bcc=3A_evil=40evil=2Eexample?=", name="\x85Bcc: e@evil.example",
         from_name="")
def test_header_text_never_adds_a_header_or_recipient(subject: str, name: str, from_name: str) -> None:
    """Whatever the header text, a message is either refused at enqueue or has exactly the standard
    headers, one To address and one envelope recipient."""
    try:
        m = make_message({"to": "lead@example.com", "subject": subject, "body": "b", "name": name,
                          "from": f'"{from_name}" <team@example.org>' if from_name else ""})
    except InputError:
        return
    env = build(mid="<1.abc@example.org>", from_addr=m.from_addr or "team@example.org",
                from_name=m.from_name, to=m.to, to_name=m.name, subject=m.subject,
                body_text=m.body, body_html=None, date=0.0)
    head = env.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    msg = _parse(env.data)
    assert set(msg.keys()) == HEADERS and len(msg.keys()) == len(HEADERS)
    assert [a.addr_spec for a in msg["To"].addresses] == ["lead@example.com"]
    assert [a.addr_spec for a in msg["From"].addresses] == ["team@example.org"]
    assert env.recipient == "lead@example.com"


@settings(max_examples=200, deadline=None, database=None)
@given(before=HEADER_TEXT, brk=BREAK, after=HEADER_TEXT,
       field=st.sampled_from(["to", "subject", "name", "campaign", "dedupe_key", "from"]))
def test_any_line_break_in_a_header_field_is_refused(before: str, brk: str, after: str, field: str) -> None:
    """A CR or LF inside any header field makes the row invalid (surrounding whitespace is trimmed)."""
    raw = {"to": "lead@example.com", "subject": "s", "body": "b"}
    inner = "x@example.com" if field in ("to", "from") else "x"
    raw[field] = f"{before}{inner}{brk}x{after}"
    with pytest.raises(InputError):
        make_message(raw)


@settings(max_examples=300, deadline=None, database=None)
@given(to=st.one_of(HEADER_TEXT, st.emails().map(str),
                    st.builds("{}@{}".format, HEADER_TEXT, st.sampled_from(["example.com", "b.co"]))))
@example(to="a@example.com\r\nRCPT TO:<evil@evil.example>")
@example(to="a@example.com>\r\nRCPT TO:<evil@evil.example")
def test_any_accepted_address_is_one_recipient(to: str) -> None:
    """An address that passes validation is exactly one envelope recipient and one To address."""
    try:
        addr = check_address("to", to)
    except InputError:
        return
    assert not re.search(r"[\r\n]", addr)
    env = build(mid="<1.abc@example.org>", from_addr="team@example.org", from_name=None,
                to=addr, to_name=None, subject="s", body_text="b", body_html=None, date=0.0)
    assert env.recipient == addr
    assert len(_parse(env.data)["To"].addresses) == 1


@contextlib.contextmanager
def _stdlib_only() -> Iterator[None]:
    fast = intake._SIMPLE_ADDR
    intake._SIMPLE_ADDR = re.compile(r"(?!)")  # never matches: every address takes the full parse
    try:
        yield
    finally:
        intake._SIMPLE_ADDR = fast


def _verdict(value: str) -> str:
    try:
        return check_address("to", value)
    except InputError:
        return "refused"


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.emails().map(str), st.from_regex(r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]{1,12}@"
                                                     r"[a-zA-Z0-9.-]{1,20}", fullmatch=True)))
@example("a..b@example.com")
@example(".a@example.com")
@example("a@example..com")
def test_fast_address_path_agrees_with_the_stdlib_parser(value: str) -> None:
    """The quick check for plain addresses accepts, refuses and normalises exactly like the full parse."""
    fast = _verdict(value)
    with _stdlib_only():
        slow = _verdict(value)
    assert fast == slow


def test_many_bad_rows_are_summarised_on_one_line(cli: Cli, queued: str, tmp_path: Path) -> None:
    """A file full of bad rows is refused on one line naming the first and counting the rest."""
    path = _write_csv(tmp_path / "junk.csv", ["to", "subject", "body"],
                      [[f"junk{i}", "s", "b"] for i in range(150)])
    before = _dump(queued)
    r = cli("enqueue", "--db", queued, "--csv", str(path), "--from", FROM)
    assert r.code == 2
    line = _one_line(r.err)
    assert "line 2: to: invalid address 'junk0'" in line
    assert "and at least 100 more bad rows; nothing was queued" in line
    assert _dump(queued) == before
