"""One direction of imports: the monitor (``tui``) depends on ``sender``, never the reverse.

A cron job or a daemon must not pay for, or break on, the terminal UI's dependencies. Each check
runs in a fresh interpreter so nothing imported by other tests can hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import sender
names = sorted(m.name for m in pkgutil.iter_modules(sender.__path__))
for name in names:
    importlib.import_module(f"sender.{name}")
import sender.cli
sender.cli.build_parser()
print(json.dumps({"modules": names,
                  "textual": sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))}))
"""


def _run(code: str) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_every_sender_module_never_imports_textual() -> None:
    """Importing `sender` and every module in it, the command line included, leaves textual unloaded."""
    seen = _run(_IMPORT_ALL)
    assert {"cli", "db", "queue", "delivery", "daemon", "intake"} <= set(seen["modules"])
    assert seen["textual"] == []


def test_command_line_help_never_imports_textual() -> None:
    """Running the command line's parser for every subcommand's --help leaves textual unloaded."""
    code = """
import contextlib, io, json, sys
from sender import cli
parser = cli.build_parser()
commands = [a for a in parser._subparsers._group_actions[0].choices]
for command in commands:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.main([command, "--help"])
print(json.dumps({"modules": commands,
                  "textual": sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))}))
"""
    seen = _run(code)
    assert {"init", "enqueue", "run", "status", "sink"} <= set(seen["modules"])
    assert seen["textual"] == []
