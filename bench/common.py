"""Shared pieces: result rows, medians, fast database building, bounded child processes.

Large queues are built with plain ``sqlite3`` bulk inserts into the real schema (created by
``sender.db.open_db(create=True)``), with ``synchronous=OFF`` for the build only: going through
``enqueue`` would make a million-row benchmark spend minutes before it measures anything.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sender.message import make_mid
from sender.store.db import open_db

ROOT = Path(__file__).resolve().parent.parent
FROM = "team@example.org"
DOMAIN = "example.org"
CAMPAIGN = "bench"
BODY = ("Hello,\n\nthis is the material you asked for. " * 12).strip() + "\n\n-- \nThe team\n"


@dataclass
class Result:
    """One table row: a figure measured ``len(runs)`` times; the table shows the median."""

    section: str
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def table(results: Sequence[Result]) -> str:
    """A plain-text table (also valid Markdown) of medians and the individual runs."""
    head = ("benchmark", "figure", "median", "unit", "runs")
    rows = [(r.section, r.name + (f" ({r.note})" if r.note else ""), fmt(r.median), r.unit,
             " ".join(fmt(v) for v in r.runs)) for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i in (0, 1, 3, 4) else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i != 2 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


# --- databases ---------------------------------------------------------------------------------

def create_schema(path: Path) -> None:
    async def go() -> None:
        async with open_db(str(path), create=True):
            pass

    asyncio.run(go())


_MIX = (("sent", 90), ("scheduled", 4), ("failed", 2), ("unknown", 1), ("sending", 1),
        ("cancelled", 2))


def _state(i: int, mixed: bool) -> str:
    if not mixed:
        return "scheduled"
    slot = i % 100
    for state, share in _MIX:
        if slot < share:
            return state
        slot -= share
    return "sent"


def build_queue(path: Path, n: int, *, mixed: bool = False, now: float | None = None,
                chunk: int = 20_000) -> None:
    """A queue of ``n`` messages to distinct recipients, all ``scheduled`` and due (or, with
    ``mixed``, mostly sent with every other state present, SendLog rows and a day and a half
    of history, as a monitor would see a busy queue)."""
    now = time.time() if now is None else now
    create_schema(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO campaigns(id, name, created_at) VALUES (1, ?, ?)",
                     (CAMPAIGN, now))
        conn.execute("INSERT INTO workers(name, pid, host, started_at, heartbeat_at, stopped_at) "
                     "VALUES ('bench:1', 1, 'bench', ?, ?, ?), ('bench:2', 2, 'bench', ?, ?, NULL)",
                     (now - 7200, now - 60, now - 60, now - 3600, now - 1))
        for start in range(1, n + 1, chunk):
            ids = range(start, min(n, start + chunk - 1) + 1)
            _insert_chunk(conn, ids, mixed, now, span=36 * 3600.0 / max(n, 1))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _insert_chunk(conn: sqlite3.Connection, ids: range, mixed: bool, now: float,
                  span: float) -> None:
    conn.executemany("INSERT INTO recipients(id, email, name) VALUES (?, ?, ?)",
                     ((i, f"user{i}@example.com", f"User {i}") for i in ids))
    rows = []
    log = []
    for i in ids:
        state = _state(i, mixed)
        mid = make_mid(i, DOMAIN)
        key = f"{CAMPAIGN}\x1fuser{i}@example.com"
        at = now - 36 * 3600.0 + i * span if mixed else now - 1.0
        attempts = 0 if state in ("scheduled", "cancelled") else 1
        token = f"1.{i:x}" if state != "scheduled" else None
        rows.append((i, key, mid, state, at, attempts, token, at, at))
        if mixed and state not in ("scheduled", "cancelled"):
            code = {"sent": 250, "failed": 550}.get(state)
            log.append((i, key, mid, f"user{i}@example.com", CAMPAIGN, FROM, "bench:1", token, state,
                        at - 1, None if state == "sending" else at, code,
                        f"{code} ok" if code else None))
    conn.executemany(
        "INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, "
        "due_at, attempts, claim_token, worker, lease_until, created_at, updated_at) "
        "VALUES (?1, 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, "
        "CASE WHEN ?4 = 'sending' THEN 'bench:1' END, CASE WHEN ?4 = 'sending' THEN ?5 + 300 END, "
        "?8, ?9)", rows)
    conn.executemany(
        "INSERT INTO message_bodies(message_id, from_addr, from_name, to_name, subject, body_text) "
        "VALUES (?, ?, 'The team', NULL, ?, ?)",
        ((i, FROM, f"Your material, request {i}", BODY) for i in ids))
    if log:
        conn.executemany(
            "INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, sender, "
            "attempt, worker, claim_token, status, claimed_at, finished_at, smtp_code, smtp_reply) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)", log)


_templates: dict[tuple[int, bool], Path] = {}
_template_dir: tempfile.TemporaryDirectory[str] | None = None


def template(n: int, *, mixed: bool = False) -> Path:
    """A queue built once per process and size, to be copied by each run (never written)."""
    global _template_dir
    key = (n, mixed)
    if key not in _templates:
        if _template_dir is None:
            _template_dir = tempfile.TemporaryDirectory(prefix="bench-templates-")
        path = Path(_template_dir.name) / f"queue-{n}-{'mixed' if mixed else 'due'}.db"
        build_queue(path, n, mixed=mixed)
        _templates[key] = path
    return _templates[key]


def copy_db(src: Path, dst: Path) -> Path:
    """Copy a checkpointed queue file (its WAL is empty after ``build_queue``)."""
    for suffix in ("-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    return dst


def claims_per_transaction(path: Path) -> float:
    """Messages per claim transaction: every claim has its own token, SendLog keeps it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows, tokens = conn.execute(
            "SELECT count(*), count(DISTINCT claim_token) FROM send_log").fetchone()
    finally:
        conn.close()
    return rows / tokens if tokens else float("nan")


