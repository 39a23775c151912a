"""The host end of the board's release store (deployer/fleet/board/fleet.sh).

`FleetSession` holds one exec channel running `fleet.sh session`: the board takes the board lock
(flock on `.deployer.lock`, the same lock push/run take, with the same holder line) and then
answers one command per line. The lock lives as long as that channel, with deployer.remote.lock's
lease: the host sends a `beat` line every lease/3 s (one shared thread for all sessions), and a
session idle for `lease` s without a line (a frozen controller, a link the board's sshd has not
noticed is dead) ends on the board and frees the lock. The lock is not taken through
deployer.remote.lock's own helper because that is a second exec channel per board, and a no-op
deploy of a large fleet is dominated by round trips. Commands are written before their answers are read where that is safe (the first
`state` goes out with the channel), which keeps a no-op deploy to one round trip after the login.

`read_store` runs `fleet.sh list` (read-only, no lock: every pointer it reads is switched by rename).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterator

from deployer.errors import RemoteError
from deployer.remote.layout import BoardLayout

QUIT_WAIT = 5.0      # seconds a session may take to end after `quit` before it is killed


def script() -> str:
    """fleet.sh's text (sent as the `sh -c` script; nothing is installed on the board for it)."""
    return resources.files("deployer.fleet").joinpath("board", "fleet.sh").read_text(encoding="utf-8")


@dataclass
class BlobState:
    sha256: str
    have: bool
    part: int = 0          # bytes of an interrupted upload already on the board


@dataclass
class StoreState:
    current: str | None
    release_present: bool
    blobs: dict[str, BlobState]
    free_bytes: int | None


class _Heartbeats:
    """One daemon thread sends `beat` to every open FleetSession when its lease/3 is due."""

    _lock = threading.Lock()
    _due: dict[int, tuple[float, "FleetSession"]] = {}
    _thread: threading.Thread | None = None

    @classmethod
    def add(cls, session: "FleetSession") -> None:
        with cls._lock:
            cls._due[id(session)] = (time.monotonic() + session.lease / 3, session)
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._loop, name="fleet-heartbeats", daemon=True)
                cls._thread.start()

    @classmethod
    def remove(cls, session: "FleetSession") -> None:
        with cls._lock:
            cls._due.pop(id(session), None)

    @classmethod
    def _loop(cls) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with cls._lock:
                due = [s for t, s in cls._due.values() if t <= now]
                for s in due:
                    cls._due[id(s)] = (now + s.lease / 3, s)
            for s in due:
                try:
                    s.send("beat")
                except Exception:  # the link is gone: the board's lease frees the lock
                    cls.remove(s)


