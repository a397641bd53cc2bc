"""The report's true totals and pages: every finding counted and reachable, not the first 100.

Over a real SQLite file holding more than a page of each finding (``tests/findings_queue.py``):
the ``count_*`` queries agree with the full lists, pages of each list laid end to end are the
full list, ``report_page`` walks every finding exactly once, and ``python -m sender report``
prints the true totals where it cuts a list (text and ``--json``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sender import report
from sender.report.model import ANOMALIES
from sender.report.text import render
from sender.store import reports
from sender.store.db import open_db
from tests import findings_queue as fq
from tests.conftest import Cli
from tests.test_store_views import T0

WINDOW = report.Window(T0 - 86400, T0)
ALL = 100_000
EXPECTED = {"ghosts": fq.GHOSTS, "repeated_message_ids": fq.REPEATED, "multi_sends": fq.MULTI,
            "unknown": fq.UNKNOWN, "stale_claims": fq.STALE, "missing": 0}


def _keys(kind: str, items: list[Any]) -> list[object]:
    """What identifies a finding of ``kind``."""
    if kind == "ghosts" or kind == "repeated_message_ids":
        return [(i.mid, i.recipient) for i in items]
    if kind == "multi_sends":
        return [(i.recipient, i.campaign) for i in items]
    return [i.row for i in items]


async def test_counts_match_the_full_lists_and_pages_rebuild_them(tmp_path: Path) -> None:
    """For each kind the count equals the length of the unbounded list, and pages of 40 read
    with ``offset`` are that list in order, with no gap and no repeat."""
    path = await fq.build(tmp_path / "q.db")
    since, until = WINDOW.since, WINDOW.until
    async with open_db(path, readonly=True) as db:
        lists = {
            "ghosts": lambda o, n: reports.ghosts(db, since, until, limit=n, offset=o),
            "repeated_message_ids": lambda o, n: reports.repeated_message_ids(
                db, since, until, limit=n, offset=o),
            "multi_sends": lambda o, n: reports.multi_sends(db, since, until, limit=n, offset=o),
            "unknown": lambda o, n: reports.unknown_messages(db, limit=n, offset=o),
            "stale_claims": lambda o, n: reports.stale_claims(db, T0, limit=n, offset=o),
        }
        totals = await report.report_totals(db, WINDOW, T0)
        for kind, read in lists.items():
            full = _keys(kind, await read(0, ALL))
            assert len(full) == totals[kind] == EXPECTED[kind], kind
            paged: list[object] = []
            for offset in range(0, len(full) + 40, 40):
                paged += _keys(kind, await read(offset, 40))
            assert paged == full, kind
        [multi] = await reports.multi_sends(db, since, until, limit=1, offset=fq.MULTI - 1)
        assert len(multi.mids) == 2 and all(s.logged for s in multi.mids)


async def test_report_page_walks_every_finding_once(tmp_path: Path) -> None:
    """Pages of 100 over the six kinds end to end cover all 615 findings in report order, each
    once; every page carries the true totals; an offset past the end is the last page."""
    path = await fq.build(tmp_path / "q.db")
    async with open_db(path, readonly=True) as db:
        whole = await report.build_report(db, WINDOW, T0, limit=ALL)
        expected = [(k, key) for k in ANOMALIES for key in _keys(k, getattr(whole, k))]
        seen: list[tuple[str, object]] = []
        offsets = []
        for offset in range(0, fq.TOTAL, 100):
            page = await report.report_page(db, WINDOW, T0, offset=offset)
            assert page.counts == EXPECTED and page.anomalies == fq.TOTAL
            assert page.offset == offset and page.listed == min(100, fq.TOTAL - offset)
            offsets.append(page.offset)
            seen += [(k, key) for k in ANOMALIES for key in _keys(k, getattr(page, k))]
        assert seen == expected and len(seen) == fq.TOTAL
        beyond = await report.report_page(db, WINDOW, T0, offset=10_000)
        assert beyond.offset == 600 and beyond.listed == fq.TOTAL - 600 == len(beyond.stale_claims)


async def test_build_report_counts_only_what_it_cut(tmp_path: Path) -> None:
    """``build_report`` lists at most ``limit`` of each kind, names the cut lists and gives
    every kind's true total."""
    path = await fq.build(tmp_path / "q.db")
    async with open_db(path, readonly=True) as db:
        found = await report.build_report(db, WINDOW, T0)
    assert found.truncated == ("ghosts", "repeated_message_ids", "multi_sends", "unknown",
                               "stale_claims")
    assert found.counts == EXPECTED and found.listed == 500
    assert [len(getattr(found, k)) for k in ANOMALIES] == [100, 100, 100, 100, 100, 0]


async def test_cli_report_prints_the_true_totals(cli: Cli, tmp_path: Path) -> None:
    """``report`` says "first 100 of 150" where it cuts a list and sums the true totals; its
    JSON keeps the six lists (at most 100 each) and adds ``truncated`` and ``totals``."""
    path = await fq.build(tmp_path / "q.db")
    r = cli("report", "--db", path)
    assert r.code == 0, r.err
    assert f"GHOSTS (first 100 of {fq.GHOSTS}): " in r.out
    assert f"UNKNOWN (first 100 of {fq.UNKNOWN}): " in r.out
    assert f"STALE CLAIMS (first 100 of {fq.STALE}): " in r.out
    last = r.out.rstrip().splitlines()[-1]
    assert last == (f"{fq.TOTAL} anomalies: {fq.GHOSTS} ghosts, {fq.REPEATED} repeated "
                    f"Message-IDs, {fq.MULTI} multi-sends, {fq.UNKNOWN} unknown, {fq.STALE} stale "
                    "claims (500 listed: --limit shows more)")
    data = json.loads(cli("report", "--db", path, "--json").out)
    assert set(data) == {*ANOMALIES, "truncated", "totals"}
    assert data["totals"] == EXPECTED
    assert data["truncated"] == ["ghosts", "repeated_message_ids", "multi_sends", "unknown",
                                 "stale_claims"]
    assert [len(data[k]) for k in ANOMALIES] == [100, 100, 100, 100, 100, 0]
    wide = json.loads(cli("report", "--db", path, "--json", "--limit", "1000").out)
    assert set(wide) == set(ANOMALIES) and len(wide["unknown"]) == fq.UNKNOWN


async def test_a_missing_total_past_its_cap_says_so(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """"Missing" grows with the sends in the window, so its count stops at a cap: past it the
    total is a lower bound, "50+" in text and ``capped`` in JSON."""
    path = await fq.build(tmp_path / "q.db")
    with sqlite3.connect(path) as conn:  # sent after the mailbox's first copy, never observed
        conn.executemany(
            "INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, attempt, "
            "worker, claim_token, status, claimed_at) VALUES (?, ?, ?, 'x@example.com', 'bulk', "
            "1, 'w1', 't', 'sent', ?)",
            [(9000 + i, f"x{i}", f"<x{i}@x>", T0 - 1000 + i) for i in range(60)])
    monkeypatch.setattr(reports, "MISSING_COUNT_CAP", 50)
    async with open_db(path, readonly=True) as db:
        found = await report.build_report(db, WINDOW, T0, sources=[fq.SOURCE], limit=10)
        assert await reports.count_missing(db, WINDOW.since, T0, [fq.SOURCE], cap=1000) == 60
    assert found.counts["missing"] == 50 and found.capped == ("missing",)
    assert "MISSING (first 10 of 50+): " in render(found, title="t")
    assert found.to_json()["capped"] == ["missing"]
