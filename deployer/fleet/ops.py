"""Per-board operations: deploy (upload, health, switch), rollback, list releases, status.

Each function takes one Board and plain data and returns a BoardResult; it never raises for a
board's own failure (a fleet command reports every board), and it is a module-level function of
picklable arguments so any concurrent.futures.Executor - a thread pool here, Dask workers
elsewhere - can run it. A watchdog closes the connection when a board exceeds its deadline, so a
board that vanishes (powered off, link cut without a reset) fails alone in bounded time.

Order of a deploy, and why every cut is safe:
  connect -> lock + state (a no-op ends here) -> [health: probe + runtime (native runner or wheel)]
  -> upload missing blobs
  -> commit (board verifies sha256, builds releases/<id> in a temp folder, renames it)
  -> [health: run the stored release, gate its output] -> switch `current` (rename of a symlink)
  -> note health -> collect old releases -> unlock.
Until the switch the old release stays current; after it the new one is whole.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from deployer.errors import DeployerError, RemoteError
from deployer.fleet.boardcmd import FleetSession, StoreListing, read_store
from deployer.fleet.health import BoardRuntime, HealthPolicy, HealthResult, check
from deployer.fleet.release import LocalRelease
from deployer.remote.layout import BoardLayout, check_name

EventFn = Callable[[dict[str, Any]], None]
# Ctrl-C ends the command; a package missing on this host is the host's problem, said once in one
# line by the CLI, not reported as a failure of every board
_NOT_A_BOARD_FAILURE = (KeyboardInterrupt, ImportError)
FREE_MARGIN = 1 << 20          # keep 1 MiB spare on the board beyond what the release needs


@dataclass
class DeployOptions:
    health: HealthPolicy = field(default_factory=HealthPolicy)
    keep: int = 3                 # previous releases kept on the board
    lock_wait: float = 10.0       # seconds to wait for another deploy's board lock
    lease: float | None = None    # board lock lease (s) without heartbeats; None: deployer.remote.lock's default
    deadline: float = 600.0       # seconds a board may take in total before it is failed
    accept_new: bool = False
    force_health: bool = False    # re-run the health check even when the release is already current
    runtime: str | None = None    # native | python | auto for the health check; None = the board's `runtime:`


@dataclass
class BoardResult:
    board: str
    ok: bool
    release: str | None           # what the board serves when the operation ends
    action: str = ""              # "deployed" | "unchanged" | "rolled-back" | "listed" | "status" | "failed"
    previous: str | None = None
    stage: str = ""               # the last stage reached (where a failure happened)
    error: str | None = None
    exit_code: int = 0
    sent_bytes: int = 0
    reused_bytes: int = 0         # bytes already on the board (blobs or resumed parts)
    seconds: float = 0.0
    health: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


class _Watchdog:
    """Closes the connection when the board's deadline passes (unblocks any pending read).

    One shared thread serves every board (a timer thread per board would cost hundreds of thread
    starts in a large rollout)."""

    _lock = threading.Lock()
    _active: dict[int, "_Watchdog"] = {}
    _thread: threading.Thread | None = None

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._conn: Any = None
        self._due = time.monotonic() + seconds
        with _Watchdog._lock:
            _Watchdog._active[id(self)] = self
            if _Watchdog._thread is None or not _Watchdog._thread.is_alive():
                _Watchdog._thread = threading.Thread(target=_Watchdog._loop, name="fleet-deadlines", daemon=True)
                _Watchdog._thread.start()

    @staticmethod
    def _loop() -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with _Watchdog._lock:
                due = [w for w in _Watchdog._active.values() if w._due <= now]
                for w in due:
                    del _Watchdog._active[id(w)]
            for w in due:
                w._fire()

    def watch(self, conn: Any) -> None:
        self._conn = conn
        if self.fired:
            conn.close()

    def _fire(self) -> None:
        self.fired = True
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass

    def cancel(self) -> None:
        with _Watchdog._lock:
            _Watchdog._active.pop(id(self), None)


def _emit(on_event: EventFn | None, board: str, **event: Any) -> None:
    if on_event is not None:
        try:
            on_event({"board": board, **event})
        except Exception:
            pass


def _connect(board: Any, accept_new: bool, result: BoardResult) -> Any:
    """A connection from the controller's pool when this process has one (the result then says
    whether it was already open), else a new one."""
    from deployer.ssh import pool

    kept = pool.active()
    if kept is not None:
        conn = kept.get(board, accept_new)
        result.extra["connection"] = "reused" if conn.reused else "new"
        return conn
    from deployer.ssh.connect import connect

    return connect(board, accept_new=accept_new)


def _failed(result: BoardResult, err: BaseException, dog: _Watchdog | None) -> BoardResult:
    """A failed result whose error starts with the board's name exactly once: most errors already
    name it, some (connect, deeper layers) do not; readers print `error` as it is."""
    result.ok = False
    result.action = "failed"
    if dog is not None and dog.fired:
        result.error = f"no answer within the {dog.seconds:g} s deadline (stage {result.stage})"
        result.exit_code = 3
    elif isinstance(err, DeployerError):
        result.error = str(err)
        result.exit_code = err.exit_code
    else:
        result.error = f"{type(err).__name__}: {err}"
        result.exit_code = 3 if isinstance(err, (OSError, EOFError)) else 4
    result.error = board_error(result.board, result.error)
    return result


def board_error(board: str, message: str) -> str:
    """`message` prefixed with `board: ` unless it already starts so."""
    return message if message.startswith(f"{board}:") else f"{board}: {message}"



def _finish(result: BoardResult, t0: float, dog: _Watchdog, conn: Any, on_event: EventFn | None) -> None:
    """How every per-board op ends, ok or not: stop the watchdog, close the connection (or give it back
    to the controller's pool when the board itself answered well), time it, report it."""
    dog.cancel()
    if conn is not None:
        from deployer.ssh import pool

        kept = pool.active()
        if kept is not None and not dog.fired and (result.ok or result.exit_code in (1, 2)):
            kept.put(conn)
        else:
            conn.close()
    result.seconds = round(time.monotonic() - t0, 3)
    _emit(on_event, result.board, stage="done" if result.ok else "failed", ok=result.ok, error=result.error,
          release=result.release, action=result.action)


def deploy_board(board: Any, release: LocalRelease, opts: DeployOptions,
                 on_event: EventFn | None = None) -> BoardResult:
    """Bring `release` to one board and make it current if it passes its health check."""
    t0 = time.monotonic()
    result = BoardResult(board.name, False, None, stage="connect")
    dog = _Watchdog(opts.deadline)
    conn = None
    try:
        layout = BoardLayout.for_board(board)
        _emit(on_event, board.name, stage="connect")
        conn = _connect(board, opts.accept_new, result)
        dog.watch(conn)
        runtime = machine = None
        result.stage = "lock"
        _emit(on_event, board.name, stage="lock")
        blobs = release.blobs()
        state_cmd = " ".join(["state", release.id, *(s for s, _, _ in blobs)])
        with FleetSession(conn, layout, wait=opts.lock_wait, command=f"deploy {release.id}",
                          first=[state_cmd], lease=opts.lease, lazy=True) as fs:
            state = fs.state(release.id, [], sent=True)
            result.previous = result.release = state.current
            if state.current == release.id and not opts.force_health:
                result.ok, result.action, result.stage = True, "unchanged", "done"
                result.reused_bytes = release.size
                return result
            fs.keep_alive()               # from here on a frozen controller or dead link loses the lock
            if opts.health.enabled and release.expected is not None:
                result.stage = "runtime"      # under the lock: another deploy may be unpacking it too
                _emit(on_event, board.name, stage="runtime")
                runtime, machine = _provision(board, conn, opts.runtime)
                result.extra.update(runtime.to_json())
            if not state.release_present:
                todo = [(sha, path, size, state.blobs[sha].part if sha in state.blobs else 0)
                        for sha, path, size in blobs if not (sha in state.blobs and state.blobs[sha].have)]
                need = sum(size - min(part, size) for _, _, size, part in todo)
                result.reused_bytes = release.size - need
                if state.free_bytes is not None and need + FREE_MARGIN > state.free_bytes:
                    raise RemoteError(f"{board.name}: not enough disk space for release {release.id}: needs "
                                      f"{_mb(need + FREE_MARGIN)}, the board has {_mb(state.free_bytes)} free; "
                                      "nothing was sent, the current release is untouched",
                                      hint="free space on the board or lower --keep")
                result.stage = "upload"
                _emit(on_event, board.name, stage="upload", total=need)
                from deployer.fleet.upload import send_blobs   # paramiko: not for a controller's client

                sent = send_blobs(conn, layout, todo,
                                  (lambda d, t: _emit(on_event, board.name, stage="upload", done=d, total=t))
                                  if on_event else None)
                result.sent_bytes = sum(s.sent for s in sent)
                result.stage = "commit"
                _emit(on_event, board.name, stage="commit")
                files = [(f.name, f.sha256) for f in release.files]
                try:
                    fs.commit(release.id, release.manifest_sha256, files)
                except RemoteError as err:
                    if " corrupt " not in f" {err.message} ":
                        raise
                    # a resumed part that was not a true prefix: the board deleted it; send again, whole
                    redo = [(sha, path, size, 0) for sha, path, size in blobs if sha in err.message]
                    result.sent_bytes += sum(s.sent for s in send_blobs(conn, layout, redo))
                    fs.commit(release.id, release.manifest_sha256, files)
            else:
                result.reused_bytes = release.size
            health: HealthResult | None = None
            if runtime is not None:
                result.stage = "health"
                _emit(on_event, board.name, stage="health")
                health = check(conn, layout, release, runtime, opts.health, machine=machine)
                result.health = health.to_json()
                fs.note(release.id, {"ok": health.ok, "reason": health.reason, "gate": health.gate,
                                     "failed": health.failed,
                                     "cosine": health.cosine, "median_ms": health.median_ms, "ncnn": health.ncnn,
                                     "runtime": runtime.kind, "machine": health.machine,
                                     "at": int(time.time())})
                if not health.ok:
                    result.stage = "health"
                    raise _HealthFailed(f"{board.name}: health check of {release.id} failed: {health.reason}; "
                                        f"{state.current or 'no release'} stays current")
            result.stage = "switch"
            _emit(on_event, board.name, stage="switch")
            if state.current != release.id:
                result.previous = fs.switch(release.id)
            result.release = release.id
            result.ok, result.action = True, "deployed"
            result.stage = "gc"
            _emit(on_event, board.name, stage="gc")
            try:
                gc = fs.gc(opts.keep, [release.id])
                result.extra["gc"] = gc.strip()
            except RemoteError as err:  # the switch stands; cleaning up can wait for the next deploy
                result.extra["gc"] = f"skipped: {err}"
            result.stage = "done"
        return result
    except BaseException as err:  # noqa: BLE001 - a board's failure is data, Ctrl-C still ends the run
        if isinstance(err, _NOT_A_BOARD_FAILURE):
            raise
        return _failed(result, err, dog)
    finally:
        _finish(result, t0, dog, conn, on_event)


class _HealthFailed(DeployerError):
    exit_code = 1


def _provision(board: Any, conn: Any, requested: str | None) -> tuple[BoardRuntime, str]:
    """The runtime the health check runs, chosen like `run` chooses it (deployer.native.select:
    the static native runner where it is built for the board's arch or the board has no Python,
    else the ncnn wheel), pushed if the board lacks it; and the board's machine."""
    from deployer.native import select as native
    from deployer.remote.session import Session

    session = Session(board, conn)
    facts = session.probe()
    kind, build = native.choose(board, facts, requested)
    if kind == "native" and build is not None:
        install, _ = native.push_native(session, build, layers=False, progress=None, checksum=True, extra=[])
        return (BoardRuntime("native", install.path, install.version),
                getattr(facts, "wheel_arch", None) or getattr(facts, "machine", ""))
    wheel = session.provision()
    facts = session.platform_facts
    return (BoardRuntime("python", wheel.path, wheel.version, board.python or "python3"),
            getattr(facts, "wheel_arch", None) or getattr(facts, "machine", ""))


def rollback_board(board: Any, to: str | None, opts: DeployOptions,
                   on_event: EventFn | None = None) -> BoardResult:
    """Switch back to `to`, or to the release that was current before the current one."""
    t0 = time.monotonic()
    result = BoardResult(board.name, False, None, stage="connect")
    dog = _Watchdog(opts.deadline)
    conn = None
    try:
        if to is not None:
            check_name(to, "--to release id")
        layout = BoardLayout.for_board(board)
        conn = _connect(board, opts.accept_new, result)
        dog.watch(conn)
        result.stage = "read"
        listing = read_store(conn, layout)
        result.release = result.previous = listing.current
        target = to or previous_release(listing)
        if target is None:
            raise DeployerError(f"{board.name}: no earlier release to roll back to "
                                f"(releases on the board: {', '.join(listing.releases) or 'none'})")
        if target not in listing.releases:
            raise DeployerError(f"{board.name}: release {target} is not on the board "
                                f"(it has: {', '.join(sorted(listing.releases)) or 'none'})",
                                hint="see `deployer releases TARGET`")
        if target == listing.current:
            result.ok, result.action, result.stage = True, "unchanged", "done"
            return result
        result.stage = "switch"
        with FleetSession(conn, layout, wait=opts.lock_wait, command=f"rollback {target}",
                          lease=opts.lease) as fs:
            result.previous = fs.switch(target)
        result.release = target
        result.ok, result.action, result.stage = True, "rolled-back", "done"
        return result
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, _NOT_A_BOARD_FAILURE):
            raise
        return _failed(result, err, dog)
    finally:
        _finish(result, t0, dog, conn, on_event)