class FleetSession:
    """One locked conversation with a board's release store.

    `lease` s (None: deployer.remote.lock.default_lease(board), 0: none): the board ends the
    session and frees the lock after that long without a line from us while it is idle. With
    `lazy`, the lease starts at keep_alive() instead: a deploy that finds the release already
    current then ends without the board starting its lease watcher (a process start per board is
    measurable in a no-op rollout of hundreds of boards), at the cost of one round trip unleased."""

    def __init__(self, conn: Any, layout: BoardLayout, *, wait: float, command: str,
                 first: list[str] | None = None, lease: float | None = None, lazy: bool = False) -> None:
        self.conn = conn
        self.board = conn.board.name if hasattr(conn, "board") else "board"
        from deployer.remote.lock import default_lease, holder_info

        self.lease = int(default_lease(getattr(conn, "board", None)) if lease is None else max(0, lease))
        self._send_lock = threading.Lock()
        self._leased = False
        argv = ["sh", "-c", script(), "fleet", "session", layout.root, str(int(max(0, wait))), holder_info(command),
                str(0 if lazy else self.lease)]
        self.stream = conn.stream(argv, check=False)
        self._lines: Iterator[str] = iter(self.stream)
        for cmd in first or []:
            self.send(cmd)
        line = self._next("taking the board lock")
        while line.startswith("waiting"):
            line = self._next("waiting for the board lock")
        if line.startswith("busy"):
            from deployer.remote.lock import BoardBusy, Holder

            self.close()
            holder = Holder.parse(line[5:].strip())
            what = (holder.purpose.split() or ["deployer"])[0] if holder.purpose != "?" else "deployer"
            raise BoardBusy(f"{self.board}: another {what} holds the board lock: {holder.describe()}",
                            holder, hint="wait for it to finish, or raise --lock-wait")
        if line != "locked":
            self.close()
            raise RemoteError(f"{self.board}: the board's release store did not start: {line or 'no answer'}")
        if not lazy:
            self._leased = True
            if self.lease > 0:
                _Heartbeats.add(self)

    def keep_alive(self) -> None:
        """Start the board's lease (lazy sessions) and our heartbeats; no answer to wait for."""
        if self._leased or self.lease <= 0:
            return
        self.send(f"lease {self.lease}")
        self._leased = True
        _Heartbeats.add(self)

    def _next(self, doing: str) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            tail = (self.stream.stderr or "").strip().splitlines()[-1:]
            raise RemoteError(f"{self.board}: the release store ended while {doing}"
                              + (f": {tail[0]}" if tail else "")) from None

    def send(self, line: str) -> None:
        if "\n" in line:
            raise ValueError("one command per line")
        with self._send_lock:     # the heartbeat thread writes to the same stdin
            ok = self.stream.send((line + "\n").encode())
        if not ok:
            raise RemoteError(f"{self.board}: the release store exited early")

    def ask(self, line: str, doing: str) -> str:
        """Send a one-answer command; return the text after `ok` or raise with the board's reason."""
        self.send(line)
        answer = self._next(doing)
        if answer == "ok" or answer.startswith("ok "):
            return answer[3:]
        raise RemoteError(f"{self.board}: {doing} failed: {answer[4:] if answer.startswith('err ') else answer}")

    def state(self, release_id: str, shas: list[str], sent: bool = False) -> StoreState:
        if not sent:
            self.send(" ".join(["state", release_id, *shas]))
        current, present, blobs, free = None, False, {}, None
        while True:
            line = self._next("reading the board's release store")
            words = line.split()
            if not words:
                continue
            if words[0] == "end":
                break
            if words[0] == "err":
                raise RemoteError(f"{self.board}: release store: {line[4:]}")
            if words[0] == "current":
                current = None if words[1:] in ([], ["-"]) else words[1]
            elif words[0] == "release":
                present = words[1:] == ["have"]
            elif words[0] == "blob" and len(words) >= 3:
                if words[2] == "have":
                    blobs[words[1]] = BlobState(words[1], True)
                elif words[2] == "part" and len(words) > 3 and words[3].isdigit():
                    blobs[words[1]] = BlobState(words[1], False, int(words[3]))
                else:
                    blobs[words[1]] = BlobState(words[1], False)
            elif words[0] == "free" and len(words) > 1 and words[1].isdigit():
                free = int(words[1]) * 1024
        return StoreState(current, present, blobs, free)

    def commit(self, release_id: str, manifest_sha: str, files: list[tuple[str, str]]) -> str:
        return self.ask(" ".join(["commit", release_id, manifest_sha, *(f"{n}={s}" for n, s in files)]),
                        "storing the release")

    def switch(self, release_id: str) -> str | None:
        prev = self.ask(f"switch {release_id}", f"switching to {release_id}").strip()
        return None if prev in ("", "-") else prev

    def gc(self, keep: int, protect: list[str] = ()) -> str:  # type: ignore[assignment]
        return self.ask(" ".join(["gc", str(keep), *protect]), "collecting old releases")

    def note(self, release_id: str, data: dict[str, Any]) -> None:
        self.ask(f"note {release_id} " + json.dumps(data, sort_keys=True, separators=(",", ":")),
                 "saving the health result")

    def close(self) -> None:
        """Say goodbye, then wait for the session to end on the board, which frees the lock.

        Only a session that does not end within QUIT_WAIT s is killed: killing is a second exec
        channel and a process start on the board (kill.sh), which every deploy and no-op paid when
        close() killed unconditionally - about a quarter of a 200-board no-op rollout's time."""
        _Heartbeats.remove(self)
        try:
            with self._send_lock:
                self.stream.send(b"quit\n")
            self.stream.close_stdin()
            self.stream.wait(timeout=QUIT_WAIT)
        except Exception:
            pass
        try:
            self.stream.close()       # nothing to do when the session has ended
        except Exception:
            pass

    def __enter__(self) -> "FleetSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class BoardRelease:
    id: str
    mtime: int
    size_kb: int
    manifest: dict[str, Any]
    health: dict[str, Any] | None = None


@dataclass
class StoreListing:
    current: str | None
    free_bytes: int | None
    releases: dict[str, BoardRelease] = field(default_factory=dict)
    history: list[tuple[int, str]] = field(default_factory=list)   # oldest first


def read_store(conn: Any, layout: BoardLayout, which: str = "all", timeout: float = 60.0) -> StoreListing:
    """The board's releases (or only the current one), manifests, health notes and switch history."""
    res = conn.run(["sh", "-c", script(), "fleet", "list", layout.root, which], timeout=timeout)
    name = conn.board.name if hasattr(conn, "board") else "board"
    if res.rc != 0:
        raise RemoteError(f"{name}: reading the release store failed: "
                          f"{(res.stdout.strip() or res.stderr.strip() or f'exit {res.rc}').splitlines()[-1]}")
    listing = StoreListing(None, None)
    for line in res.stdout.splitlines():
        head, _, rest = line.partition(" ")
        if head == "current":
            listing.current = None if rest.strip() in ("", "-") else rest.strip()
        elif head == "free":
            listing.free_bytes = int(rest) * 1024 if rest.strip().isdigit() else None
        elif head == "release":
            w = rest.split()
            if len(w) == 3:
                listing.releases[w[0]] = BoardRelease(w[0], _int(w[1]), _int(w[2]), {})
        elif head in ("manifest", "health"):
            rid, _, text = rest.partition(" ")
            try:
                data = json.loads(text)
            except ValueError:
                data = {"unreadable": True}
            if rid in listing.releases:
                if head == "manifest":
                    listing.releases[rid].manifest = data
                else:
                    listing.releases[rid].health = data
        elif head == "history":
            w = rest.split()
            if len(w) == 2:
                listing.history.append((_int(w[0]), w[1]))
    return listing


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
