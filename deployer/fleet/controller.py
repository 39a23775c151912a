"""The persistent fleet controller: one background process that keeps board connections open
between fleet commands (what OpenSSH's ControlPersist and Ansible's default do for ssh).

Why: a fleet command that opens a new SSH connection per board pays, per board, a key exchange,
a host-key check, a public-key login and a fresh sshd process on the board. For `status`, a
no-op rollout or a rollback that is nearly all the work: measured on 200 light emulated boards on
one 2-core machine, sshd alone burns ~28 ms of CPU per login (bench/bench_fleet.py). With the
controller, the first fleet command starts it and pays the logins; the commands after it within
`--persist` seconds reuse the open, already verified connections.

How: the CLI (deployer.fleet.controller.call) connects to a Unix socket in the deployer cache
(0700 folder, 0600 socket, the peer's uid checked with SO_PEERCRED), sends the service call
(function name + pickled arguments: boards, release, options, all plain dataclasses), and gets
back the live per-board events and the report. The controller runs the very same
deployer.fleet.service function with a deployer.ssh.pool.ConnectionPool active; the per-board
operations take connections from it and return the ones whose board answered well.

- One controller per (user, Python, deployer source, working folder, DEPLOYER_* settings, ssh
  agent): a command run with other settings never talks to a controller that would act differently.
- It exits `persist` seconds after its last command ended, closing every connection.
- A client that goes away (Ctrl-C, a killed terminal) stops the command from starting further
  boards; boards already running finish or fail at their deadline, exactly as in a plain process.
- If the controller cannot be started or reached, the command runs in the CLI process instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import deployer
from deployer.errors import DeployerError
from deployer.fsutil import cache_dir

EventFn = Callable[[dict[str, Any]], None]
_LEN = struct.Struct(">I")
START_WAIT = 15.0            # seconds to wait for a new controller's socket


# ---------------------------------------------------------------- where

def _source_stamp() -> str:
    """Changes whenever deployer's code does (a controller started by older code is not reused)."""
    pkg = Path(deployer.__file__).parent
    newest = max((p.stat().st_mtime_ns for p in pkg.rglob("*.py")), default=0)
    return f"{getattr(deployer, '__version__', '')}:{newest}"


