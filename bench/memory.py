"""Memory: peak RSS of the daemon on a big queue (null transport) and of ``enqueue`` on a big CSV.

Both run as child processes; the figure is the child's own peak resident set (``VmHWM``,
reported by the child at exit: see ``bench.peak`` for why not ``ru_maxrss``). The
daemon works through a queue of ``size`` due messages for at most ``seconds`` (a flat-memory
check needs the queue to be big, not to be emptied); the table says how many it got through and
its resident set at the start, halfway and at the end, so growth per message shows. ``enqueue``
imports a ``size``-row CSV through the real command line, to the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import Result, copy_db, last_json, run_child, tail, write_csv
from .common import template as common_template


def run(size: int, repeat: int, timeout: float, seconds: float) -> list[Result]:
    peak = Result("memory", f"daemon peak RSS, queue of {size:,}", "MB")
    start = Result("memory", "daemon RSS at start", "MB")
    half = Result("memory", "daemon RSS halfway", "MB")
    done = Result("memory", f"daemon messages sent within {seconds:.0f}s", "msg")
    rate = Result("memory", "daemon rate on the big queue", "msg/s")
    enq_peak = Result("memory", f"enqueue peak RSS, CSV of {size:,}", "MB")
    enq_rate = Result("memory", "enqueue rate (validate + insert)", "rows/s")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        template, csv_path = common_template(size), work / "input.csv"
        write_csv(csv_path, size)
        for i in range(repeat):
            db = copy_db(template, work / f"queue{i}.db")
            child = run_child(["-m", "bench.daemon_child", "--db", str(db),
                               "--seconds", str(seconds)], cwd=work, timeout=seconds + timeout)
            if child.code != 0:
                raise RuntimeError(f"daemon child exited {child.code}: {tail(child.err)}")
            out = last_json(child.out)
            peak.runs.append(out["peak_mb"])
            start.runs.append(out["rss_start_mb"])
            half.runs.append(out["rss_half_mb"])
            done.runs.append(out["sent"])
            rate.runs.append(out["sent"] / out["seconds"])
            db.unlink()

            target = work / f"enqueue{i}.db"
            peak_file = work / f"enqueue{i}.peak"
            child = run_child(["-m", "bench.peak", str(peak_file), "-m", "sender", "enqueue",
                               "--db", str(target),
                               "--csv", str(csv_path), "--from", "Team <team@example.org>", "-q"],
                              cwd=work, timeout=timeout)
            if child.code != 0:
                raise RuntimeError(f"enqueue exited {child.code}: {tail(child.err)}")
            enq_peak.runs.append(float(peak_file.read_text(encoding="ascii")))
            enq_rate.runs.append(size / child.seconds)
            target.unlink()
    return [peak, start, half, done, rate, enq_peak, enq_rate]
