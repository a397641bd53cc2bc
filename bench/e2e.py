"""End to end: the real sender against a bare aiosmtplib loop, same sink process, same run.

The sender is the real command line, ``python -m sender run --once --concurrency 8`` as a
subprocess on a fresh queue (logging as a cron line would, to a file), twice: with the default
settings (claiming ahead, ``--prefetch 2``) and strictly just in time (``--prefetch 0``). The bare
loop (``bench.bare``) is a subprocess too and sends the same messages, prebuilt bytes, over the
same number of reused connections. All go to one ``bench.sink`` process, a minimal sink that
counts messages and distinct Message-IDs and stores nothing; every contender must deliver each
message exactly once. The order rotates between runs so nobody always meets a
warmer machine. With two or more CPUs the sink is pinned to one and the contenders to the others
(``--no-pin`` leaves it to the scheduler; see ``common.split_cpus``).

Two views of each rate: *wall* is messages over the child's whole life (interpreter start,
imports, opening the queue included: what a cron run costs); *sink* is what the sink saw
between the first and the last message (steady state, the same observer for both).

Each contender's CPU (user + system, whole process, from ``wait4``) is reported per message
beside its rate, and as a ratio to the bare loop's.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from sender.config import Settings
from sender.message import build

from .common import (
    Result,
    build_queue,
    child_env,
    claims_per_transaction,
    create_schema,
    run_child,
    split_cpus,
    state_counts,
    tail,
    warm_bytecode,
)

CONCURRENCY = 8


class SinkProcess:
    """``bench.sink`` as a child: ``port`` once it listens, ``stats()`` per contender."""

    def __init__(self, lifetime: float, cpus: set[int] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "--lifetime", str(lifetime)], env=child_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if cpus:
            os.sched_setaffinity(self.proc.pid, cpus)
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
        env = build(mid=mid, from_addr=from_addr, from_name=from_name, to=to,
                    to_name=to_name, subject=subject, body_text=text, body_html=html, date=at)
        messages.append((env.sender, env.recipient, env.data))
    with out.open("wb") as fh:
        pickle.dump(messages, fh)
    return len(messages)


def _sink_rate(stats: dict[str, float], expected: int, who: str) -> float:
    if stats["count"] != expected or stats["mids"] != expected:
        raise RuntimeError(f"{who}: the sink received {stats['count']} messages with {stats['mids']} "
                           f"distinct Message-IDs, expected {expected} of each")
    span = stats["last"] - stats["first"]
    return (stats["count"] - 1) / span if span > 0 else float("nan")


def _args(who: str, port: int, db: Path | None, pickled: Path) -> list[str]:
    if who == "bare":
        return ["-m", "bench.bare", "--port", str(port), "--messages", str(pickled),
                "--concurrency", str(CONCURRENCY)]
    strict = ["--prefetch", "0"] if who == "strict" else []  # the default claims ahead
    return ["-m", "sender", "run", "--db", str(db), "--smtp-host", "127.0.0.1", "--smtp-port", str(port),
            "--once", "--concurrency", str(CONCURRENCY), "--worker", "bench", *strict]


def run(n: int, repeat: int, timeout: float, pin: bool = True) -> list[Result]:
    cpus = split_cpus() if pin else None
    sink_cpus, child_cpus = cpus if cpus else (None, None)
    warm_bytecode()
    contenders = {"sender": f"sender run --once (default: --prefetch {Settings.prefetch})",
                  "strict": "sender run --once --prefetch 0", "bare": "bare aiosmtplib"}
    wall = {who: Result("end to end", f"{label}, wall", "msg/s") for who, label in contenders.items()}
    seen = {who: Result("end to end", f"{label}, sink", "msg/s") for who, label in contenders.items()}
    ratios = {(who, view): Result("end to end", f"ratio {who}/bare, {view}", "x")
              for who in ("sender", "strict") for view in ("wall", "sink")}
    batch = {"sender": Result("end to end", "messages per claim transaction, default", "msg"),
             "strict": Result("end to end", "messages per claim transaction, --prefetch 0", "msg")}
    cpu = {who: Result("end to end", f"{label}, CPU per message (whole process)", "us")
           for who, label in contenders.items()}
    cpu_ratio = {who: Result("end to end", f"CPU per message {who}/bare", "x") for who in ("sender", "strict")}
    r_fixed = Result("end to end", "sender run --once on an empty queue", "s")
    r_fixed_cpu = Result("end to end", "sender run --once on an empty queue, CPU", "s")
    order = list(contenders)
    with (tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp,
          SinkProcess(lifetime=timeout * repeat, cpus=sink_cpus) as sink):
        work = Path(tmp)
        for i in range(repeat):
            dbs = {who: work / f"queue{i}-{who}.db" for who in ("sender", "strict")}
            for db in dbs.values():
                build_queue(db, n)
            pickled = work / f"messages{i}.pickle"
            prebuilt(dbs["sender"], pickled)
            for who in order[i % 3:] + order[:i % 3]:  # rotate, so nobody always meets a warmer machine
                child = run_child(_args(who, sink.port, dbs.get(who), pickled), cwd=work, timeout=timeout,
                                  cpus=child_cpus)
                if child.code != 0:
                    raise RuntimeError(f"{who} exited {child.code}: {tail(child.err)}")
                wall[who].runs.append(n / child.seconds)
                cpu[who].runs.append(child.cpu / n * 1e6)
                seen[who].runs.append(_sink_rate(sink.stats(), n, who))
            for who, db in dbs.items():
                counts = state_counts(db)
                if counts != {"sent": n}:
                    raise RuntimeError(f"{who} left the queue as {counts}, expected all {n} sent")
                batch[who].runs.append(claims_per_transaction(db))
                for view, rates in (("wall", wall), ("sink", seen)):
                    ratios[(who, view)].runs.append(rates[who].runs[-1] / rates["bare"].runs[-1])
                cpu_ratio[who].runs.append(cpu[who].runs[-1] / cpu["bare"].runs[-1])
            empty = work / f"empty{i}.db"
            create_schema(empty)
            child = run_child(_args("sender", sink.port, empty, pickled), cwd=work, timeout=timeout, cpus=child_cpus)
            if child.code != 0:
                raise RuntimeError(f"sender on an empty queue exited {child.code}: {tail(child.err)}")
            r_fixed.runs.append(child.seconds)
            r_fixed_cpu.runs.append(child.cpu)
            for path in (*dbs.values(), pickled, empty):
                path.unlink()
    wall["sender"].note = (f"{n} messages, concurrency {CONCURRENCY}, "
                           + ("sink pinned to its own CPU" if cpus else "unpinned"))
    return [wall["sender"], wall["strict"], wall["bare"], ratios[("sender", "wall")],
            ratios[("strict", "wall")], seen["sender"], seen["strict"], seen["bare"],
            ratios[("sender", "sink")], ratios[("strict", "sink")], cpu["sender"], cpu["strict"], cpu["bare"],
            cpu_ratio["sender"], cpu_ratio["strict"], batch["sender"], batch["strict"], r_fixed, r_fixed_cpu]