def state_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
    finally:
        conn.close()


def write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["to", "subject", "body", "name", "campaign"])
        for i in range(1, n + 1):
            out.writerow([f"user{i}@example.com", f"Your material, request {i}", BODY, f"User {i}",
                          CAMPAIGN])


# --- child processes ---------------------------------------------------------------------------

@dataclass
class Child:
    code: int
    seconds: float
    out: str
    err: str
    cpu: float = 0.0  # user + system CPU seconds of the child, from wait4


def child_env() -> dict[str, str]:
    """The children run as an installed package would: no ``SENDER_*`` settings, and bytecode
    caching on (``PYTHONDONTWRITEBYTECODE`` dropped: without it each child compiles every module,
    about 70 ms of CPU per start on the development machine)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SENDER_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def warm_bytecode() -> None:
    """Compile ``sender`` and ``bench`` once, as ``pip install`` does, so that no measured start
    pays for compiling (``__pycache__`` is ignored by git)."""
    import compileall

    for package in ("sender", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(CPUs for the sink, CPUs for the contender), or None when there is nothing to split.

    On a small machine the sink pegs a core; unpinned, the scheduler keeps moving a contender's
    threads onto that core, and a contender with two busy threads (the sender's event loop and
    its database thread) loses more to that than a one-thread loop does. Pinning gives the
    yardstick its own core and every contender the rest."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) >= 2 else None


def run_child(args: Sequence[str], *, cwd: Path, timeout: float, cpus: set[int] | None = None) -> Child:
    """Run ``python <args>``, bounded by ``timeout``; return its exit code, output and wall time.

    ``wait4`` in the calling thread gives an exact end time; a timer kills an overrunning child.
    (Its ``ru_maxrss`` is not used: see ``bench.peak``.) ``cpus`` pins the child to those CPUs."""
    out_path, err_path = cwd / "child.out", cwd / "child.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=child_env(), stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL)
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)  # before it has imported anything
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if seconds >= timeout and proc.returncode < 0:
        raise TimeoutError(f"python {' '.join(args[:3])} ran over {timeout:.0f}s and was killed")
    return Child(proc.returncode, seconds, out_path.read_text(errors="replace"),
                 err_path.read_text(errors="replace"), usage.ru_utime + usage.ru_stime)


def last_json(text: str) -> dict[str, float]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON result line in child output: {text[-500:]!r}")


def tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

