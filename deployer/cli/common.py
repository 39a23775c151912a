"""What every command shares: one exit code per kind of failure, one line per error, JSON output.

Exit codes (the same for every command):
    0 ok, 1 a gate failed, 2 bad input (DeployerError, usage errors, a host file that cannot be
    read or written), 3 a board or its link failed (RemoteError, a dropped connection),
    4 an internal error (a bug: one line on stderr, the traceback in a log file), 130 Ctrl-C,
    143 / 129 SIGTERM / SIGHUP (cleaned up as for Ctrl-C: `Terminated`).

No traceback ever reaches stderr: `handle_errors` wraps each command (so --json failures are JSON
too) and `run_app` wraps the whole program (usage errors, anything raised outside a command).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer

from deployer.cli.render import console, error, out, warn  # noqa: F401  (re-exported for the commands)
from deployer.errors import DeployerError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_REMOTE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
_MAX_LINE = 600


def nonempty_path(text: str) -> Path:
    """typer `parser=` for path options that name a folder to write or deploy: typer reads an empty
    value (an unset $VAR) as Path("") == ".", so `--results ""` wrote history.sqlite and board folders
    into the current folder, `--model ""` deployed whatever model it held, `quantize --out ""` wrote there."""
    if not str(text).strip():
        raise typer.BadParameter("empty; give a path")
    return Path(text)


def emit_json(obj: Any) -> None:
    """Machine output goes to stdout alone; progress and messages go to stderr."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def emit_boards(objs: list[dict[str, Any]]) -> None:
    """The --json of a command on board(s), one contract for all: one board prints its object, several
    print {"ok": every board ok, "boards": [...]}; each object names its `board` and has its own `ok`
    (a failed board also `error` and `exit_code`). probe and push printed {name: ...} maps, run a
    list without `ok`: a script had to know which command it had called."""
    if len(objs) == 1:
        emit_json(objs[0])
    else:
        emit_json({"ok": all(o.get("ok", True) is True for o in objs), "boards": objs})


def _json_default(o: Any) -> Any:
    import dataclasses

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


def one_line(text: str, limit: int = _MAX_LINE) -> str:
    """Collapse any message to a single line (a log line must not be split by the message itself)."""
    flat = re.sub(r"\s*\n\s*", " | ", str(text).strip())
    flat = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "?", flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def fail(err: DeployerError, json_mode: bool = False) -> "typer.Exit":
    """Report a DeployerError (one line, JSON too with --json) and return the Exit to raise."""
    return _report(one_line(str(err)), err.exit_code, json_mode)


def _report(message: str, code: int, json_mode: bool, *, prefix: bool = True) -> "typer.Exit":
    if json_mode:
        try:
            emit_json({"ok": False, "error": message, "exit_code": code})
        except OSError:
            pass
    if prefix:
        error(message)
    else:
        from deployer.cli.render import line

        line(message, prefix="internal error: ", prefix_style="bold red")
    return typer.Exit(code)


def logs_dir() -> Path:
    """$DEPLOYER_CACHE/logs (default ~/.cache/deployer/logs): where internal errors leave their details."""
    from deployer.fsutil import cache_dir

    return cache_dir() / "logs"


def command_name() -> str:
    """`quantize`, `sim-down`...: the words of argv before the first option, for the log's name."""
    words = []
    for arg in sys.argv[1:]:
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(re.sub(r"[^A-Za-z0-9_.-]", "_", arg)[:32])
    return "-".join(words) or "deployer"


def write_crash_log(exc: BaseException) -> Path | None:
    """The traceback and the command line, in a file of its own; None when even that fails."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = (f"deployer internal error at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
            f"argv: {sys.argv!r}\ncwd: {os.getcwd() if os.path.isdir('.') else '?'}\npython: {sys.version}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in (logs_dir(), Path(os.environ.get("TMPDIR", "/tmp"))):
        try:
            from deployer.fsutil import write_text

            path = folder / f"{stamp}-{os.getpid()}-{command_name()}.log"
            folder.mkdir(parents=True, exist_ok=True)
            write_text(path, text)
            return path
        except Exception:  # noqa: BLE001 - the log is best effort; the one-line error still goes out
            continue
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (kill, timeout(1), a CI job cancelled, the terminal closed), raised in the
    main thread by `install_signal_handlers`.

    A KeyboardInterrupt so that it takes Ctrl-C's path through every `finally` and
    `except KeyboardInterrupt`: staged outputs are removed, board sessions and locks let go. Python's
    default for SIGTERM is to die on the spot, which left `.NAME.tmp-*` staging files of ncnn2int8,
    quantize and the other writers on the host."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum        # what the shell reports for a process the signal killed


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP -> Terminated in the main thread; left alone where the parent ignores them
    (`nohup deployer ...` must survive its terminal closing)."""
    import signal

    def _raise(signum: int, _frame: Any) -> None:
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise)


