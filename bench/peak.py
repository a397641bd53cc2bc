"""``python -m bench.peak OUT -m MODULE ARGS...``: run a module, write its peak RSS to OUT.

The peak is ``VmHWM`` from ``/proc/self/status``, read at exit. ``ru_maxrss`` would not do:
Linux starts a child's maximum from the memory of the process that spawned it (with vfork, the
parent's own peak), so a small child of a big parent reports the parent's figure.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def peak_mb() -> float:
    """This process's peak resident set since exec, in MB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: python -m bench.peak OUT -m MODULE [ARGS...]")
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    atexit.register(lambda: out.write_text(f"{peak_mb():.1f}\n", encoding="ascii"))
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
