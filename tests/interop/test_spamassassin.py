"""SpamAssassin (Debian's ``spamassassin``, local tests only: ``-L``) on a message as the sender
sends it with DKIM and List-Unsubscribe: no header rule hits, apart from the two informational
ones every message that has not yet travelled gets (no Received header, score -0.0)."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli, SinkThread
from tests.support import need

pytestmark = pytest.mark.xdist_group("relay")  # one Postfix and one Dovecot for the session

# Informational, score -0.0: a message captured before any relay added a Received header.
UNTRAVELLED = {"NO_RECEIVED", "NO_RELAYS"}
RULE_DIRS = ("/usr/share/spamassassin", "/var/lib/spamassassin")


def _header_rules() -> set[str]:
    """Every rule SpamAssassin's rule files define as a ``header`` test."""
    names: set[str] = set()
    for folder in RULE_DIRS:
        for path in glob.glob(f"{folder}/**/*.cf", recursive=True):
            with open(path, encoding="utf-8", errors="replace") as fh:
                names.update(m.group(1) for m in re.finditer(r"(?m)^\s*header\s+(\w+)", fh.read()))
    return names


@pytest.fixture
def spamassassin() -> str:
    path = shutil.which("spamassassin")
    need(None if path else "spamassassin is not installed (apt-get install spamassassin)")
    assert path is not None
    return path


def test_a_signed_message_with_list_unsubscribe_hits_no_header_rule(tmp_path: Path, cli: Cli, sink: SinkThread,
                                                                    spamassassin: str) -> None:
    """The sent bytes (DKIM-signed, List-Unsubscribe + One-Click, Reply-To) hit no header rule."""
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                   check=True, capture_output=True, timeout=60)
    cli.env.update({"SENDER_DKIM_DOMAIN": "example.org", "SENDER_DKIM_SELECTOR": "s2026",
                    "SENDER_DKIM_KEY_FILE": str(key), "SENDER_UNSUBSCRIBE_URL": "https://example.org/u/{token}",
                    "SENDER_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
                    "SENDER_UNSUBSCRIBE_SECRET": "s3cr3t-for-tests-only-0123456789"})
    db = str(tmp_path / "q.db")
    assert cli("enqueue", "--db", db, "--to", "lead@example.com",
               "--name", "Lead One", "--subject", "The slides you asked for",
               "--body", "Hello,\n\nhere are the slides from Tuesday's call.\n\nBest,\nThe team\n",
               "--from", "Example Team <team@example.org>", "--reply-to", "sales@example.org").code == 0
    assert cli("run", "--db", db, "--smtp-port", str(sink.port), "--once", "--return-path",
               "bounces+{row}@example.org").code == 0
    raw = sink.received[0].raw
    assert b"List-Unsubscribe:" in raw and raw.startswith(b"DKIM-Signature:")
    out = subprocess.run([spamassassin, "-L"], input=raw, capture_output=True, timeout=120, check=True).stdout
    status = re.search(rb"X-Spam-Status: (.*?)\r?\n(?![ \t])", out, re.DOTALL)
    assert status is not None, out[:500]
    tests = re.search(rb"tests=([^\s]*)", re.sub(rb"\s+", b"", status.group(1)).replace(b"autolearn", b" autolearn"))
    hits = {t for t in (tests.group(1).decode().split(",") if tests else []) if t and t != "none"}
    header_rules = _header_rules()
    assert header_rules, "no SpamAssassin rule files found"
    assert (hits & header_rules) - UNTRAVELLED == set(), status.group(1)
