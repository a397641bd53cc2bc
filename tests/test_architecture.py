"""Architecture: imports go one way, and SQL lives in one package.

The monitor (``tui``) depends on ``sender``, never the reverse; every SQL statement is written in
``sender/store/`` (scripts, benchmarks and tests aside), so an engine change touches one package.

A cron job or a daemon must not pay for, or break on, the terminal UI's dependencies. Each check
runs in a fresh interpreter so nothing imported by other tests can hide an import.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

from tests.conftest import ROOT

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import sender
names = sorted(m.name.removeprefix("sender.")
               for m in pkgutil.walk_packages(sender.__path__, "sender."))
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
    assert {"cli", "store.db", "store.claims", "store.sending", "delivery", "daemon", "intake"} <= set(seen["modules"])
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


_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA) ")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_outside_store() -> list[str]:
    """Each ``path:line`` under ``sender`` and ``tui`` (``sender/store`` aside) whose string holds SQL."""
    hits = []
    for path in sorted([*(ROOT / "sender").rglob("*.py"), *(ROOT / "tui").rglob("*.py")]):
        if (ROOT / "sender" / "store") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        hits += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and id(node) not in docs and _SQL.search(node.value)]
    return hits


def test_sql_is_written_only_in_the_store() -> None:
    """No string outside ``sender/store`` (docstrings aside) holds a SQL keyword statement."""
    assert sql_outside_store() == []
