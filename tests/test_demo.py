"""sample.db and the demo: reproducible, never modified, and the incident is the first thing shown.

The demo runs as a real process from an empty folder, with its sink in that process on a free
loopback port; the committed sample.db is compared byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sender.store.states import STATES
from tests.conftest import ROOT, Cli

SAMPLE = ROOT / "sample.db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _siblings() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name.startswith("sample.db")}


def test_demo_from_a_fresh_folder_leaves_sample_db_byte_identical(cli: Cli, tmp_path: Path) -> None:
    """`python -m sender demo` sends the due messages into its own sink, reports the incident
    first, finishes well under 30 s, and neither sample.db nor the working folder changes."""
    before, files = _digest(SAMPLE), _siblings()
    started = time.monotonic()
    r = cli("demo", timeout=60)
    elapsed = time.monotonic() - started
    assert r.code == 0, r.err
    assert elapsed < 30
    assert _digest(SAMPLE) == before and _siblings() == files
    assert list(tmp_path.iterdir()) == []
    assert "45 due messages claimed and sent" in r.out and "45 sent, 0 retry, 0 failed" in r.out
    assert "1 stale claim(s) of a dead worker moved to unknown" in r.out
    assert "observed  45 copies in the capture; 0 logged as sent but missing" in r.out
    report = r.out[r.out.index("Duplicate report"):]
    sections = [line.split(" ")[0] for line in report.splitlines() if line[:1].isupper()]
    assert sections[:3] == ["Duplicate", "GHOSTS", "REPEATED"], sections
    assert "GHOSTS (2)" in report and "MULTI-SENDS (1)" in report and "MISSING: none" in report


def test_sample_db_regenerates_to_the_same_content(tmp_path: Path) -> None:
    """scripts/make_sample.py rebuilds sample.db with identical content (and identical bytes when
    the SQLite library is the one that wrote the committed file); if not, regenerate it."""
    out = tmp_path / "again.db"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert _dump(out) == _dump(SAMPLE), "sample.db is stale: run python scripts/make_sample.py"
    written_by = int.from_bytes(SAMPLE.read_bytes()[96:100], "big")
    major, minor, patch = sqlite3.sqlite_version_info
    if written_by == major * 1_000_000 + minor * 1000 + patch:
        assert _digest(out) == _digest(SAMPLE)


def test_report_on_sample_db_shows_the_incident_first(cli: Cli) -> None:
    """`report --db sample.db` reads it without writing, moves its window to the sample's last
    day, and opens with the ghost pair; the JSON has the incident's three Message-IDs."""
    files = _siblings()
    text = cli("report", "--db", str(SAMPLE))
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert "window ends at the newest activity" in lines[1]
    assert lines[3].startswith("GHOSTS (2)") and "erin.077@example.com" in lines[6]
    data = json.loads(cli("report", "--db", str(SAMPLE), "--json").out)
    [incident] = data["multi_sends"]
    assert incident["recipient"] == "erin.077@example.com" and len(incident["message_ids"]) == 3
    assert [s["logged"] for s in incident["message_ids"]].count(True) == 1
    assert {g["row"] for g in data["ghosts"]} == {incident["message_ids"][0]["row"]}
    assert len(data["stale_claims"]) == 1 and len(data["unknown"]) == 2
    assert len(data["repeated_message_ids"]) == 1 and data["missing"] == []
    assert _siblings() == files


def test_sample_db_holds_every_state(cli: Cli) -> None:
    """The sample shows every message state, a dead worker, and a week of SendLog history."""
    status = json.loads(cli("status", "--db", str(SAMPLE), "--json").out)
    for state in STATES:
        assert status[state] > 0, state
    conn = sqlite3.connect(f"{SAMPLE.resolve().as_uri()}?mode=ro", uri=True)
    try:
        first, last = conn.execute("SELECT min(claimed_at), max(claimed_at) FROM send_log").fetchone()
        emails = [r[0] for r in conn.execute("SELECT email FROM recipients")]
    finally:
        conn.close()
    assert last - first > 6 * 86400
    assert 200 <= len(emails) <= 500
    assert all(e.endswith(("@example.com", "@example.pl")) for e in emails)
