"""Safe templates for enqueue: ``string.Template`` placeholders (``$first_name``, ``${company}``)
filled from the CSV's columns. No code runs, no attribute access, no format specs: a placeholder
is a name or an error. Rendering happens at enqueue, so a missing field is an enqueue error that
names it and the queue holds the final text (validated like any other header or body).

Off by default (``enqueue --template``): without it a ``$`` is just a dollar sign.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from string import Template

from .errors import InputError

TEMPLATED = ("subject", "body", "html")


@dataclass(frozen=True, slots=True)
class Templates:
    """Template sources given once for every row (flags); a row's own column is used otherwise."""

    subject: str | None = None
    body: str | None = None
    html: str | None = None

    def provided(self) -> set[str]:
        return {k for k in TEMPLATED if getattr(self, k) is not None}

    def check(self) -> None:
        """Refuse a malformed template before reading any row."""
        for key in self.provided():
            _placeholders(key, getattr(self, key))

    def render(self, row: dict[str, str | None]) -> dict[str, str | None]:
        """The row with subject/body/html rendered; ``InputError`` names a missing field."""
        fields = {k: (v or "") for k, v in row.items() if k not in TEMPLATED}
        fields.setdefault("email", fields.get("to", ""))
        out = dict(row)
        for key in TEMPLATED:
            source = getattr(self, key)
            if source is not None and row.get(key):
                raise InputError(f"{key}: given both as a column and as a template flag")
            source = source if source is not None else row.get(key)
            if not source:
                continue
            values = {k: html.escape(v) for k, v in fields.items()} if key == "html" else fields
            missing = [name for name in _placeholders(key, source) if name not in values]
            if missing:
                raise InputError(f"{key}: template field ${missing[0]} has no value "
                                 f"(no column named {missing[0]!r})")
            out[key] = Template(source).substitute(values)
        return out


def _placeholders(key: str, source: str) -> list[str]:
    template = Template(source)
    if not template.is_valid():
        raise InputError(f"{key}: invalid template placeholder (use $name or ${{name}}; $$ for a dollar sign)")
    return template.get_identifiers()