def classify(exc: BaseException) -> tuple[int, str, bool]:
    """(exit code, one-line message, internal?) for any exception a command let out."""
    if isinstance(exc, DeployerError):
        return exc.exit_code, one_line(str(exc)), False
    if isinstance(exc, Terminated):
        import signal

        return exc.exit_code, f"terminated by {signal.Signals(exc.signum).name}", False
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted", False
    if isinstance(exc, ImportError) and not (getattr(exc, "name", None) or "deployer").startswith("deployer"):
        from deployer.cli import missing_package   # the environment's problem, not a bug: no crash log

        return EXIT_INTERNAL, one_line(missing_package(exc)), False
    paramiko = sys.modules.get("paramiko")
    if paramiko is not None and isinstance(exc, getattr(paramiko, "SSHException", ())):
        return EXIT_REMOTE, one_line(f"SSH: {exc or type(exc).__name__}"), False
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror, EOFError)):
        return EXIT_REMOTE, one_line(f"connection failed: {exc or type(exc).__name__}"), False
    if isinstance(exc, OSError) and exc.filename is not None:
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        why = exc.strerror or str(exc)
        hint = {errno.ENOSPC: "free some space and retry", errno.EDQUOT: "free some space and retry",
                errno.EACCES: "check the permissions", errno.EROFS: "choose a writable folder",
                errno.ENOENT: "check the path"}.get(exc.errno or 0)
        return EXIT_INPUT, one_line(f"{where}: {why}" + (f" ({hint})" if hint else "")), False
    detail = one_line(str(exc)) or "(no message)"
    return EXIT_INTERNAL, f"{type(exc).__name__}: {detail}", True


def report_exception(exc: BaseException, json_mode: bool = False) -> "typer.Exit":
    """The one line for `exc` (plus the crash log for internal errors); returns the Exit to raise."""
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        return typer.Exit(EXIT_INPUT)
    code, message, internal = classify(exc)
    if internal:
        log = write_crash_log(exc)
        where = f"details in {log}" if log else "could not write a log; run with python -X dev for details"
        return _report(one_line(f"{message} ({where})"), code, json_mode, prefix=False)
    if code == EXIT_INTERRUPTED:
        from deployer.cli.render import line

        line("interrupted", style="yellow")
        return typer.Exit(code)
    return _report(message, code, json_mode)


def _silence_stdout() -> None:
    """stdout's reader went away (`deployer ... | head`): stop writing there, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def handle_errors(fn: F) -> F:
    """Wrap a command: every exception becomes one line and its exit code (see the module doc).

    The wrapped command must take a `json_output` keyword if it supports --json, so errors are
    reported as JSON too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - the point: nothing escapes as a traceback
            if _is_click_exception(exc):
                raise
            raise report_exception(exc, bool(kwargs.get("json_output"))) from None

    wrapper.__deployer_handles_errors__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


# --- the whole program ----------------------------------------------------------------------------

def _click_exceptions() -> tuple[type, ...]:
    """ClickException wherever this typer keeps it (vendored in typer >= 0.2x, click before)."""
    found: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = __import__(mod, fromlist=["ClickException"])
        except ImportError:
            continue
        found += [getattr(module, n) for n in ("ClickException", "Abort") if isinstance(getattr(module, n, None), type)]
    return tuple(found)


def _is_click_exception(exc: BaseException) -> bool:
    return isinstance(exc, _click_exceptions())


def _usage_line(exc: Any) -> str:
    """`deployer quantize: No such option: --bogus (see deployer quantize --help)`"""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "deployer"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return one_line(f"{path}: {message} (see {path} --help)")


_METAVARS = {"str": "TEXT", "int": "N", "float": "NUM", "path": "PATH", "list[Path]": "PATH", "list[str]": "TEXT",
             "int range": "N", "float range": "NUM", "list[float]": "NUM"}


def _plain_metavars(cmd: Any) -> None:
    """Help in the usual CLI style (`--max-parallel N`, `TARGET`) instead of typer's type labels
    (`--max-parallel <int>`, `{target}`), for every command, without a metavar on every option."""
    for sub in getattr(cmd, "commands", {}).values():
        _plain_metavars(sub)
    import click

    ctx = click.Context(cmd)
    for p in getattr(cmd, "params", []):
        if p.metavar is not None or getattr(p, "is_flag", False):
            continue
        if type(p).__name__.endswith("Argument"):
            p.metavar = (p.name or "ARG").upper() + ("..." if p.nargs != 1 else "")
            p.display_type_rich = lambda ctx=None: ""     # the name says it; no `<str>` beside it
            continue
        try:
            label = (p.display_type(ctx) or "").strip("<>")
        except Exception:  # a parameter type this typer cannot describe: keep its own label
            continue
        if "|" in label:
            p.metavar = "[" + label.removeprefix("list[").removesuffix("]") + "]"
        elif label in _METAVARS:
            p.metavar = _METAVARS[label]


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; usage errors are one line with exit 2."""
    clicks = _click_exceptions()
    import warnings

    # a library warning is a `warning:` line like ours, not Python's "file.py:166: TableWarning: ..."
    warnings.showwarning = lambda message, *rest, **kw: warn(one_line(str(message)))
    try:
        import typer.main

        cmd = typer.main.get_command(app)
        _plain_metavars(cmd)
        rv = cmd(args=args, prog_name="deployer", standalone_mode=False)
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except (typer.Exit,) as e:  # pragma: no cover - standalone_mode=False returns it instead
        return int(getattr(e, "exit_code", 0) or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_INPUT)
    except typer.Abort:
        from deployer.cli.render import line

        line("aborted", style="yellow")
        return EXIT_INTERRUPTED
    except BaseException as exc:  # noqa: BLE001
        if not isinstance(exc, clicks):
            return int(report_exception(exc, "--json" in (args if args is not None else sys.argv)).exit_code)
        if type(exc).__name__ == "Abort":
            from deployer.cli.render import line

            line("aborted", style="yellow")
            return EXIT_INTERRUPTED
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")  # `deployer sim` alone: the help, as click does
        else:
            code = int(getattr(exc, "exit_code", EXIT_INPUT) or EXIT_INPUT)
            if "--json" in (args if args is not None else sys.argv[1:]):
                _report(_usage_line(exc), code, True)       # --json promises a document on stdout
            else:
                error(_usage_line(exc))
        return int(getattr(exc, "exit_code", EXIT_INPUT) or EXIT_INPUT)
