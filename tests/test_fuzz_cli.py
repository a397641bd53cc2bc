"""No traceback on any input (issue #12 item 3): Hypothesis drives ``sender.cli.main`` in-process
with hostile arguments for every command that ends on its own (run as ``run --once``), and the monitor's Log filter with
hostile text. Exit codes are only 0, 1 or 2 (3 only with ``--fail-on-anomaly``), every refusal is
an ``error:`` line, and nothing, on stderr or in a log record, is a traceback.

Network stays on loopback: ``run`` always gets ``--smtp-host 127.0.0.1 --smtp-port 1`` last (argparse
keeps the last value, and still checks the fuzzed ones); ``--db`` is fixed and the working folder
is a temporary one (with no sender.toml), so nothing outside it is written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sender import config
from sender.cli import main
from sender.errors import UsageError
from sender.sink import CaptureHandler
from sender.store import search
from sender.store.db import open_db
from sender.store.views import send_log
from tests.conftest import ROOT
from tests.support import seed

NASTY = ["nan", "NaN", "inf", "-inf", "+inf", "-1", "0", "0.0", "-0", "1", "1.5", "4.7", "1e309", "1e-309",
         "99999999999999999999", "-99999999999999999999", "²", "٣", "Ⅻ", "", " ", "-", "--", "true", "[]",
         "99999999999d", "99999999999999999999d", "1e9w", "24h", "0s", "90", "7d", "1/0s", "0/1m", "1/24h",
         "60/1m", "9999999999/1d", "mon-fri 09:00-17:00", "25:00-26:00", "9999-12-31T23:59:59-14:00",
         "0001-01-01T00:00:00+14:00", "2025-02-30", "now", "/dev/zero", "/dev/null", ".", "/", "a@", "@",
         "bad@", "a\tb@x.org", "é@exämple.org", '"a b"@x.org', "x" * 65 + "@x.org", "\udcff", "\u2028",
         "Name <a@x.org>, b@y.org", "#1", "#", "<1.abc@x>", "%", "_", "\\", "'; DROP TABLE messages; --"]
VALUE = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
    st.tuples(st.integers(0, 10**15), st.sampled_from("smhdw")).map(lambda t: f"{t[0]}{t[1]}"),
    st.tuples(st.integers(0, 10**15), st.sampled_from("smhdw")).map(lambda t: f"{t[0]}{t[1]}"),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24),
    st.binary(max_size=16).filter(lambda b: b"\x00" not in b).map(os.fsdecode),  # what argv makes of any bytes
)
NUMBER = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), st.floats().map(repr))
SPAN = st.tuples(st.integers(0, 10**15), st.sampled_from("smhdw")).map(lambda t: f"{t[0]}{t[1]}")
TIME = st.tuples(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
                 st.sampled_from(["", "Z", "+14:00", "-12:00", "+00:00"])).map(lambda t: t[0].isoformat() + t[1])
WHEN = st.one_of(SPAN, TIME)
SPECIFIC = {flag: NUMBER for flag in (
    "--limit", "--concurrency", "--timeout", "--lease", "--poll", "--batch", "--prefetch", "--retry-delay",
    "--max-attempts", "--grace", "--heartbeat", "--daily-cap", "--pause-after-errors", "--smtp-port")}
SPECIFIC.update({"--since": WHEN, "--until": WHEN, "--max-age": SPAN, "--send-at": TIME, "--expires-at": TIME,
                 "--recipient-cap": st.tuples(NUMBER, SPAN).map("/".join),
                 "--rate": st.tuples(NUMBER, SPAN).map("/".join)})
GOOD = {"--limit": st.integers(1, 1000).map(str), "--maildir": st.just("maildir"), "--csv": st.just("leads.csv"),
        "--body-file": st.just("leads.csv"), "--to": st.just("a@example.com"), "--from": st.just("t@example.org"),
        "--concurrency": st.just("2"), "--lease": st.just("60"), "--heartbeat": st.just("1")}
SWITCHES = {"--json", "--fail-on-anomaly", "--template", "--skip-invalid", "--tls", "--starttls", "--once"}
FLAGS: dict[str, list[str]] = {
    "status": ["--json"],
    "recover": ["--json"],
    "config": [],
    "pause": ["--campaign", "--reason", "--actor"],
    "resume": ["--campaign", "--reason", "--actor"],
    "resolve": ["--reason", "--actor"],
    "report": ["--since", "--until", "--limit", "--json", "--fail-on-anomaly", "--maildir", "--mbox"],
    "observe": ["--maildir", "--mbox"],
    "reconcile": ["--maildir", "--mbox", "--actor"],
    "enqueue": ["--to", "--subject", "--body", "--html", "--name", "--campaign", "--send-at", "--dedupe-key",
                "--from", "--priority", "--expires-at", "--template", "--body-file", "--csv", "--skip-invalid"],
    "run": ["--concurrency", "--worker", "--timeout", "--lease", "--poll", "--batch", "--prefetch",
            "--retry-delay", "--max-attempts", "--grace", "--heartbeat", "--recipient-cap", "--rate",
            "--daily-cap", "--max-age", "--pause-after-errors", "--smtp-host", "--smtp-port", "--tls",
            "--starttls"],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with a queue (some messages due later), a maildir and a CSV; the cwd during the test."""
    folder = tmp_path_factory.mktemp("fuzz")
    asyncio.run(seed(str(folder / "q.db"), 5, send_at=time.time() + 86400))
    CaptureHandler(folder / "maildir")
    (folder / "leads.csv").write_text("to,subject,body\na@example.com,s,b\n")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SENDER_")}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(cwd)
        os.environ.update(saved)


