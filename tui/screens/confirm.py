"""Confirmation dialogs: nothing changes in the queue without an explicit yes.

``Confirm`` answers True or False; ``Choose`` answers one of its choices or None. Both are
keyboard-first (each choice has a key, Escape backs out) and default to the harmless answer.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class Choose(ModalScreen[str | None]):
    """A question with a few answers, each bound to a key; ``n``, Escape or No answer None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "answer('')", "Back", show=False)]

    def __init__(self, question: str, choices: list[tuple[str, str, str]], *,
                 stacked: bool = False) -> None:
        """``choices``: (answer, key, label). The focus starts on No, the harmless answer.
        ``stacked`` puts the buttons one per line (for many choices)."""
        super().__init__()
        self.question = question
        self.choices = choices
        self.stacked = stacked

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with (Vertical if self.stacked else Horizontal)(id="buttons"):
                for answer, key, label in self.choices:
                    yield Button(f"{label} ({key})", id=f"answer-{answer}", variant="warning",
                                 compact=self.stacked)
                yield Button("No (n / esc)", id="answer-", compact=self.stacked)

    def on_mount(self) -> None:
        self.query_one("#answer-", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for answer, key, _label in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(answer)
                return
        if event.key == "n":
            event.stop()
            self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        answer = (event.button.id or "answer-").removeprefix("answer-")
        self.dismiss(answer or None)

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer or None)


class Confirm(Choose):
    """Yes (``y``) or no (``n``, Escape, or Enter on the focused No button)."""

    def __init__(self, question: str) -> None:
        super().__init__(question, [("yes", "y", "Yes")])


class AskReason(ModalScreen[str | None]):
    """A question with a free-text reason: Enter or Pause answers the text, Escape None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", show=False)]

    def __init__(self, question: str, placeholder: str = "reason (shown in status and the monitor)",
                 label: str = "Pause") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.label = label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Input(placeholder=self.placeholder, id="reason")
            with Horizontal(id="buttons"):
                yield Button(f"{self.label} (enter)", id="answer-yes", variant="warning")
                yield Button("No (esc)", id="answer-")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "answer-yes":
            self.dismiss(self.query_one(Input).value.strip())
        else:
            self.dismiss(None)

    def action_back(self) -> None:
        self.dismiss(None)
