"""``python -m sender demo``: the whole story in one command, on a copy of ``sample.db``.

It copies the sample queue to a temporary folder (the committed file is never opened for
writing), starts the capture sink in this process on a free loopback port, sends everything due
with the real daemon and SMTP sessions, observes what the sink captured, and prints a short
summary and the duplicate report: the sample's planted ghost (three Message-IDs, one SendLog
row) comes first, next to the anomalies the real sender turns into visible states instead.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .config import Settings
from .daemon import Daemon, RunStats
from .delivery import Session
from .errors import UsageError
from .mailreader import open_mailbox
from .observe import ObserveStats, observe
from .report import Report, Window, build_report
from .sink import serve
from .store import counts
from .store.engine import db_now, open_store
from .store.reports import first_claim

SAMPLE = Path(__file__).resolve().parent.parent / "sample.db"


@dataclass(frozen=True, slots=True)
class DemoResult:
    sample: Path
    db: Path
    capture: Path
    port: int
    before: dict[str, int]
    after: dict[str, int]
    run: RunStats
    seconds: float
    observed: ObserveStats
    report: Report


@asynccontextmanager
async def workspace(keep: str | None) -> AsyncIterator[Path]:
    """A fresh folder: ``keep`` if given (must be new or empty), else a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="sender-demo-") as tmp:
            yield Path(tmp)
        return
    path = Path(keep)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--keep {keep}: exists and is not an empty folder")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # it will hold a queue and captured mail: owner only, like the temporary one
    yield path


def find_sample(sample: str | None) -> Path:
    path = Path(sample) if sample else SAMPLE
    if not path.is_file():
        raise UsageError(f"no sample queue at {path} (generate it: python scripts/make_sample.py)")
    return path


async def run_demo(settings: Settings, sample: Path, workdir: Path) -> DemoResult:
    """Copy, send what is due into an in-process sink, observe the capture, build the report."""
    db_path, capture = workdir / "sample.db", workdir / "capture"
    shutil.copyfile(sample, db_path)
    db_path.chmod(0o600)
    server = await serve("127.0.0.1", 0, capture)
    port = server.sockets[0].getsockname()[1]
    s = replace(settings, db=str(db_path), smtp_host="127.0.0.1", smtp_port=port, smtp_user=None,
                smtp_password=None, smtp_tls=False, smtp_starttls=False, smtp_timeout=10.0,
                worker="demo", poll=0.05, heartbeat=1.0)
    try:
        async with open_store(s.db) as db:
            before = await counts.state_counts(db)
            started = time.monotonic()
            stats = await Daemon(db, s, [Session(s) for _ in range(s.concurrency)]).run(once=True)
            seconds = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()
    async with open_store(s.db) as db:
        observed = await observe(db, open_mailbox(str(capture), None), now=await db_now(db))
        after = await counts.state_counts(db)
        now = await db_now(db)
        first = await first_claim(db)
        since = first if first is not None else now - 86400
        report = await build_report(db, Window(since, now), now, sources=[observed.source])
    return DemoResult(sample, db_path, capture, port, before, after, stats, seconds, observed, report)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "empty"


def summary(r: DemoResult) -> str:
    """What happened, in a few lines a newcomer can follow."""
    run = r.run
    lines = [
        "sender demo: the sample queue sent for real into a local capture server",
        f"  queue     a copy of {r.sample} in {r.db} (the original is never written)",
        f"  sink      127.0.0.1:{r.port}, capturing into {r.capture}",
        f"  before    {_counts(r.before)}",
        f"  sent      {run.claimed} due messages claimed and sent in {r.seconds:.1f}s: "
        f"{run.sent} sent, {run.retry} retry, {run.failed} failed, {run.unknown} unknown",
    ]
    if run.expired:
        lines.append(f"  leases    {run.expired} stale claim(s) of a dead worker moved to unknown "
                     "(it may have sent them, so they are never resent)")
    lines += [
        f"  after     {_counts(r.after)}",
        f"  observed  {r.observed.messages} copies in the capture; "
        f"{len(r.report.missing)} logged as sent but missing from it",
        "",
    ]
    return "\n".join(lines)
