"""What every command shares: turning DeployerError into one line and an exit code, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

from deployer.errors import DeployerError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def emit_json(obj: Any) -> None:
    """Machine output goes to stdout alone; progress and messages go to stderr."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    import dataclasses
    from pathlib import Path

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fail(err: DeployerError, json_mode: bool = False) -> "typer.Exit":
    if json_mode:
        emit_json({"ok": False, "error": str(err)})
    console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
    return typer.Exit(err.exit_code)


def handle_errors(fn: F) -> F:
    """Wrap a command: DeployerError -> one red line + its exit code; Ctrl-C -> exit 130.

    The wrapped command must take a `json_output` keyword if it supports --json, so errors are
    reported as JSON too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeployerError as err:
            raise fail(err, bool(kwargs.get("json_output"))) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
