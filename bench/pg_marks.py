"""PostgreSQL end to end with and without start marks: what a mark before each ``MAIL FROM`` costs.

``python -m bench.pg_marks [--total N] [--repeat R] [--server URL]``: each run is the real command
line, ``python -m sender run --once --concurrency 8`` (claiming ahead, ``--prefetch 2``), as a
subprocess on a fresh database of ``total`` messages (created on ``--server``, default
``$SENDER_TEST_POSTGRES``, dropped afterwards), sending to one ``bench.sink`` process. The two
contenders alternate within each round, and the order flips every round, so both meet the same
machine. *Without* is the same code with ``open_marks`` answering ``NoMarks`` (what a PostgreSQL
queue did before it kept marks), set by this module's child entry point; ``sender`` itself has
no switch to turn marks off. Each run must deliver every message exactly once.

Rates as in ``bench.e2e``: *wall* over the child's life, *sink* between the first and the last
message the sink saw; CPU per message of the whole child process (``wait4``); commits per
message, every transaction the database counted during the run (claims, outcomes, heartbeats,
and with marks their statements: the difference is marks statements per message).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from .common import Result, run_child, split_cpus, tail, warm_bytecode
from .e2e import CONCURRENCY, SinkProcess, _sink_rate
from .pg_claims import _drop, _fill, _pg_database

CONTENDERS = ("with", "without")


def _child(mode: str, argv: list[str]) -> int:
    """``python -m bench.pg_marks child with|without run ...``: the sender's command line."""
    from sender import cli, guard
    from sender.journal import NoMarks, StartMarks

    if mode == "without":
        async def no_marks(*_args: object) -> StartMarks:
            return NoMarks()

        guard.open_marks = no_marks  # type: ignore[assignment]
    return cli.main(argv)


def _sent(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())


def _commits(url: str) -> int:
    """Transactions committed in the database so far (a closed session's are counted within a
    moment of its end)."""
    import psycopg

    time.sleep(1.0)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def run(server: str, total: int, repeat: int, timeout: float) -> list[Result]:
    cpus = split_cpus()
    sink_cpus, child_cpus = cpus if cpus else (None, None)
    warm_bytecode()
    wall = {who: Result("postgres end to end", f"marks {who}, wall", "msg/s") for who in CONTENDERS}
    seen = {who: Result("postgres end to end", f"marks {who}, sink", "msg/s") for who in CONTENDERS}
    cpu = {who: Result("postgres end to end", f"marks {who}, CPU per message", "us") for who in CONTENDERS}
    commits = {who: Result("postgres end to end", f"marks {who}, commits per message", "x") for who in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="bench-pg-marks-") as tmp, \
            SinkProcess(lifetime=timeout * repeat * 2, cpus=sink_cpus) as sink:
        for i in range(repeat):
            for who in CONTENDERS if i % 2 == 0 else CONTENDERS[::-1]:
                name, url = _pg_database(server)
                try:
                    asyncio.run(_fill(url, total))
                    before = _commits(url)
                    child = run_child(["-m", "bench.pg_marks", "child", who, "run", "--db", url,
                                       "--smtp-host", "127.0.0.1", "--smtp-port", str(sink.port), "--once",
                                       "--concurrency", str(CONCURRENCY), "--worker", "bench"],
                                      cwd=Path(tmp), timeout=timeout, cpus=child_cpus)
                    if child.code != 0:
                        raise RuntimeError(f"marks {who} exited {child.code}: {tail(child.err)}")
                    if _sent(url) != {"sent": total}:
                        raise RuntimeError(f"marks {who} left the queue as {_sent(url)}")
                    commits[who].runs.append((_commits(url) - before) / total)
                finally:
                    _drop(server, name)
                wall[who].runs.append(total / child.seconds)
                seen[who].runs.append(_sink_rate(sink.stats(), total, who))
                cpu[who].runs.append(child.cpu / total * 1e6)
    return [*wall.values(), *seen.values(), *cpu.values(), *commits.values()]


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        sys.exit(_child(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--server", default=os.environ.get("SENDER_TEST_POSTGRES", ""))
    args = parser.parse_args()
    if not args.server:
        parser.error("--server (or SENDER_TEST_POSTGRES): a postgresql:// URL to create a database on")
    results = run(args.server, args.total, args.repeat, args.timeout)
    print(f"{args.total:,} messages per run, concurrency {CONCURRENCY}, {args.repeat} runs each (median, runs)")
    for r in results:
        digits = 2 if r.unit == "x" else 0
        runs = " ".join(f"{x:,.{digits}f}" for x in r.runs)
        print(f"{r.name:<36} {r.median:>9,.{digits}f} {r.unit:<6} [{runs}]")
    base = {r.name: r.median for r in results}
    for view in ("wall", "sink"):
        print(f"ratio with/without, {view}: {base[f'marks with, {view}'] / base[f'marks without, {view}']:.3f}")


if __name__ == "__main__":
    main()
