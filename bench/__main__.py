"""``python -m bench``: run the benchmarks, print one table of medians, exit.

    python -m bench                      # defaults: 3 runs each, big queues of 200,000
    python -m bench --size 1000000       # the full figures for memory, monitor and deep claims
    python -m bench --quick              # tiny sizes, one run: checks that everything still works
    python -m bench --only e2e,claims    # a subset

Exit status 0 when every benchmark ran, 1 when one failed (its error is printed, the others
still run). Nothing here asserts a speed: the goals are read off the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from . import claims, e2e, memory, monitor, pipeline
from .common import Result, table

BENCHMARKS = ("e2e", "pipeline", "claims", "memory", "monitor")


@dataclass(frozen=True)
class Sizes:
    messages: int = 3000        # end to end
    pipeline: int = 5000        # null-transport pipeline, drained
    claims: int = 2000          # rows claimed per claims run
    size: int = 200_000         # big queue: memory, monitor, deep claims
    mem_seconds: float = 15.0   # how long the daemon works through the big queue
    repeat: int = 3
    timeout: float = 300.0      # bound on each benchmark's runs (seconds)
    pin: bool = True            # end to end: the sink on its own CPU, contenders on the others


QUICK = Sizes(messages=40, pipeline=200, claims=200, size=2000, mem_seconds=1.5, repeat=1,
              timeout=60.0)


def parse(argv: list[str] | None) -> tuple[Sizes, list[str]]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and one run (smoke test)")
    p.add_argument("--size", type=int, help="rows in the big queues (default 200000)")
    p.add_argument("--messages", type=int, help="messages end to end (default 3000)")
    p.add_argument("--pipeline", type=int, help="messages through the null pipeline (default 5000)")
    p.add_argument("--claims", type=int, help="rows claimed per claims run (default 2000)")
    p.add_argument("--mem-seconds", type=float, help="daemon time on the big queue (default 15)")
    p.add_argument("--repeat", type=int, help="runs per figure; the table shows the median (3)")
    p.add_argument("--timeout", type=float, help="bound per benchmark in seconds (default 300)")
    p.add_argument("--no-pin", dest="pin", action="store_false", default=None,
                   help="end to end: let the scheduler place the sink and the contenders")
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    given = {k: v for k, v in vars(args).items()
             if k in Sizes.__dataclass_fields__ and v is not None}
    sizes = Sizes(**{**sizes.__dict__, **given})
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if min(sizes.messages, sizes.pipeline, sizes.claims, sizes.size, sizes.repeat) < 1:
        p.error("sizes and --repeat must be at least 1")
    return sizes, only


def runners(s: Sizes) -> dict[str, Callable[[], list[Result]]]:
    return {
        "e2e": lambda: e2e.run(s.messages, s.repeat, s.timeout, s.pin),
        "pipeline": lambda: pipeline.run(s.pipeline, s.repeat, s.timeout),
        "claims": lambda: claims.run(s.claims, s.size, s.repeat, s.timeout),
        "memory": lambda: memory.run(s.size, s.repeat, s.timeout, s.mem_seconds),
        "monitor": lambda: monitor.run(s.size, s.repeat, s.timeout),
    }


def main(argv: list[str] | None = None) -> int:
    sizes, only = parse(argv)
    started = time.monotonic()
    results: list[Result] = []
    failed = []
    todo = runners(sizes)
    for name in only:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            results += todo[name]()
        except Exception as exc:  # report it, run the rest, exit 1
            traceback.print_exc()
            failed.append(name)
            results.append(Result(name, f"FAILED: {exc}".replace("\n", " ")[:120], "-"))
        print(f"bench: {name} took {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs, {sizes.repeat} run(s) per figure, "
          f"{time.monotonic() - started:.0f}s in all")
    print(table(results))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
