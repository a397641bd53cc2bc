"""Every number and string a user gives is checked at the edge (issue #12 item 2): flags, the
``SENDER_*`` environment and sender.toml go through the same checkers (``sender.validate`` and
``config.SPECS``); a bad value is one ``error:`` line and exit 2 before the queue is opened."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sender import config
from sender.daemon import MAX_BACKOFF, backoff
from sender.errors import UsageError
from tests.conftest import Cli
from tests.support import query, seed

BAD_RUN_FLAGS = [
    ("--lease", "nan"), ("--lease", "inf"), ("--lease", "-1"), ("--lease", "0"),
    ("--heartbeat", "0"), ("--heartbeat", "nan"), ("--poll", "nan"), ("--poll", "0"),
    ("--retry-delay", "0"), ("--retry-delay", "-1"), ("--timeout", "nan"), ("--timeout", "0"),
    ("--daily-cap", "0"), ("--daily-cap", "2.5"), ("--grace", "-1"), ("--grace", "inf"),
    ("--worker", ""), ("--worker", "   "), ("--concurrency", "4.7"), ("--concurrency", "0"),
    ("--concurrency", "99999999999999999999"), ("--batch", "1e3"), ("--prefetch", "5"),
    ("--max-attempts", "0"), ("--pause-after-errors", "-1"), ("--smtp-port", "0"),
    ("--smtp-port", "65536"), ("--smtp-host", ""), ("--heartbeat", "300"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_RUN_FLAGS)
def test_bad_run_flag_is_refused_before_the_queue_is_touched(flag: str, value: str, tmp_path: Path,
                                                              cli: Cli) -> None:
    """Each bad number or name given to run is one error line and exit 2, and no queue file appears."""
    db = tmp_path / "q.db"
    r = cli("run", "--db", str(db), "--once", flag, value)
    assert r.code == 2, (flag, value, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.err
    assert not db.exists()


async def test_refused_run_leaves_an_existing_queue_unchanged(db_path: str, cli: Cli) -> None:
    """A refused run registers no worker and claims nothing in a queue that has due messages."""
    await seed(db_path, 3)
    for flag, value in (("--lease", "nan"), ("--retry-delay", "0"), ("--worker", "")):
        r = cli("run", "--db", db_path, "--once", "--smtp-port", "1", flag, value)
        assert r.code == 2 and r.err.startswith("error: "), r.err
    assert query(db_path, "SELECT count(*) FROM workers") == [(0,)]
    assert query(db_path, "SELECT state, count(*) FROM messages GROUP BY state") == [("scheduled", 3)]


@pytest.mark.parametrize(("text", "words"), [
    ("[run]\nconcurrency = 4.7\n", "concurrency: must be a whole number"),
    ("[run]\nconcurrency = true\n", "concurrency: must be a whole number"),
    ("[run]\nlease = nan\n", "run.lease: must be a number of seconds"),
    ("[run]\nheartbeat = inf\n", "run.heartbeat"),
    ("[run]\nworker = ''\n", "run.worker: must not be empty"),
    ("[run]\nretry_delay = -1\n", "run.retry_delay"),
    ("[policy]\ndaily_cap = 0\n", "policy.daily_cap"),
    ("[smtp]\nport = 'x'\n", "smtp.port"),
    ("[smtp]\nstarttls = 'maybe'\n", "smtp.starttls: must be true or false"),
    ("[smtp]\nhost = ['a', 'b']\n", "smtp.host: must be a string"),
    ("[smtp]\npassword = ['s3cret']\n", "smtp.password: must be a string"),
    ("[smtp]\npassword = 1234\n", "smtp.password: must be a string"),
])
def test_bad_config_value_names_its_key(text: str, words: str, tmp_path: Path) -> None:
    """A bad value in sender.toml is refused naming the file and key; a password is never echoed."""
    path = tmp_path / "sender.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        config.load({}, env={}, config_path=str(path))
    assert words in str(err.value) and str(path) in str(err.value)
    assert "s3cret" not in str(err.value) and "1234" not in str(err.value)


def test_bad_environment_value_names_its_variable() -> None:
    """SENDER_* values pass the same checks, and the error names the variable."""
    for env, words in (({"SENDER_SMTP_PORT": "0"}, "SENDER_SMTP_PORT: must be a whole number from 1 to 65535"),
                       ({"SENDER_SMTP_PORT": "25.5"}, "SENDER_SMTP_PORT"),
                       ({"SENDER_SMTP_TLS": "maybe"}, "SENDER_SMTP_TLS: must be true or false")):
        with pytest.raises(UsageError) as err:
            config.load({}, env=env)
        assert words in str(err.value)


def test_edge_values_that_mean_something_are_accepted(tmp_path: Path) -> None:
    """The documented edges load: --grace 0, --prefetch 0, --pause-after-errors 0, the smallest lease."""
    s = config.load({"grace": "0", "prefetch": "0", "pause_after_errors": "0", "lease": "0.5",
                     "heartbeat": "0.2", "smtp_port": "2525", "daily_cap": "1"}, env={})
    assert (s.grace, s.prefetch, s.pause_after_errors, s.lease, s.heartbeat, s.smtp_port, s.daily_cap) == (
        0.0, 0, 0, 0.5, 0.2, 2525, 1)
    path = tmp_path / "sender.toml"
    path.write_text("[run]\nconcurrency = 8\nlease = 60\n[smtp]\nstarttls = true\n")
    s = config.load({}, env={"SENDER_SMTP_TLS": "no"}, config_path=str(path))
    assert (s.concurrency, s.lease, s.smtp_starttls, s.smtp_tls) == (8, 60.0, True, False)
    assert isinstance(s.concurrency, int) and isinstance(s.lease, float)


def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    """A heartbeat at or past the lease would let live claims expire, so the pair is refused."""
    with pytest.raises(UsageError, match="shorter than --lease"):
        config.load({"lease": 5.0, "heartbeat": 5.0}, env={})


def test_other_numeric_arguments_are_bounded(cli: Cli, tmp_path: Path) -> None:
    """report --limit, resolve ids and sink --port refuse huge or odd numbers with one line, exit 2."""
    db = str(tmp_path / "q.db")
    for args in (("report", "--db", db, "--limit", "99999999999999999999"),
                 ("report", "--db", db, "--limit", "0"),
                 ("resolve", "--db", db, "99999999999999999999", "--as", "sent"),
                 ("resolve", "--db", db, "²", "--as", "sent"),
                 ("sink", "--port", "-1", "--maildir", str(tmp_path / "m"))):
        r = cli(*args)
        assert r.code == 2 and r.err.startswith("error: argument") and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1


def test_backoff_cannot_overflow() -> None:
    """The exponent is capped before exponentiation: any attempt count gives at most six hours."""
    rng = random.Random(1)
    for attempt in (1, 5, 40, 1024, 10**6, 10**12):
        assert 0 < backoff(60.0, attempt, rng) <= MAX_BACKOFF * 1.2
    assert backoff(60.0, 10**6, random.Random(2)) >= MAX_BACKOFF * 0.8


def test_the_configuration_page_lists_every_setting_with_its_range() -> None:
    """docs/configuration.md has a row per setting whose range is the checker's own description."""
    from dataclasses import fields

    from tests.conftest import ROOT

    rows = {line.split("|")[1].strip(): line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
            if line.startswith("| ") and line.count("|") >= 7}
    for f in fields(config.Settings):
        if f.name == "campaigns":
            continue
        assert f.name in rows, f"docs/configuration.md lacks a row for {f.name}"
        assert config.spec(f.name).describe() in rows[f.name], (f.name, rows[f.name])


