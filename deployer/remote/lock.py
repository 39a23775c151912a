"""One board-side lock for every operation that changes a board (push, run's upload, deploy, rollback).

Why on the board, and why flock: two controllers (two people, a CI job and a person, two shells)
pushing to one board must not interleave their renames, and only the board sees both. The lock is
an flock on `<deploy root>/.deployer.lock` held by a small process (board/lock.sh with flock(1), or
board/lock.py on boards without flock(1)) that lives exactly as long as the SSH channel that started it:

- the channel closes (operation done, Ctrl-C, controller crash, sshd notices a dead session):
  the process reads EOF on stdin and exits; the kernel drops the flock with it.
- the link dies without the board noticing (a cable pulled: the board's sshd can keep a session
  for hours): the controller sends a heartbeat byte every `lease/3` s; after `lease` s of silence
  (default 60 s) the process exits and the lock is free again. A second deployer waiting with
  `wait` >= lease always gets in; a controller frozen (Ctrl-Z) longer than that loses the lock.

Nothing is left to clean up after a crash: a lock file without a live flock holder is just a file.

The holder writes who it is (purpose, controller host, user, pid, command, start time, board pid)
into the lock file, so a second caller gets one line naming the holder, or waits up to `wait` s.

Under the lock, temp files of dead uploads and unpacks older than `sweep_age` are removed from the
layout's temp folders: no live process can own them (every writer holds the lock), the age is only
a margin for deployers older than the lock.

    from deployer.remote.layout import BoardLayout, arg
    from deployer.remote.lock import board_lock

    with board_lock(conn, BoardLayout.for_board(conn.board), purpose="push", wait=30) as held:
        ...                        # held.swept: stale temp files removed; held.waited: seconds waited
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from deployer.errors import DeployerError, RemoteError
from deployer.limits import MAX_WAIT_S
from deployer.remote import board as board_scripts
from deployer.remote.layout import BoardLayout, arg

DEFAULT_SWEEP_AGE = 3600.0     # s: temp files older than this are removed under the lock
BUSY_RC = 75


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a board lock, as written into the lock file."""

    purpose: str = "?"
    host: str = "?"
    user: str = "?"
    pid: int | None = None
    command: str = ""
    since: str = ""
    board_pid: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Holder":
        try:
            d = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(d, dict):
            return cls()
        pick = {k: d.get(k) for k in cls.__dataclass_fields__ if d.get(k) is not None}
        try:
            return cls(**pick)
        except TypeError:
            return cls()

    def describe(self) -> str:
        """`push by alice@ci-runner pid 4242 since 2026-11-30 10:31:02 UTC (deployer push ...)`"""
        if self.purpose == "?" and self.host == "?":
            return "another deployer (holder unknown)"
        cmd = self.command if len(self.command) <= 60 else self.command[:57] + "..."
        text = f"{self.purpose} by {self.user}@{self.host} pid {self.pid}"
        if self.since:
            text += f" since {self.since}"
        return text + (f" ({cmd})" if cmd else "")


