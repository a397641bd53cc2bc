"""The ``?`` screen: every key, and what the ``/`` filter matches."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Monitor keys

| Key | Does |
|---|---|
| `1` … `5` | Queue, In flight, Workers, Duplicates, Log |
| `↑` `↓` `PgUp` `PgDn` | move in the table |
| `Enter` | open the selected message: fields, every attempt, audit |
| `/` | filter (Enter applies, Escape clears) |
| `[` `]` | Duplicates: shorter / longer report window |
| `c` | cancel the selected **scheduled** message |
| `t` | retry the selected **failed** message (same Message-ID) |
| `u` | resolve the selected **unknown** message: sent, failed or requeue |
| `p` | pause / resume sending for every daemon |
| `r` | refresh now |
| `?` | this help |
| `Escape` | back |
| `q` | quit |

Every action asks for confirmation and writes an audit row; `--read-only` refuses them all.

**Filter.** On the Log tab the filter is a recipient or Message-ID (exact, any age), a
message row (`123` or `#123`), or, among the most recent attempts, a status (`sent`,
`unknown`…) or a fragment of a recipient or Message-ID. On the other tabs it keeps the rows
that contain the text.

Times are UTC. The display connection is read-only (`mode=ro`); actions open their own
short-lived writable connection.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
