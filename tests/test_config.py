"""Configuration: sender.toml, then SENDER_* environment, then flags; secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sender import config
from sender.errors import UsageError
from tests.conftest import Cli

TOML = """
[smtp]
host = "mail.example.org"
port = 587
starttls = true
user = "mailer"
password = "s3cret"

[run]
concurrency = 8
worker = "box-1"

[policy]
recipient_cap = "1/24h"
rate = "60/1m"
daily_cap = 2000
max_age = "7d"
pause_after_errors = 20

[campaigns.newsletter]
window = "mon-fri 09:00-17:00 Europe/Warsaw"
recipient_tz = true
recipient_cap = "1/7d"
"""


def test_file_env_flags_precedence(tmp_path: Path) -> None:
    """Flags beat the environment, which beats the file; campaign rules parse into a policy."""
    path = tmp_path / "sender.toml"
    path.write_text(TOML)
    s = config.load({"concurrency": 2}, env={"SENDER_SMTP_PORT": "2525"}, config_path=str(path))
    assert (s.smtp_host, s.smtp_port, s.smtp_starttls, s.concurrency, s.worker) == (
        "mail.example.org", 2525, True, 2, "box-1")
    policy = s.policy()
    assert str(policy.rate) == "60/1m" and policy.daily_cap == 2000 and policy.max_age == 7 * 86400
    news = policy.for_campaign("newsletter")
    assert news.window is not None and news.window.per_recipient_tz and str(news.recipient_cap) == "1/7d"
    assert "s3cret" not in repr(s) and s.redacted()["smtp_password"] == "***"


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    """Unknown keys, bad numbers, bad rules and broken TOML are refused with a clear message."""
    for text in ("[run]\nconcurency = 3\n", "[run]\nconcurrency = 'many'\n", "[policy]\nrate = 'x'\n",
                 "[campaigns.a]\nwindow = 'always'\n", "[campaigns.a]\ncolour = 'red'\n", "not toml ==="):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(UsageError):
            config.load({}, env={}, config_path=str(path))


def test_config_show_hides_the_password(cli: Cli, tmp_path: Path) -> None:
    """config --show prints the effective settings as JSON, password masked, env password never echoed."""
    (tmp_path / "sender.toml").write_text(TOML)
    cli.env["SENDER_SMTP_PASSWORD"] = "from-env-secret"
    r = cli("config", "--show")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    assert shown["smtp_password"] == "***" and "secret" not in r.out + r.err
    assert shown["rate"] == "60/1m" and shown["campaigns"]["newsletter"]["recipient_cap"] == "1/7d"
