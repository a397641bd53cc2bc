"""End to end: the real sender against a bare aiosmtplib loop, same sink process, same run.

The sender is the real command line, ``python -m sender run --once --concurrency 8`` as a
subprocess on a fresh queue (logging as a cron line would, to a file). The bare loop
(``bench.bare``) is a subprocess too and sends the same messages, prebuilt, over the same number
of reused connections. Both go to one ``bench.sink`` process that counts. The order of the two
alternates between runs so neither always meets a warmer machine.

Two views of each rate: *wall* is messages over the child's whole life (interpreter start,
imports, opening the queue included: what a cron run costs); *sink* is what the sink saw
between the first and the last message (steady state, the same observer for both).
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from sender.message import build

from .common import (
    Result,
    build_queue,
    child_env,
    claims_per_transaction,
    create_schema,
    run_child,
    state_counts,
    tail,
)

CONCURRENCY = 8


class SinkProcess:
    """``bench.sink`` as a child: ``port`` once it listens, ``stats()`` per contender."""

    def __init__(self, lifetime: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "--lifetime", str(lifetime)], env=child_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if len(first) != 2 or first[0] != "port":
            self.close()
            raise RuntimeError(f"bench sink did not start (said {first!r})")
        self.port = int(first[1])

    def stats(self) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench sink died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def prebuilt(db: Path, out: Path) -> int:
    """The queue's messages as the sender would build them, for the bare loop."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT m.message_id, b.from_addr, b.from_name, r.email, coalesce(b.to_name, r.name), "
            "b.subject, b.body_text, b.body_html, m.due_at FROM messages m "
            "JOIN recipients r ON r.id = m.recipient_id "
            "JOIN message_bodies b ON b.message_id = m.id "
            "ORDER BY m.due_at, m.id").fetchall()
    finally:
        conn.close()
    messages = []
    for mid, from_addr, from_name, to, to_name, subject, text, html, at in rows:
        env = build(message_id=mid, from_addr=from_addr, from_name=from_name, to=to,
                    to_name=to_name, subject=subject, body_text=text, body_html=html, date=at)
        messages.append((env.sender, env.recipient, env.data))
    with out.open("wb") as fh:
        pickle.dump(messages, fh)
    return len(messages)


def _sink_rate(stats: dict[str, float], expected: int, who: str) -> float:
    if stats["count"] != expected:
        raise RuntimeError(f"{who}: the sink received {stats['count']} messages, "
                           f"expected {expected}")
    span = stats["last"] - stats["first"]
    return (stats["count"] - 1) / span if span > 0 else float("nan")


def run(n: int, repeat: int, timeout: float) -> list[Result]:
    r_sender = Result("end to end", "sender run --once, wall", "msg/s")
    r_sender_sink = Result("end to end", "sender run --once, sink", "msg/s")
    r_bare = Result("end to end", "bare aiosmtplib, wall", "msg/s")
    r_bare_sink = Result("end to end", "bare aiosmtplib, sink", "msg/s")
    r_ratio = Result("end to end", "ratio sender/bare, wall", "x")
    r_ratio_sink = Result("end to end", "ratio sender/bare, sink", "x")
    r_fixed = Result("end to end", "sender run --once on an empty queue", "s")
    r_batch = Result("end to end", "messages per claim transaction", "msg")
    with (tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp,
          SinkProcess(lifetime=timeout * repeat) as sink):
        work = Path(tmp)
        for i in range(repeat):
            db, pickled = work / f"queue{i}.db", work / f"messages{i}.pickle"
            build_queue(db, n)
            prebuilt(db, pickled)
            sender_args = ["-m", "sender", "run", "--db", str(db), "--smtp-host", "127.0.0.1",
                           "--smtp-port", str(sink.port), "--once",
                           "--concurrency", str(CONCURRENCY), "--worker", "bench"]
            bare_args = ["-m", "bench.bare", "--port", str(sink.port), "--messages", str(pickled),
                         "--concurrency", str(CONCURRENCY)]
            sender_first = i % 2 == 0
            for who in ("sender", "bare") if sender_first else ("bare", "sender"):
                child = run_child(sender_args if who == "sender" else bare_args, cwd=work,
                                  timeout=timeout)
                if child.code != 0:
                    raise RuntimeError(f"{who} exited {child.code}: {tail(child.err)}")
                rate = _sink_rate(sink.stats(), n, who)
                if who == "sender":
                    r_sender.runs.append(n / child.seconds)
                    r_sender_sink.runs.append(rate)
                else:
                    r_bare.runs.append(n / child.seconds)
                    r_bare_sink.runs.append(rate)
            counts = state_counts(db)
            if counts != {"sent": n}:
                raise RuntimeError(f"sender left the queue as {counts}, expected all {n} sent")
            r_batch.runs.append(claims_per_transaction(db))
            r_ratio.runs.append(r_sender.runs[-1] / r_bare.runs[-1])
            r_ratio_sink.runs.append(r_sender_sink.runs[-1] / r_bare_sink.runs[-1])
            empty = work / f"empty{i}.db"
            create_schema(empty)
            child = run_child([*sender_args[:3], "--db", str(empty), *sender_args[5:]],
                              cwd=work, timeout=timeout)
            if child.code != 0:
                raise RuntimeError(f"sender on an empty queue exited {child.code}: "
                                   f"{tail(child.err)}")
            r_fixed.runs.append(child.seconds)
            for path in (db, pickled, empty):
                path.unlink()
    note = f"{n} messages, concurrency {CONCURRENCY}"
    r_sender.note = note
    return [r_sender, r_bare, r_ratio, r_sender_sink, r_bare_sink, r_ratio_sink, r_batch, r_fixed]
