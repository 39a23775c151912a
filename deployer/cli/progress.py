"""Progress for long work, on stderr: live bars on a terminal, periodic plain lines everywhere else.

A CI log or a pipe stays quiet for the first DEPLOYER_PROGRESS_SECONDS (default 10): short commands,
and commands that stop at bad input, print only their result or their one error line. After that it
gets one line when a phase starts, one when it ends, and one at least every DEPLOYER_PROGRESS_SECONDS
while it runs, even when the library is silent for a while (a heartbeat repeats the current state
with the time spent), e.g.

    quantize: collect 23/44 (52%) 41 s

The library reports through plain callbacks and never imports this module:

    with Progress("quantize") as p:
        run_quantize(profile, progress=p.update)        # (phase, done, total)
        sim_up(..., progress=p)                         # (message, done, total)
        upload_many(..., progress=p.transfer)           # (remote path, bytes done, bytes total)
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import PurePosixPath
from typing import Any, Callable

from rich.console import Console

from deployer.cli.render import console as default_console
from deployer.cli.render import line

DEFAULT_INTERVAL = 10.0


def interval_seconds() -> float:
    """How often a plain progress line is written while a phase runs (DEPLOYER_PROGRESS_SECONDS)."""
    raw = os.environ.get("DEPLOYER_PROGRESS_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        value = DEFAULT_INTERVAL
    return value if value > 0 and value == value else DEFAULT_INTERVAL


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _amount(done: float, total: float, is_bytes: bool) -> str:
    if is_bytes:
        return f"{_size(done)}/{_size(total)}" if total else _size(done)
    return f"{done:g}/{total:g}" if total else (f"{done:g}" if done else "")


class Progress:
    """One reporter per command. `enabled=False` makes every call a no-op."""

    def __init__(self, label: str, *, console: Console | None = None, enabled: bool = True,
                 interval: float | None = None) -> None:
        self.label = label
        self.console = console or default_console
        self.enabled = enabled
        self.interval = interval if interval is not None else interval_seconds()
        self.live = enabled and self.console.is_terminal
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float, bool]] = {}  # phase -> (done, total, is_bytes)
        self._current: str | None = None
        self._started = time.monotonic()
        self._phase_started: dict[str, float] = {}
        self._last_line = 0.0
        self._last_printed: dict[str, float] = {}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # --- context ----------------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        if self.live:
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            # the amount as the log lines say it: "1.3 MB/3.6 MB", not rich's M/N of bytes "1310720/3614776"
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[amount]}", justify="right"),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.__enter__()
        else:
            self._heartbeat = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=1.0)

    # --- the callbacks the library calls ----------------------------------------------------------
    def update(self, phase: str, done: float, total: float | None) -> None:
        """(phase, done, total): a counted phase such as calibration images or boards started."""
        self._report(str(phase), done, total, is_bytes=False)

    __call__ = update

    def transfer(self, remote: str, done: float, total: float | None) -> None:
        """(remote path, bytes sent, bytes total): an upload."""
        self._report(f"upload {PurePosixPath(str(remote)).name}", done, total, is_bytes=True)

    def count(self, done: float, total: float | None, phase: str = "") -> None:
        """(done, total) callbacks that carry no phase name."""
        self._report(phase or self.label, done, total, is_bytes=False)

    # --- internals --------------------------------------------------------------------------------
    def _report(self, phase: str, done: float, total: float | None, is_bytes: bool) -> None:
        if not self.enabled:
            return
        total = total or 0
        with self._lock:
            first = phase not in self._state
            self._state[phase] = (done, total, is_bytes)
            self._current = phase
            now = time.monotonic()
            self._phase_started.setdefault(phase, now)
            if self._bar is not None:
                amount = _amount(done, total, is_bytes)
                if first:
                    self._tasks[phase] = self._bar.add_task(phase, total=total or None, amount=amount)
                self._bar.update(self._tasks[phase], completed=done, total=total or None, amount=amount)
                return
            if now - self._started < self.interval:
                return  # quiet start: nothing for work that ends (or fails) quickly
            self._say_if_due(phase, now)

    def _say_if_due(self, phase: str, now: float) -> None:
        done, total, _ = self._state[phase]
        finished = bool(total) and done >= total
        last = self._last_printed.get(phase)
        if last == -1.0:
            return  # already said it finished
        if last is None or finished or now - last >= self.interval:
            self._print(phase, now)
            self._last_printed[phase] = -1.0 if finished else now

    def _text(self, phase: str, now: float) -> str:
        done, total, is_bytes = self._state[phase]
        amount = _amount(done, total, is_bytes)
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        spent = now - self._phase_started.get(phase, now)
        elapsed = f" {spent:.0f} s" if spent >= 1 else ""
        return f"{self.label}: {phase} {amount}{pct}{elapsed}".rstrip()

    def _print(self, phase: str, now: float) -> None:
        self._last_line = now
        line(self._text(phase, now), to=self.console)

    def _beat(self) -> None:
        """Off a terminal: repeat the current state when nothing was written for `interval` s."""
        while not self._stop.wait(min(1.0, self.interval)):
            with self._lock:
                now = time.monotonic()
                phase = self._current
                if phase is None or now - self._started < self.interval or now - self._last_line < self.interval:
                    continue
                if phase not in self._last_printed:
                    self._say_if_due(phase, now)  # the first line after the quiet start
                elif self._last_printed[phase] != -1.0:
                    self._print(phase, now)
                    self._last_printed[phase] = now
                else:   # the phase ended and the library works on before its next one (22 s of
                    self._last_line = now     # silence between ncnn2table's collect and eq search)
                    line(f"{self.label}: {phase} done; still working ... {now - self._started:.0f} s", to=self.console)


class Status:
    """A spinner with a message on a terminal; off it, `message ... 20 s` every DEPLOYER_PROGRESS_SECONDS
    once the work has taken that long (so a log never goes silent, and quick work stays quiet).

    `message` may be a function (read at every line: a summary of work in flight), and `update()`
    changes it as the work moves on (`rich`'s status.update, which only ever drew on a terminal)."""

    def __init__(self, message: str | Callable[[], str], *, enabled: bool = True,
                 console: Console | None = None) -> None:
        self.message = message
        self.console = console or default_console
        self.enabled = enabled
        self.interval = interval_seconds()
        self._status: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Status":
        if not self.enabled:
            return self
        if self.console.is_terminal:
            self._status = self.console.status(self._text())
            self._status.__enter__()
        else:
            self._thread = threading.Thread(target=self._beat, name="status-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _text(self) -> str:
        return self.message() if callable(self.message) else self.message

    def update(self, message: str) -> None:
        self.message = message
        if self._status is not None:
            self._status.update(message)

    def _beat(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            line(f"{self._text()} ... {time.monotonic() - started:.0f} s", to=self.console)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._status is not None:
            self._status.__exit__(*exc)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
