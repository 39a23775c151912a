"""How deployer writes for people: rich on a terminal, plain full-width text everywhere else.

Off a terminal (CI logs, pipes, files) rich would cut tables to 80 columns and wrap long lines; logs
are read later in a browser or with grep, so there the consoles are as wide as the content, carry
no escape codes (rich only colours a terminal, and NO_COLOR/TERM=dumb are honoured) and every
message is one line. Commands print through `console` (stderr: messages, progress, human views
that accompany --json) and `out` (stdout: the human result), never through print() of a repr.

    from deployer.cli.render import console, out, error, warn, say, kv_table, human
    out.print(kv_table("sim-1", {"python": "3.11.2", "cpus": 4}))
    warn("calibration set has 3 images")          # "warning: ..." on one line
"""

from __future__ import annotations

import math
import sys
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any, Iterable, Mapping

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Width off a terminal: wide enough that no table or message of ours is ever cut or wrapped.
PLAIN_WIDTH = 4096


class _Console(Console):
    """A rich Console that is as wide as its content when its stream is not a terminal.

    The stream is looked up on every write (rich does so too), so pytest's capture, CliRunner and
    redirections made after import all see the right behaviour.
    """

    @property  # type: ignore[override]
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(PLAIN_WIDTH, 25)
        return Console.size.fget(self)  # type: ignore[attr-defined]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if not self.is_terminal:   # rich wraps a title to its table's width: one line here, as for messages
            for obj in objects:
                if isinstance(obj, Table) and isinstance(obj.title, str):
                    obj.title = Text.from_markup(obj.title, overflow="ignore")
                    obj.title.no_wrap = True
        super().print(*objects, **kwargs)


console = _Console(stderr=True, highlight=False)
out = _Console(highlight=False)


def is_terminal(stream: str = "stderr") -> bool:
    """Is stderr (progress, messages) or stdout (results) a terminal a person is watching?"""
    return (console if stream == "stderr" else out).is_terminal


def line(text: str, *, style: str | None = None, prefix: str = "", prefix_style: str | None = None,
         to: Console | None = None) -> None:
    """One message, one line, whatever its length: `text` is taken literally (no rich markup)."""
    c = to or console
    if not c.is_terminal:     # what rich would write there anyway, at a hundredth of the cost (200-board logs)
        c.file.write(f"{prefix}{text}\n")
        return
    head = f"[{prefix_style}]{escape(prefix)}[/]" if prefix and prefix_style else escape(prefix)
    body = f"[{style}]{escape(text)}[/]" if style else escape(text)
    c.print(head + body, soft_wrap=True, highlight=False)


def say(text: str) -> None:
    """An informational line on stderr."""
    line(text)


def warn(text: str) -> None:
    line(text, prefix="warning: ", prefix_style="yellow")


def note(text: str) -> None:
    line(text, prefix="note: ", prefix_style="yellow")


def error(text: str) -> None:
    """The one line a failing command ends with: `error: <what and what to do>`."""
    line(text, prefix="error: ", prefix_style="bold red")


def human(value: Any) -> str:
    """A value as a person reads it: no quotes, brackets or class names (never repr())."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:.6g}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (str, int, PurePath)):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return human({f.name: getattr(value, f.name) for f in fields(value)})
    if isinstance(value, Mapping):
        if not value:
            return "-"
        return ", ".join(f"{k}={human(v)}" if not isinstance(v, Mapping) else f"{k}: ({human(v)})"
                         for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        return ", ".join(human(v) for v in items) if items else "-"
    return str(value)


def kv_table(title: str | None, values: Mapping[str, Any]) -> Table:
    """A two-column key/value view (probe, status of one thing), values through human()."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in values.items():
        table.add_row(escape(str(key)), escape(human(value)))
    return table


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]],
          right: Iterable[str] = ()) -> Table:
    """A plain table: cells through human() and escaped, `right` names the right-aligned columns."""
    right = set(right)
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        t.add_row(*(escape(human(cell)) for cell in row))
    return t


def flush() -> None:
    """Make sure everything written so far is out (before a child process or an exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