class BoardBusy(RemoteError):
    """Another operation holds the board lock (exit 3: the board is not available to us now)."""

    def __init__(self, message: str, holder: Holder, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


@dataclass
class Held:
    """A lock this process holds (yielded by board_lock)."""

    path: str
    purpose: str
    waited: float = 0.0      # seconds spent waiting for another holder
    swept: int = 0           # stale temp files/folders removed under the lock


def holder_info(purpose: str) -> str:
    """The JSON line this process writes into the lock file."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    command = " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])
    return json.dumps({"purpose": purpose, "host": socket.gethostname(), "user": user, "pid": os.getpid(),
                       "command": command[:200], "since": now}, separators=(", ", ": "))


def lock_argv(conn: Any, layout: BoardLayout, purpose: str, wait: float, lease: float,
              sweep_age: float, folders: list[str] | None = None) -> list[str]:
    """The board command holding the lock: sh + flock(1) (no python start-up: seconds on small or
    emulated boards), the python version on boards without flock(1)."""
    python = getattr(conn.board, "python", None) or "python3"
    args = [arg(layout.lock), f"{wait:g}", f"{lease:g}", holder_info(purpose), f"{sweep_age:g}",
            *(arg(f) for f in (folders if folders is not None else layout.temp_folders()))]
    return ["sh", "-c", board_scripts.script("lock.sh"), "sh", board_scripts.script("lock.py"), python, *args]


# The board's flock(1) refuses a timer it cannot arm ("cannot set up timer": inf, 1e300), which
# read as "busy" at once; a week is longer than anyone waits for a deploy.
MAX_LOCK_WAIT_S = MAX_WAIT_S


def default_lease(board: Any) -> float:
    """Seconds of heartbeat silence after which the board frees the lock: twice the board's
    stall_timeout, at least 60 s (heartbeats share the TCP stream with uploads, so on a slow link
    they can arrive tens of seconds late). The fleet's release store session uses it too."""
    return max(60.0, 2 * float(getattr(board, "stall_timeout", 30.0) or 30.0))


@contextlib.contextmanager
def board_lock(conn: Any, layout: BoardLayout | None = None, *, purpose: str = "deploy", wait: float = 0.0,
               lease: float | None = None, sweep_age: float = DEFAULT_SWEEP_AGE,
               on_wait: Callable[[Holder], None] | None = None) -> Iterator[Held]:
    """Hold the board lock for the body of the `with`.

    `wait` s: how long to wait for another holder (0 = refuse at once with BoardBusy naming it).
    `lease` s: the board releases the lock after this much heartbeat silence (default: twice the
    board's stall_timeout, at least 60 s: heartbeats share the TCP stream with uploads, so on a slow
    link they can arrive tens of seconds late). `on_wait(holder)` is called once if we have to wait."""
    if not 0 <= wait <= MAX_LOCK_WAIT_S:
        raise DeployerError(f"lock wait must be 0 to {MAX_LOCK_WAIT_S} seconds")
    layout = layout or BoardLayout.for_board(conn.board)
    board = conn.board
    if lease is None:
        lease = default_lease(board)
    t0 = time.monotonic()
    stream = conn.stream(lock_argv(conn, layout, purpose, wait, lease, sweep_age), check=False,
                         timeout=None, idle_timeout=None)
    held = Held(layout.lock, purpose)
    try:
        lines = iter(stream)
        for line in lines:
            word, _, rest = line.partition(" ")
            if word == "waiting":
                if on_wait is not None:
                    on_wait(Holder.parse(rest))
                continue
            if word == "locked":
                held.swept = int(rest) if rest.strip().isdigit() else 0
                break
            if word == "busy":
                h = Holder.parse(rest)
                waited = f" after waiting {wait:g} s" if wait > 0 else ""
                raise BoardBusy(f"{board.where} is busy{waited}: {h.describe()} holds {layout.lock}", h,
                                hint="retry when it is done, or wait longer with --lock-wait SECONDS")
            if word == "error":
                raise RemoteError(f"{board.where}: cannot take the board lock {layout.lock}: {rest}")
        else:
            raise RemoteError(f"{board.where}: the board lock helper ended without an answer "
                              f"(rc {stream.rc}): {(stream.stderr.strip().splitlines() or ['no stderr'])[-1]}")
        held.waited = time.monotonic() - t0
        with heartbeats(stream, lease / 3, f"lock-heartbeat-{board.name}"):
            yield held
    finally:
        _release(stream)


@contextlib.contextmanager
def heartbeats(stream: Any, every: float, name: str) -> Iterator[None]:
    """`heartbeat` in a thread of its own for the body of the `with` (the board lock, a run)."""
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(stream, every, stop), daemon=True, name=name)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)


def heartbeat(stream: Any, every: float, stop: threading.Event) -> None:
    """One byte on the remote process's stdin every `every` s until `stop`: the board side holds a
    lease on these (board/lock.py, the runner's --lease) and ends itself when they stop coming."""
    while not stop.wait(every):
        try:
            if not stream.send(b"."):
                return
        except (DeployerError, OSError, EOFError):
            return
        except Exception:  # paramiko's own exceptions: the link is gone, the lease frees the lock
            return


def _release(stream: Any) -> None:
    """Close the helper's stdin so it exits by itself (no extra remote process); kill it if the
    link is too broken for that."""
    try:
        if stream.close_stdin():
            stream.wait(timeout=10)
            return
    except (DeployerError, OSError, EOFError):
        pass
    except Exception:
        pass
    with contextlib.suppress(Exception):
        stream.close()


__all__ = ["BUSY_RC", "BoardBusy", "DEFAULT_SWEEP_AGE", "Held", "Holder", "board_lock", "default_lease", "heartbeat",
           "heartbeats", "holder_info", "lock_argv"]
