"""Smoke test for ``bench/``: every benchmark runs at a tiny size, so none can rot unnoticed.

It runs the real entry point (``python -m bench --quick``) as a child process, bounded in time,
and checks that each benchmark printed its rows with a number in them. It never asserts a
speed: the machine is shared and the figures are read off the table by people.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "end to end": ("sender run --once (default: --prefetch 2), wall", "sender run --once --prefetch 0, wall",
                   "bare aiosmtplib, wall", "ratio sender/bare, sink", "ratio strict/bare, sink",
                   "CPU per message sender/bare"),
    "pipeline": ("claim->build->record, NullSession x8", "NullSession x64"),
    "claims": ("claim, batch 8: sender.queue", "claim, batch 8: raw sqlite3",
               "record 8 + claim 8: sender.queue", "INDEXED BY messages_due"),
    "memory": ("daemon peak RSS", "enqueue peak RSS"),
    "monitor": ("store.counts.state_counts()", "store.counts.worker_counts()"),
}


def _rows(table: str) -> dict[str, list[tuple[str, str]]]:
    """section -> [(figure, median)] from the printed Markdown table."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("benchmark", "") and not cells[0].startswith("-"):
            rows.setdefault(cells[0], []).append((cells[1], cells[2]))
    return rows


def test_every_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """`python -m bench --quick` exits 0 and prints a numeric median for every benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(proc.stdout)
    for section, figures in EXPECTED.items():
        assert section in rows, f"no {section!r} rows in:\n{proc.stdout}"
        for figure in figures:
            found = [median for name, median in rows[section] if figure in name]
            assert found, f"{section}: no row for {figure!r} in:\n{proc.stdout}"
            assert all(m.replace(",", "").replace(".", "", 1).isdigit() for m in found), found
    assert "FAILED" not in proc.stdout


def test_quick_option_parses_and_only_selects() -> None:
    """`--quick --only` keeps the tiny sizes and runs just the chosen benchmarks."""
    from bench.__main__ import QUICK, parse

    sizes, only = parse(["--quick", "--only", "claims,monitor", "--size", "500"])
    assert only == ["claims", "monitor"]
    assert sizes.size == 500 and sizes.repeat == QUICK.repeat and sizes.messages == QUICK.messages
