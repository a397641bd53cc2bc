"""The README tells the truth about how to run the tests and which commands exist.

CI runs the README's test command verbatim (the last line of ``.ci/run``), so the two cannot
drift apart; and every ``python -m sender <command>`` the README mentions must be a real
subcommand of the command line.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI_DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def _help_commands() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "sender", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split("COMMAND", 1)[-1]
    return set(re.findall(r"^ {4}([a-z][a-z-]*)", listing, re.M))


def test_readme_test_command_is_what_ci_runs() -> None:
    """The second sh block under Quick start is exactly the last line of .ci/run."""
    blocks = _sh_blocks(_section("Quick start"))
    assert len(blocks) >= 2
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    assert blocks[1] == ci_lines[-1].strip()


def test_every_command_the_docs_name_exists() -> None:
    """Each `python -m sender <command>` in the README or docs/ is listed by `python -m sender --help`."""
    named = set(re.findall(r"python -m sender\s+([a-z][a-z-]*)", README + DOCS))
    available = _help_commands()
    assert {"init", "enqueue", "run", "status"} <= set(re.findall(r"python -m sender\s+([a-z][a-z-]*)", README))
    assert named <= available, f"docs name unknown commands: {sorted(named - available)}"


def test_every_command_has_a_reference_section() -> None:
    """docs/cli.md names every subcommand of `python -m sender --help` in a heading."""
    headings = "\n".join(re.findall(r"^## .*$", CLI_DOC, re.M))
    missing = sorted(c for c in _help_commands() if f"`{c}`" not in headings)
    assert not missing, f"docs/cli.md has no section for: {missing}"


def test_readme_fits_on_a_screen_and_links_resolve() -> None:
    """The README stays under 200 lines, and every relative link in README and docs/ names a file that exists."""
    assert len(README.splitlines()) <= 200
    for source, text in [(ROOT / "README.md", README)] + [(p, p.read_text(encoding="utf-8"))
                                                         for p in (ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (source.parent / target).exists(), f"{source.name} links to missing {target}"


def test_command_reference_covers_the_core_commands() -> None:
    """The command reference documents the exit codes and the environment variables."""
    reference = CLI_DOC
    for code in ("`0`", "`1`", "`2`"):
        assert code in reference
    for var in ("SENDER_DB", "SENDER_FROM", "SENDER_SMTP_USER", "SENDER_SMTP_PASSWORD", "SENDER_CONFIG"):
        assert var in reference
