"""Save ``docs/monitor.svg``: the monitor during a failure storm (banner, sparkline, failed list).

    python scripts/monitor_screenshot.py [--out docs/monitor.svg] [--size 120x36]

The queue is ``tests/storm.py``'s (fixed times, the real write path) in a temporary folder;
the app runs headless with the storm's clock and saves the screen with ``App.save_screenshot``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import storm  # noqa: E402
from tui.app import MonitorApp  # noqa: E402


async def shoot(out: Path, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        await storm.build(Path(tmp) / "queue.db")
        app = MonitorApp("queue.db", refresh_every=3600, clock=lambda: storm.T0, actor="docs")
        async with app.run_test(size=size) as pilot:
            for key in (None, "1"):
                await pilot.pause()
                await app.workers.wait_for_complete()
                if key:
                    await pilot.press(key)
            await pilot.press("slash")
            await pilot.press(*"failed")
            await pilot.press("enter")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            app.save_screenshot(out.name, str(out.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "monitor.svg")
    parser.add_argument("--size", default="120x36", help="COLUMNSxROWS")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))
    out = args.out.resolve()
    asyncio.run(shoot(out, (cols, rows)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