def previous_release(listing: StoreListing) -> str | None:
    """The release that was current before the current one (switch history, newest first)."""
    for _, rid in reversed(listing.history):
        if rid != listing.current and rid in listing.releases:
            return rid
    return None


def list_board(board: Any, opts: DeployOptions, which: str = "all", on_event: EventFn | None = None) -> BoardResult:
    """The board's releases (ids, current, age, size, model) - or only the current one (`status`)."""
    t0 = time.monotonic()
    result = BoardResult(board.name, False, None, stage="connect")
    dog = _Watchdog(opts.deadline)
    conn = None
    try:
        layout = BoardLayout.for_board(board)
        conn = _connect(board, opts.accept_new, result)
        dog.watch(conn)
        result.stage = "read"
        listing = read_store(conn, layout, which)
        result.release = listing.current
        now = time.time()
        rel = []
        for rid, r in sorted(listing.releases.items(), key=lambda kv: kv[1].mtime):
            rel.append({"id": rid, "current": rid == listing.current, "model": r.manifest.get("model"),
                        "created": r.manifest.get("created"), "by": r.manifest.get("by"),
                        "age_s": max(0, int(now - r.mtime)) if r.mtime else None, "size": r.size_kb * 1024,
                        "health": r.health})
        result.extra["releases"] = rel
        cur = listing.releases.get(listing.current) if listing.current else None
        result.extra["model"] = cur.manifest.get("model") if cur else None
        note = (cur.health or {}) if cur else {}
        kind, version = note.get("runtime"), note.get("ncnn")
        result.extra["runtime"] = " ".join(str(x) for x in (kind, version) if x) or None
        result.extra["runtime_kind"], result.extra["runtime_version"] = kind, version
        result.extra["last_health"] = cur.health if cur else None
        result.extra["free"] = listing.free_bytes
        result.extra["reachable"] = True
        result.ok, result.action, result.stage = True, "listed", "done"
        return result
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, _NOT_A_BOARD_FAILURE):
            raise
        result.extra["reachable"] = conn is not None and getattr(conn, "alive", False)
        return _failed(result, err, dog)
    finally:
        _finish(result, t0, dog, conn, on_event)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
