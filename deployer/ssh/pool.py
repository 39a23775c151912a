"""Authenticated connections kept open for the next command (paramiko's ControlPersist).

Why: on a fleet, a command that opens a fresh SSH connection per board pays a key exchange, a
host-key check, a public-key login and a new sshd process on every board, every time. For a
`status` or a no-op rollout that is nearly all the work. The persistent fleet controller
(deployer.fleet.controller) keeps one pool for as long as it lives; its per-board operations take
a connection from here and give it back when they end well.

A pooled connection is only handed out again while its watchdog has heard from the board
recently (every idle connection is pinged every `keepalive` seconds and closed after
`stall_timeout` seconds of silence, see deployer.ssh.connect.Watchdog), so a board that rebooted
or vanished gets a new connection, with a new strict host-key check. A connection is never shared
by two operations at once: get() removes it from the pool, put() returns it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from deployer.targets import Board

_active: "ConnectionPool | None" = None


def activate(pool: "ConnectionPool | None") -> None:
    """Make `pool` the one every per-board operation in this process uses (the controller does;
    a normal CLI process has none: each operation opens and closes its own connection)."""
    global _active
    _active = pool


def active() -> "ConnectionPool | None":
    return _active


def _key(board: Board) -> tuple:
    """What makes two connections interchangeable: where, as whom, with which key, through which hops."""
    jump = tuple(repr(_key(j)) if isinstance(j, Board) else str(j) for j in (board.jump or []))
    return (board.host, board.port, board.user, str(board.key), str(board.known_hosts), jump,
            board.keepalive, board.stall_timeout)


class ConnectionPool:
    """Idle connections by board identity; closed after `idle` seconds unused."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._lock = threading.Lock()
        self._free: dict[tuple, list[tuple[float, Any]]] = {}
        self.opened = 0
        self.reused = 0

    def get(self, board: Board, accept_new: bool) -> Any:
        from deployer.ssh.connect import connect

        key = _key(board)
        while True:
            with self._lock:
                stack = self._free.get(key)
                item = stack.pop() if stack else None
            if item is None:
                break
            conn = item[1]
            if self._fresh(conn):
                self.reused += 1
                conn.reused = True
                return conn
            conn.close()
        self.opened += 1
        conn = connect(board, accept_new=accept_new)
        conn.reused = False
        return conn

    def put(self, conn: Any) -> None:
        """Keep `conn` for the next operation on its board, if it is still sound."""
        if not self._fresh(conn):
            conn.close()
            return
        with self._lock:
            self._free.setdefault(_key(conn.board), []).append((time.monotonic(), conn))

    @staticmethod
    def _fresh(conn: Any) -> bool:
        dog = conn.watchdog
        return (conn.alive and dog.reason is None
                and time.monotonic() - dog.last_rx < 2 * dog.keepalive + 1.0)

    def reap(self) -> int:
        """Close connections unused for `idle` seconds or gone stale; how many are still pooled."""
        now = time.monotonic()
        drop: list[Any] = []
        with self._lock:
            for key, stack in list(self._free.items()):
                keep = [(t, c) for t, c in stack if now - t < self.idle and self._fresh(c)]
                drop += [c for t, c in stack if (t, c) not in keep]
                if keep:
                    self._free[key] = keep
                else:
                    del self._free[key]
            left = sum(len(s) for s in self._free.values())
        for c in drop:
            c.close()
        return left

    def close(self) -> None:
        with self._lock:
            conns = [c for stack in self._free.values() for _, c in stack]
            self._free.clear()
        for c in conns:
            c.close()