def test_undecodable_operator_text_is_refused_not_a_traceback(cli: Cli, tmp_path: Path) -> None:
    """A --campaign, --reason or --actor with bytes that are not UTF-8 is one error line, exit 2."""
    import os

    db = str(tmp_path / "q.db")
    assert cli("init", "--db", db).code == 0
    odd = os.fsdecode(b"\xff")
    for args in (("pause", "--campaign", odd), ("pause", "--reason", odd), ("resume", "--actor", odd),
                 ("resolve", "1", "--as", "sent", "--reason", odd), ("reconcile", "--maildir", ".", "--actor", odd)):
        r = cli(*args, "--db", db)
        assert r.code == 2 and r.err.startswith("error: argument") and "Traceback" not in r.err, (args, r.err)
    assert query(db, "SELECT count(*) FROM flags") == [(0,)]


def test_the_message_id_domain_must_be_a_host_name() -> None:
    """SENDER_DOMAIN goes into every Message-ID, so a space or an empty label is refused."""
    assert config.load({}, env={"SENDER_DOMAIN": "mail.example.org"}).domain == "mail.example.org"
    for bad in ("exa mple.org", "a..b", "-x.org", "x" * 64 + ".org"):
        with pytest.raises(UsageError, match="SENDER_DOMAIN: must be an ASCII host name"):
            config.load({}, env={"SENDER_DOMAIN": bad})


def test_the_checkers_refuse_each_kind_of_wrong_value() -> None:
    """Number, Text and Flag each refuse what the issue found accepted, and keep what is right."""
    from sender.validate import Flag, Number, Text

    count, seconds = Number(1, 256, whole=True), Number(0.5, 600, unit="seconds")
    assert (count("4"), count(4), seconds("1.5"), seconds(2)) == (4, 4, 1.5, 2.0)
    for bad in (4.7, 4.0, True, "4.7", "٣", "1e3", "", None, [4], "99999999999999999999"):
        with pytest.raises(UsageError):
            count(bad)
    for bad in ("nan", float("nan"), "inf", float("-inf"), "-1", 0, False, "0x10", "٣"):
        with pytest.raises(UsageError):
            seconds(bad)
    for bad in (["a"], 1234, True, "", "  ", "a\nb", "\udcff"):
        with pytest.raises(UsageError):
            Text()(bad)
    assert Text(path=True)("queue-\udcff.db") == "queue-\udcff.db"
    with pytest.raises(UsageError) as err:
        Text(secret=True)(["s3cret"])
    assert "s3cret" not in str(err.value)
    assert (Flag()("yes"), Flag()("OFF"), Flag()(True)) == (True, False, True)
    for bad in ("maybe", 1, "", None):
        with pytest.raises(UsageError):
            Flag()(bad)