def socket_path(cwd: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """The controller for this user, Python, deployer code, folder and DEPLOYER_* settings
    (DEPLOYER_PERSIST aside: how long to keep connections changes nothing a command does).
    `cwd`/`environ`: another process's (default: this one's)."""
    env = sorted((k, v) for k, v in (os.environ if environ is None else environ).items()
                 if (k.startswith("DEPLOYER_") and k != "DEPLOYER_PERSIST") or k in ("SSH_AUTH_SOCK", "HOME"))
    ident = repr((os.getuid(), sys.executable, _source_stamp(), str(cwd or os.getcwd()), env))
    return cache_dir() / "controller" / f"{hashlib.sha256(ident.encode()).hexdigest()[:20]}.sock"


# ---------------------------------------------------------------- framing

def _send(sock: socket.socket, obj: Any, lock: threading.Lock | None = None) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if lock is None:
        sock.sendall(_LEN.pack(len(data)) + data)
        return
    with lock:
        sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> Any:
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    body = _recv_exact(sock, _LEN.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _error_state(err: BaseException) -> tuple:
    """An exception as plain data (DeployerError subclasses take keyword-only arguments, so they
    do not always survive pickle): class name, message, hint, exit code."""
    if isinstance(err, DeployerError):
        return (type(err).__name__, err.message, err.hint, err.exit_code)
    return ("DeployerError", f"fleet controller: {type(err).__name__}: {err}", None, 4)


def _rebuild(state: tuple) -> DeployerError:
    from deployer import errors

    name, message, hint, code = state
    cls = getattr(errors, name, DeployerError)
    if not (isinstance(cls, type) and issubclass(cls, DeployerError)):
        cls = DeployerError
    err = cls(message, hint=hint)
    err.exit_code = code
    return err


# ---------------------------------------------------------------- client

def interrupted(err: BaseException, result: Any) -> BaseException:
    """Ctrl-C (or SIGTERM) mid-command, run here or in the controller (see _remote): `err` carries
    what the command would have returned (boards already started finish first), so the CLI can show
    where every board ended before it exits 130; the exception itself goes on (a Terminated keeps
    its exit code)."""
    err.fleet_result = result  # type: ignore[attr-defined]
    return err


def interrupted_result(err: BaseException) -> Any:
    """What `interrupted` attached to `err`, or None."""
    return getattr(err, "fleet_result", None)


def call(name: str, *args: Any, persist: float, on_event: EventFn | None = None, **kwargs: Any) -> Any:
    """deployer.fleet.service.<name>(*args, **kwargs) through the controller (started if needed);
    in this process when persist <= 0 or the controller cannot be used."""
    if persist > 0:
        sock = _client(persist)
        if sock is not None:
            return _remote(sock, name, args, kwargs, persist, on_event)
    from deployer.fleet import service   # only here: a client of the controller needs no SSH code

    if on_event is not None:
        kwargs["on_event"] = on_event
    return getattr(service, name)(*args, **kwargs)


def _client(persist: float) -> socket.socket | None:
    path = socket_path()
    sock = _connect(path)
    if sock is not None:
        return sock
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.chmod(0o700)
        log = open(path.with_suffix(".log"), "ab")
    except OSError:
        return None
    with log:
        subprocess.Popen([sys.executable, "-m", "deployer.fleet.controller", "--socket", str(path),
                          "--persist", str(persist)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True)
    end = time.monotonic() + START_WAIT
    while time.monotonic() < end:
        time.sleep(0.02)
        sock = _connect(path)
        if sock is not None:
            return sock
    return None


def _connect(path: Path) -> socket.socket | None:
    if len(str(path)) >= 100:      # sun_path is 108 bytes: a long DEPLOYER_CACHE runs in-process
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _remote(sock: socket.socket, name: str, args: tuple, kwargs: dict, persist: float,
            on_event: EventFn | None) -> Any:
    with sock:
        _send(sock, {"op": "call", "name": name, "args": args, "kwargs": kwargs, "persist": persist,
                     "events": on_event is not None})
        try:
            return _answer(sock, on_event)
        except KeyboardInterrupt as err:
            # EOF tells the controller to start no further board. The ones it is running read the
            # release's temporary folder, which this process removes as it unwinds (interrupted
            # deploys failed those boards with FileNotFoundError): wait for the answer first, as
            # an in-process command does (deployer.fleet.fanout). A second Ctrl-C stops waiting.
            # The answer says where every board ended: it rides on the interrupt for the CLI to show.
            sys.stderr.write("interrupted: letting the boards already started finish (Ctrl-C again to stop waiting)\n")
            sys.stderr.flush()
            try:
                sock.shutdown(socket.SHUT_WR)
                interrupted(err, _answer(sock, None))
            except Exception:  # noqa: BLE001 - only waiting (the frame may be cut): the interrupt goes on
                pass
            raise


def _answer(sock: socket.socket, on_event: EventFn | None) -> Any:
    """The controller's events (to `on_event`) up to its result (returned) or error (raised)."""
    while True:
        msg = _recv(sock)
        if msg is None:
            raise DeployerError("the fleet controller process ended in the middle of the command",
                                hint=f"see {socket_path().with_suffix('.log')}; re-run (with --persist 0 "
                                     "to run it without the controller)")
        kind, body = msg
        if kind == "event":
            if on_event is not None:
                on_event(body)
        elif kind == "result":
            return body
        elif kind == "error":
            raise _rebuild(body)


def stop(path: Path | None = None) -> bool:
    """Ask the controller (of this process's settings, or at `path`) to close its connections and exit."""
    sock = _connect(path or socket_path())
    if sock is None:
        return False
    with sock:
        _send(sock, {"op": "stop"})
        return _recv(sock) is not None


# ---------------------------------------------------------------- server

class _Server:
    def __init__(self, path: Path, persist: float) -> None:
        from deployer.ssh.pool import ConnectionPool, activate

        self.path = path
        self.persist = persist
        self.pool = ConnectionPool(persist)
        activate(self.pool)
        self.busy = 0
        self.last = time.monotonic()
        self.stopping = False
        self.ino = 0
        self.lock = threading.Lock()

    def serve(self) -> None:
        import select

        import fcntl

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        # two commands may start a controller at the same moment: check, clean up and bind under
        # one lock, so neither removes the socket of the other's live controller
        with open(self.path.parent / ".start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.path.exists() and _connect(self.path) is None:
                    self.path.unlink()       # a controller that died without cleaning up
                listener.bind(str(self.path))
                listener.listen(64)
            except OSError:
                listener.close()
                return                        # another controller won the race: it serves
            finally:
                os.umask(old)
        self.ino = self.path.stat().st_ino
        try:
            while not self.stopping:
                ready, _, _ = select.select([listener], [], [], 1.0)
                if ready:
                    conn, _ = listener.accept()
                    threading.Thread(target=self._handle, args=(conn,), daemon=True, name="request").start()
                    continue
                self.pool.reap()
                with self.lock:
                    idle = self.busy == 0 and time.monotonic() - self.last > self.persist
                if idle:
                    # a client that connected since select() waits in the listen queue, and closing
                    # the listener dropped its command ("the fleet controller process ended in the
                    # middle of the command"). Once the socket is unlinked no client can connect;
                    # one already queued is served first.
                    self._unlink()
                    if not select.select([listener], [], [], 0)[0]:
                        break
        finally:
            listener.close()
            self._unlink()
            self.pool.close()

    def _unlink(self) -> None:
        """Remove the socket if it is still ours (a successor may have bound the path)."""
        try:
            if self.path.stat().st_ino == self.ino:
                self.path.unlink()
        except OSError:
            pass

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.getuid():
                return
            req = _recv(conn)
            if not isinstance(req, dict):
                return
            if req.get("op") == "stop":
                self.stopping = True
                self._unlink()              # no new client finds it; running commands finish
                _send(conn, ("result", True))
                return
            if req.get("op") != "call":
                return
            with self.lock:
                self.busy += 1
                self.persist = max(self.persist, float(req.get("persist") or 0))
                self.pool.idle = self.persist
            try:
                self._call(conn, req)
            finally:
                with self.lock:
                    self.busy -= 1
                    self.last = time.monotonic()

    def _call(self, conn: socket.socket, req: dict) -> None:
        from deployer.fleet import fanout, service

        send_lock = threading.Lock()
        gone = threading.Event()

        def watch_client() -> None:      # EOF from the client: it was interrupted
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass
            gone.set()

        threading.Thread(target=watch_client, daemon=True, name="client-watch").start()

        def forward(event: dict[str, Any]) -> None:
            if not gone.is_set():
                try:
                    _send(conn, ("event", event), send_lock)
                except OSError:
                    gone.set()

        kwargs = dict(req["kwargs"])
        if req.get("events"):
            kwargs["on_event"] = forward
        token = fanout.CANCEL.set(gone)
        try:
            reply = ("result", getattr(service, req["name"])(*req["args"], **kwargs))
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the CLI as one line
            reply = ("error", _error_state(err))
        finally:
            fanout.CANCEL.reset(token)
        try:
            _send(conn, reply, send_lock)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="deployer's persistent fleet controller (started by fleet commands)")
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--persist", type=float, default=60.0)
    a = ap.parse_args(argv)
    _exit_cleanly_on_signals()
    try:
        _Server(a.socket, a.persist).serve()
    except SystemExit:
        pass
    log = a.socket.with_suffix(".log")
    try:
        if log.stat().st_size == 0:        # nothing went wrong: leave no empty log behind
            log.unlink()
    except OSError:
        pass


def _exit_cleanly_on_signals() -> None:
    """SIGTERM/SIGHUP (a shutdown, `kill`) end the controller through serve()'s cleanup: they used to
    kill it on the spot, leaving its socket and log in the deployer cache."""
    import signal

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


if __name__ == "__main__":
    main()
