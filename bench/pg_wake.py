"""Wake-up latency on PostgreSQL: an idle daemon, one message enqueued, how long until it is delivered.

``python -m bench.pg_wake [--runs 5] [--poll 30] [--heartbeat 5] [--server URL]``: a fresh database
on ``--server`` (default ``$SENDER_TEST_POSTGRES``, dropped afterwards), one ``bench.sink`` process
and one ``sender run --poll P --heartbeat H`` daemon; then, ``runs`` times at varied moments,
``sender enqueue`` of one message and the time from that command's start to the sink's receipt
(both monotonic clocks, which Linux shares between processes): an upper bound, since the commit
comes after the command's start-up (its whole run is printed beside it). Without wake-ups
an idle daemon looks at the queue at every poll and every heartbeat, so the latency is wherever
the sooner of the two happens to be; with them it should depend on neither.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from .common import child_env
from .e2e import SinkProcess
from .pg_claims import _drop, _pg_database

# Pauses between two runs, as fractions of the sooner of --poll and --heartbeat: each run falls at
# another phase of the daemon's own timers (right after a delivery they would all fall at one).
PHASES = (0.13, 0.61, 0.37, 0.89, 0.05)


def _sender(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sender", *args], env=child_env(), capture_output=True,
                          text=True, timeout=60, check=True)


def _delivered(sink: SinkProcess, deadline: float) -> float | None:
    """The monotonic time the sink received its next message, or None past ``deadline``."""
    while time.monotonic() < deadline:
        stats = sink.stats()
        if stats["count"]:
            return stats["first"]
        time.sleep(0.01)
    return None


def measure(url: str, runs: int, poll: float, heartbeat: float) -> list[float]:
    _sender("init", "--db", url)
    with SinkProcess(lifetime=runs * (poll + 40) + 60) as sink:
        daemon = subprocess.Popen([sys.executable, "-m", "sender", "run", "--db", url, "--smtp-port",
                                   str(sink.port), "--poll", str(poll), "--heartbeat", str(heartbeat),
                                   "--worker", "wake-bench"],
                                  env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2.0)  # started and idle
            latencies = []
            for i in range(runs):
                started = time.monotonic()
                _sender("enqueue", "--db", url, "--to", f"lead{i}@example.com", "--subject", "s",
                        "--body", "b", "--from", "team@example.org")
                ran = time.monotonic() - started
                got = _delivered(sink, started + poll + 10)
                if got is None:
                    raise RuntimeError(f"run {i}: not delivered within {poll + 10:.0f}s")
                latencies.append(got - started)
                print(f"run {i + 1}: {latencies[-1]:.3f}s (the enqueue command ran {ran:.3f}s)", flush=True)
                time.sleep(PHASES[i % len(PHASES)] * min(poll, heartbeat))
            return latencies
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--server", default=os.environ.get("SENDER_TEST_POSTGRES", ""))
    args = parser.parse_args()
    if not args.server:
        parser.error("--server (or SENDER_TEST_POSTGRES): a postgresql:// URL to create a database on")
    name, url = _pg_database(args.server)
    try:
        latencies = measure(url, args.runs, args.poll, args.heartbeat)
    finally:
        _drop(args.server, name)
    print(f"enqueue started -> delivered, --poll {args.poll:g} --heartbeat {args.heartbeat:g}, {args.runs} runs: "
          f"median {statistics.median(latencies):.3f}s, min {min(latencies):.3f}s, max {max(latencies):.3f}s")


if __name__ == "__main__":
    main()