@st.composite
def argvs(draw: st.DrawFn, command: str) -> list[str]:
    argv = [command]
    if command == "resolve":
        argv += draw(st.lists(st.one_of(NUMBER, VALUE), min_size=1, max_size=3))
        argv += ["--as", draw(st.sampled_from(["sent", "failed", "requeue", "nope"]))]
    for flag in draw(st.lists(st.sampled_from(FLAGS[command] or ["--json"]), min_size=1, max_size=3)):
        if not FLAGS[command]:
            break
        argv.append(flag)
        if flag not in SWITCHES:
            argv.append(draw(st.one_of(GOOD.get(flag, VALUE), SPECIFIC.get(flag, VALUE), VALUE)))
    argv += ["--db", "q.db"] if command != "config" else []
    if command == "run":
        argv += ["--once", "--smtp-host", "127.0.0.1", "--smtp-port", "1"]
    return argv


def invoke(argv: list[str]) -> tuple[int, str]:
    """Run the command line in this process; return its exit code and everything written to stderr
    or logged (a traceback through ``log.exception`` or an unretrieved task counts too)."""
    err = io.StringIO()
    handler = logging.StreamHandler(err)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    finally:
        root.removeHandler(handler)
    return code, err.getvalue()


@pytest.mark.parametrize("command", sorted(FLAGS))
@settings(max_examples=50, deadline=timedelta(seconds=30), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_input_makes_a_traceback(workdir: Path, command: str, data: st.DataObject) -> None:
    """Any arguments end with exit 0, 1 or 2 (3 only for --fail-on-anomaly), never a traceback."""
    argv = data.draw(argvs(command), label="argv")
    code, err = invoke(argv)
    event(f"exit {code}")
    allowed = {0, 1, 2} | ({3} if "--fail-on-anomaly" in argv else set())
    assert code in allowed, (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code in (1, 2):
        assert any(line.startswith("error: ") for line in err.splitlines()), (argv, err)


def test_the_reported_inputs_end_cleanly(workdir: Path) -> None:
    """The inputs issue #12 found crashing are one-line errors with exit 2."""
    for argv in (["report", "--since", "99999999999d"], ["report", "--limit", "99999999999999999999"],
                 ["run", "--once", "--lease", "nan"], ["run", "--once", "--retry-delay", "-1"],
                 ["run", "--once", "--worker", ""]):
        code, err = invoke([*argv, "--db", "q.db"])
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, (argv, err)


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("log") / "sample.db"
    shutil.copyfile(ROOT / "sample.db", path)
    return str(path)


async def _log(path: str, text: str) -> list[object]:
    async with open_db(path, readonly=True) as db:
        return list(await send_log(db, text))


@settings(max_examples=200, deadline=timedelta(seconds=10), database=None)
@given(text=st.one_of(st.text(max_size=40), st.from_regex(r"\A#?[0-9²³¹\u0660-\u0669\u07c0-\u07c9]{1,30}\Z"),
                      st.integers().map(str)))
def test_the_monitor_log_filter_takes_any_text(sample_copy: str, text: str) -> None:
    """The Log filter returns a list for any text: digits of other scripts, huge numbers, LIKE characters."""
    rows = asyncio.run(_log(sample_copy, text))
    assert isinstance(rows, list) and len(rows) <= 500


def test_the_log_filter_cases_from_the_issue(sample_copy: str) -> None:
    """A huge number and a superscript digit find nothing instead of crashing; a real row id still matches."""
    assert asyncio.run(_log(sample_copy, "99999999999999999999")) == []
    assert asyncio.run(_log(sample_copy, "²")) == []
    assert asyncio.run(_log(sample_copy, "#1"))


async def _search(path: str, text: str) -> str:
    async with open_db(path, readonly=True) as db:
        try:
            page = await search.search(db, text, time.time())
        except UsageError as exc:  # the monitor shows it under the search box
            return f"refused: {exc}"
    return f"{len(page.rows)} found"


SEARCH_TERMS = st.sampled_from(["#", "state:", "campaign:", "reply:", "since:", "<", "@", ""])


@settings(max_examples=200, deadline=timedelta(seconds=10), database=None)
@given(text=st.one_of(st.text(max_size=40), st.from_regex(r"\A#?[0-9²³¹\u0660-\u0669\u07c0-\u07c9]{1,30}\Z"),
                      st.integers().map(str), st.tuples(SEARCH_TERMS, st.text(max_size=20)).map("".join)))
def test_the_monitor_queue_search_takes_any_text(sample_copy: str, text: str) -> None:
    """The Queue search answers any text with a page or a one-line refusal: superscript and other
    scripts' digits, ids past 64 bits, empty keys, huge spans, LIKE characters."""
    answer = asyncio.run(_search(sample_copy, text))
    event(answer.partition(":")[0].split()[0] if answer else "")
    assert answer.endswith(" found") or answer.startswith("refused: ")


def test_the_queue_search_cases_the_log_filter_had(sample_copy: str) -> None:
    """``²`` and ``#²`` are address fragments (no address has them); an id past 64 bits is a
    refusal, not an overflow; a real row id still matches."""
    assert asyncio.run(_search(sample_copy, "²")) == "0 found"
    assert asyncio.run(_search(sample_copy, "#²")) == "0 found"
    assert asyncio.run(_search(sample_copy, "#99999999999999999999")).startswith("refused: no such row")
    assert asyncio.run(_search(sample_copy, "#1")) == "1 found"
    for nul in ("00\x00", '00"\x00', 'reply:"a\x00b"'):  # Hypothesis found both NULs: FTS5 refused them
        assert asyncio.run(_search(sample_copy, nul)).endswith(" found")


def _toml(value: object) -> str:
    """A TOML literal for a generated value (json's string escapes are TOML's too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if isinstance(value, str) else str(value)


SCALAR = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
                   st.text(max_size=12), st.sampled_from(NASTY))
TOML_VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(st.text(max_size=5), SCALAR,
                                                                              max_size=2))
KEYS = {"run": ["concurrency", "worker", "batch", "prefetch", "poll", "lease", "heartbeat", "retry_delay",
                "max_attempts", "grace", "colour"],
        "smtp": ["host", "port", "tls", "starttls", "user", "password", "timeout"],
        "policy": ["recipient_cap", "rate", "daily_cap", "max_age", "pause_after_errors"],
        "sender": ["domain", "sender_from"], "campaigns.spring": ["window", "recipient_tz", "recipient_cap"]}


@st.composite
def config_files(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), unique=True, min_size=1, max_size=3)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(KEYS[section]), unique=True, min_size=1, max_size=4)):
            lines.append(f"{key} = {_toml(draw(TOML_VALUE))}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=timedelta(seconds=10), database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=config_files(), env=st.dictionaries(st.sampled_from(sorted(config._ENV)), VALUE, max_size=3))
def test_any_config_file_and_environment_load_or_are_refused(tmp_path: Path, text: str,
                                                             env: dict[str, str]) -> None:
    """Whatever sender.toml and SENDER_* hold, loading gives valid Settings or one UsageError."""
    path = tmp_path / "sender.toml"
    path.write_text(text, encoding="utf-8")
    try:
        s = config.load({}, env=env, config_path=str(path))
    except UsageError as exc:
        assert "\n" not in str(exc) and "s3cret" not in str(exc)
        return
    assert 1 <= s.concurrency <= 256 and 0 < s.heartbeat < s.lease and math.isfinite(s.lease)
    assert isinstance(s.smtp_port, int) and not isinstance(s.smtp_port, bool) and s.worker.strip()
    assert s.smtp_password is None or isinstance(s.smtp_password, str)
