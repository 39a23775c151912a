"""paramiko connections to boards: hop chains, strict host keys, keys/agent, retries, exec, streaming.

Why not SSHClient: it cannot do ProxyJump, reads no ssh_config, and its host-key policies are
all-or-nothing. We drive paramiko.Transport directly so every hop of a ProxyJump chain gets its
own strict host-key check (hostkeys.py) and the window sizes suit bulk transfers.

A link that dies without a word (a pulled cable, a frozen board) is noticed by a per-connection
watchdog within the board's `stall_timeout`: TCP alone would take ~15 minutes (see Watchdog).

Flaky links (WiFi boards, fleets) make transient failures normal, so connecting retries with
exponential backoff on refused/timed-out connects and "Error reading SSH protocol banner" — but
never on authentication or host-key failures, which retrying cannot fix.

Every remote command is run as argv: each word is shlex-quoted, then wrapped in a tiny `sh`
prologue that reports its pid/process group on stderr so a stream can be killed on the board
(Ctrl-C, close, timeout) instead of being left running.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Iterator

import logging

import paramiko

from deployer.errors import DeployerError, RemoteError
from deployer.remote import board as board_scripts
from deployer.ssh import hostkeys
from deployer.ssh.config import Hop, load_ssh_config, plan_hops
from deployer.targets import Board, Inventory

WINDOW_SIZE = 16 * 1024 * 1024       # our receive window per channel (downloads, streams, jump tunnels)
MAX_PACKET = 32 * 1024
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
KEEPALIVE = 15                       # s, paramiko's own keepalive on jump hops (the board hop has a watchdog)
DEFAULT_KEEPALIVE = 5.0              # s of silence before we ask the board for a reply (targets `keepalive`)
DEFAULT_STALL = 30.0                 # s without any answer before the link counts as dead (`stall_timeout`)
# Logins in flight through one jump host at once. OpenSSH's sshd starts refusing unauthenticated
# connections beyond MaxStartups (default 10:30:100), so 50 boards behind one bastion opened at once
# would fail at random; above this many, boards wait for their turn instead.
JUMP_STARTUPS = 8
_jump_gates: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_jump_lock = threading.Lock()
_PID_MARK = "__deployer_pid__"
# paramiko logs failures of its transport thread (with tracebacks) through `logging`; without a
# handler Python prints them on stderr. Our errors say the same thing in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
# the process group from /proc/$$/stat's 5th field by the shell's own `read` (the command is "sh":
# no space in field 2): no `cut` process per remote command, which a small board (and qemu) feels
_WRAP = f'g=; read -r _ _ _ _ g _ < /proc/$$/stat 2>/dev/null; echo "{_PID_MARK} $$ $g" >&2; exec "$@"'


class ClosedWithoutStatus(RemoteError):
    """The board's sshd closed a command's channel without an exit status or signal. What the command
    printed up to then arrived intact; whether it finished is for its own protocol to say (a reader
    may attach what it had read as `lines`, `stderr`). The two cases seen in CI under load (a
    rollout's health check, a jump-host test) fit a race in _Proc.read, since fixed: the status was
    read before the close it precedes. Kept for an sshd that really closes without one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lines: list[Any] = []
        self.stderr = ""


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


PROXY_COMMAND_HINT = ("~/.ssh/config gives it a ProxyCommand, which deployer does not run: reach it with "
                      "ProxyJump there or jump: in the targets file")


def _resolve_hint(hop: Hop) -> str:
    if hop.proxy_command:
        return PROXY_COMMAND_HINT
    if hop.include:     # paramiko's SSHConfig has no Include: a Host entry in the included file is unseen
        return (f"deployer does not read ~/.ssh/config's 'Include {hop.include}': if the host is defined there, "
                "copy its Host entry into ~/.ssh/config or set host:/user:/port: in the targets file")
    return "check host: in the targets file or HostName in ~/.ssh/config"


def quote_argv(argv: list[str]) -> str:
    """argv -> one command line for the remote shell; every word quoted."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(a)) for a in argv)


def safe_remote_path(base: str, *names: str) -> str:
    """Join user-provided names under `base`, refusing '..', absolute names and control chars."""
    for n in (base, *names):
        if "\0" in n or "\n" in n:
            raise DeployerError(f"remote path {n!r} contains a NUL or newline")
    for n in names:
        p = PurePosixPath(n)
        if p.is_absolute() or ".." in p.parts:
            raise DeployerError(f"remote name '{n}' escapes its folder (absolute or '..')",
                                hint="use a plain relative name")
    if ".." in PurePosixPath(base).parts:
        raise DeployerError(f"remote path '{base}' contains '..'")
    return str(PurePosixPath(base, *names))


def connect(
    board: Board,
    *,
    accept_new: bool = False,
    inventory: Inventory | None = None,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> "Connection":
    """Open an authenticated connection to `board` (through its jump chain). Context manager.

    `inventory` is accepted for API symmetry; jump boards are already resolved by load_targets.
    `on_retry(attempt, delay, reason)` is called before each backoff sleep (for CLI messages).
    """
    del inventory
    hops = plan_hops(board, load_ssh_config())
    attempts = board.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            with _jump_gate(hops):
                transports = _open_chain(hops, accept_new)
            return Connection(board, hops, transports)
        except _Transient as e:
            if attempt == attempts:
                raise RemoteError(f"{board.where}: {e} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})",
                                  hint=PROXY_COMMAND_HINT if any(h.proxy_command for h in hops) else
                                  "check the board is powered, on the network and running sshd") from None
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
            if on_retry:
                on_retry(attempt, delay, str(e))
            time.sleep(delay)
    raise AssertionError("unreachable")


def _jump_gate(hops: list[Hop]):
    """At most JUMP_STARTUPS logins at once through the same first jump host (no limit when direct)."""
    if len(hops) < 2:
        return contextlib.nullcontext()
    key = (hops[0].hostname, hops[0].port)
    with _jump_lock:
        gate = _jump_gates.setdefault(key, threading.BoundedSemaphore(JUMP_STARTUPS))
    return gate


class _Transient(Exception):
    """A connect failure worth retrying."""


_paramiko_request = paramiko.Channel._handle_request


def _note_exit_signal(chan: paramiko.Channel, m: "paramiko.Message") -> None:
    """paramiko drops the "exit-signal" request: keep its signal name on the channel
    (`chan.exit_signal`) so a command killed on the board can say by what, then let paramiko go on."""
    start = m.packet.tell()
    try:
        if m.get_text() == "exit-signal":
            m.get_boolean()
            chan.exit_signal = m.get_text()
    except Exception:  # a malformed request is paramiko's to judge
        pass
    m.packet.seek(start)
    _paramiko_request(chan, m)


paramiko.Channel._handle_request = _note_exit_signal


def _ciphers(offered: tuple[str, ...]) -> tuple[str, ...]:
    """AES-GCM first: one pass for encryption and integrity instead of AES-CTR plus a separate
    HMAC-SHA2 pass, which is most of an upload's CPU on a small board's sshd (and under qemu)."""
    first = tuple(c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in offered)
    return first + tuple(c for c in offered if c not in first)


def _open_chain(hops: list[Hop], accept_new: bool) -> list[paramiko.Transport]:
    transports: list[paramiko.Transport] = []
    try:
        for i, hop in enumerate(hops):
            via = f" via {hops[i - 1].label}" if i else ""
            sock = _open_socket(hop, transports[-1] if transports else None, via)
            t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET)
            transports.append(t)
            t.banner_timeout = t.handshake_timeout = t.auth_timeout = hop.timeout
            opts = t.get_security_options()
            opts.ciphers = _ciphers(tuple(opts.ciphers))
            opts.key_types = hostkeys.preferred_key_types(
                hop.known_hosts, hostkeys.host_token(hop.known_hosts_name, hop.port), tuple(opts.key_types))
            try:
                t.start_client(timeout=hop.timeout)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise _Transient(f"SSH handshake with {hop.who} ({hop.address}){via} failed: {_why(e)}") from None
            if not (t.is_active() and t.initial_kex_done):
                # start_client returns quietly when its own timeout passes first
                raise _Transient(f"SSH handshake with {hop.who} ({hop.address}){via} failed: no answer within "
                                 f"{hop.timeout:g} s (timeout)")
            key = t.get_remote_server_key()
            hostkeys.check_host_key(
                hop.known_hosts, hop.known_hosts_name, hop.port, key.get_name(), key.asbytes(),
                board=hop.board, via=None if i == len(hops) - 1 else hop.label,
                accept_new=accept_new,
            )
            _authenticate(t, hop)
            t.set_keepalive(KEEPALIVE)
            # paramiko's reader thread polls its socket every 0.1 s to notice a local close; once per
            # second is enough (close() does not wait for it), and hundreds of connections - a fleet
            # command, the fleet controller's pool - then stop waking the interpreter 10x a second each
            t.sock.settimeout(1.0)
    except BaseException:
        for t in reversed(transports):
            t.close()
        raise
    return transports


def _open_socket(hop: Hop, outer: paramiko.Transport | None, via: str):
    if outer is None:
        try:
            sock = socket.create_connection((hop.hostname, hop.port), timeout=hop.timeout)
        except (socket.gaierror, UnicodeError) as e:
            # UnicodeError: the idna codec refuses a name before any lookup (a label over 63
            # characters, an empty label): one line like an unknown name, not an internal error
            why = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
            raise DeployerError(f"{hop.who}: cannot resolve host '{hop.hostname}': {why}",
                                hint=_resolve_hint(hop)) from None
        except (ConnectionRefusedError, socket.timeout, TimeoutError, OSError) as e:
            raise _Transient(f"cannot connect to {hop.who} at {hop.hostname}:{hop.port}: {_why(e)}") from None
        sock.settimeout(None)
        return sock
    try:
        return outer.open_channel("direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=hop.timeout)
    except (paramiko.ChannelException, paramiko.SSHException, EOFError, OSError) as e:
        raise _Transient(f"cannot reach {hop.who} at {hop.hostname}:{hop.port}{via}: {_why(e)}") from None


def _authenticate(t: paramiko.Transport, hop: Hop) -> None:
    tried: list[str] = []
    for path in hop.keys:
        if os.path.exists(path):      # a FIFO or device as key: would hang or read forever in paramiko
            from deployer.fsutil import check_input

            check_input(path, "key file", limit=1 << 20)
        try:
            key = paramiko.PKey.from_path(str(path))
        except FileNotFoundError:
            if hop.explicit_keys:
                raise DeployerError(f"{hop.who}: key file {path} not found", hint="fix key: in the targets file") from None
            continue
        except (paramiko.PasswordRequiredException, TypeError) as e:
            # PKey.from_path lets cryptography's TypeError ("Key is password-protected, but password
            # was not provided") through for every encrypted key: a passphrase-protected
            # ~/.ssh/id_ed25519 used from ssh-agent was an internal error (exit 4)
            if isinstance(e, TypeError) and "password" not in str(e).lower():
                raise DeployerError(f"{hop.who}: cannot load key {path}: {e}") from None
            if hop.explicit_keys:
                raise DeployerError(f"{hop.who}: key {path} is passphrase-protected",
                                    hint=f"load it into ssh-agent (ssh-add {path}); deployer never asks for passphrases") from None
            continue
        except (paramiko.SSHException, OSError, ValueError) as e:
            raise DeployerError(f"{hop.who}: cannot load key {path}: {e}") from None
        tried.append(str(path))
        if _try_key(t, hop, key):
            return
    agent = paramiko.Agent()
    try:
        for key in agent.get_keys():
            tried.append(f"agent:{key.get_name()}")
            if _try_key(t, hop, key):
                return
    finally:
        agent.close()
    raise DeployerError(
        f"{hop.who}: authentication failed for {hop.address} (tried {', '.join(tried) or 'no keys'})",
        hint="set key: in the targets file, add the key to ssh-agent, or install the public key in the board's authorized_keys",
    )


def _try_key(t: paramiko.Transport, hop: Hop, key: paramiko.PKey) -> bool:
    try:
        t.auth_publickey(hop.user, key)
    except paramiko.BadAuthenticationType as e:
        raise DeployerError(f"{hop.who}: {hop.address} does not accept public keys (allows {', '.join(e.allowed_types)})") from None
    except paramiko.AuthenticationException:
        return False
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise RemoteError(f"{hop.who}: connection dropped during authentication: {_why(e)}") from None
    return t.is_authenticated()


def _why(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


class Watchdog(threading.Thread):
    """Declares a connection dead when the board has answered nothing for `stall_timeout` seconds.

    Why: TCP alone takes ~15 minutes (tcp_retries2) to give up on a link that vanished, and never
    gives up on a board whose kernel still acks but whose sshd is frozen; a push used to hang that
    long. Every packet from the board counts as a sign of life (SFTP acks, output, replies); when
    the link has been quiet for `keepalive` seconds we ask for a reply (keepalive@openssh.com,
    want-reply), and when nothing at all arrived for `stall_timeout` seconds we close the
    transport. Every blocked read, write and SFTP call on it then fails at once, and
    Connection.dropped() says why. The check runs on its own thread, so a send blocked in a full
    socket buffer cannot hold it up."""

    def __init__(self, transport: paramiko.Transport, keepalive: float, stall_timeout: float, label: str) -> None:
        super().__init__(daemon=True, name=f"ssh-watchdog-{label}")
        self.transport = transport
        self.keepalive = max(0.2, float(keepalive))
        self.stall_timeout = max(self.keepalive, float(stall_timeout))
        self.last_rx = time.monotonic()
        self.reason: str | None = None
        self._stop = threading.Event()
        self._pinging = threading.Event()
        pk = transport.packetizer
        read = pk.read_message

        def read_message():  # every packet from the board, whatever it is, is a sign of life
            out = read()
            self.last_rx = time.monotonic()
            return out

        pk.read_message = read_message

    def run(self) -> None:
        tick = min(1.0, self.keepalive / 2)
        while not self._stop.wait(tick):
            if not self.transport.is_active():
                return
            idle = time.monotonic() - self.last_rx
            if idle > self.stall_timeout:
                self.reason = (f"no answer from the board for {idle:.0f} s (stall_timeout {self.stall_timeout:g} s, "
                               f"keepalive every {self.keepalive:g} s)")
                self.transport.close()
                return
            if idle >= self.keepalive and not self._pinging.is_set():
                self._pinging.set()
                threading.Thread(target=self._ping, daemon=True, name=self.name + "-ping").start()

    def _ping(self) -> None:
        from paramiko.common import cMSG_GLOBAL_REQUEST
        from paramiko.message import Message

        try:
            m = Message()
            m.add_byte(cMSG_GLOBAL_REQUEST)
            m.add_string("keepalive@openssh.com")
            m.add_boolean(True)               # ask for a reply: OpenSSH answers "request failure"
            self.transport._send_user_message(m)
        except Exception:  # a dead transport: run() notices
            pass
        finally:
            self._pinging.clear()

    def stop(self) -> None:
        self._stop.set()


class Connection:
    """An authenticated session with one board. Thread-compatible, not thread-safe."""

    def __init__(self, board: Board, hops: list[Hop], transports: list[paramiko.Transport]) -> None:
        self.board = board
        self.hops = hops
        self._transports = transports
        self.transport = transports[-1]
        self._sftp: paramiko.SFTPClient | None = None
        self.keepalive = float(getattr(board, "keepalive", DEFAULT_KEEPALIVE) or DEFAULT_KEEPALIVE)
        self.stall_timeout = float(getattr(board, "stall_timeout", DEFAULT_STALL) or DEFAULT_STALL)
        self.watchdog = Watchdog(self.transport, self.keepalive, self.stall_timeout, board.name)
        self.watchdog.start()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.board.name

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(
                    self.transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise self.dropped(f"opening SFTP: {_why(e)}") from None
            if self._sftp is None:
                raise RemoteError(f"{self.board.where}: the board's sshd has no SFTP subsystem")
        return self._sftp

    def lost(self, wait: float = 1.0) -> bool:
        """True if the connection is gone; waits briefly because paramiko notices a dead socket
        on its own thread, a moment after a channel read fails."""
        end = time.monotonic() + wait
        while self.transport.is_active():
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    def remote_path(self, *names: str) -> str:
        """A path under the board's runtime_dir built from user-provided names ('..' refused)."""
        return safe_remote_path(self.board.runtime_dir, *names)

    def dropped(self, doing: str) -> RemoteError:
        why = f" ({self.watchdog.reason})" if self.watchdog.reason else ""
        return RemoteError(f"{self.board.where}: connection lost while {doing}{why}",
                           hint="check the board's network/power, then re-run (transfers resume)")

    def close(self) -> None:
        self.watchdog.stop()
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None
        for t in reversed(self._transports):
            t.close()

    # --- exec ------------------------------------------------------------------------------

    def _open(self, argv: list[str], timeout: float | None) -> paramiko.Channel:
        cmd = "sh -c " + shlex.quote(_WRAP) + " sh " + quote_argv(argv)
        try:
            chan = self.transport.open_session(timeout=timeout)
            chan.exec_command(cmd)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise self.dropped(f"starting `{_short(argv)}`: {_why(e)}") from None
        return chan

    def run(self, argv: list[str], *, timeout: float | None = None, stdin: bytes | str | None = None,
            check: bool = False) -> Result:
        """Run argv on the board, wait, return its output. `check` raises RemoteError on rc != 0."""
        proc = _Proc(self, argv, self._open(argv, timeout))
        if stdin is not None:
            proc.send_stdin(stdin.encode() if isinstance(stdin, str) else stdin)
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: list[bytes] = []
        try:
            for data in proc.read(deadline):
                chunks.append(data)
        except BaseException:
            proc.kill()
            raise
        res = Result(proc.rc, b"".join(chunks).decode(errors="replace"), proc.stderr)
        if check and res.rc != 0:
            raise proc.failed()
        return res

    def stream(self, argv: list[str], *, timeout: float | None = None, idle_timeout: float | None = None,
               check: bool = True) -> "RemoteStream":
        """Start argv; iterate the returned stream for stdout lines as they arrive."""
        return RemoteStream(_Proc(self, argv, self._open(argv, timeout)), timeout, idle_timeout, check)

    def kill(self, pgid: int, grace: float = 2.0, pid: int | None = None) -> None:
        """TERM a remote process group, KILL it if still alive after `grace` seconds.

        `pid` is the fallback when the group cannot be signalled (no /proc or cut on the board)."""
        pid = pid or pgid
        tries = max(1, int(grace / 0.2))
        try:
            chan = self.transport.open_session(timeout=10)
            chan.exec_command(quote_argv(["sh", "-c", board_scripts.script("kill.sh"), "sh",
                                          str(int(pgid)), str(int(pid)), str(tries)]))
            chan.settimeout(grace + 10)
            chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, EOFError, OSError):
            pass  # connection already gone: sshd's teardown and SIGPIPE finish the job


def _quiet_close(chan: paramiko.Channel) -> None:
    """Closing a channel on a dead transport raises; the channel is gone either way."""
    try:
        chan.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def _short(argv: list[str], n: int = 60) -> str:
    s = " ".join(str(a) for a in argv)
    return s if len(s) <= n else s[: n - 3] + "..."


class _Proc:
    """One exec channel: pumps stdout/stderr, learns the remote pid, can kill the process group."""

    STDERR_KEEP = 64 * 1024

    def __init__(self, conn: Connection, argv: list[str], chan: paramiko.Channel) -> None:
        self.conn, self.argv, self.chan = conn, argv, chan
        self.pgid: int | None = None
        self.pid: int | None = None
        self._err = b""
        self._pid_seen = False
        self.rc: int | None = None
        self.deadline: float | None = None

    @property
    def stderr(self) -> str:
        return self._err.decode(errors="replace")

    def send_stdin(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self.conn.dropped(f"sending input to `{_short(self.argv)}`: {_why(e)}") from None

    def _take_stderr(self, data: bytes) -> None:
        if not self._pid_seen:
            self._err += data
            head, nl, rest = self._err.partition(b"\n")
            if not nl:
                return
            self._pid_seen = True
            parts = head.decode(errors="replace").split()
            if len(parts) >= 2 and parts[0] == _PID_MARK:
                pgid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
                self.pid = int(parts[1])
                self.pgid = pgid if pgid > 0 else self.pid   # never "kill -0": that is our own group
                self._err = rest
            return
        self._err = (self._err + data)[-self.STDERR_KEEP:]

    def read(self, deadline: float | None, idle_timeout: float | None = None) -> Iterator[bytes]:
        """Yield stdout chunks as they arrive until the command exits."""
        chan = self.chan
        last = time.monotonic()
        self.deadline = deadline
        while True:
            got = False
            if chan.recv_stderr_ready():
                self._take_stderr(chan.recv_stderr(65536))
                got = True
            if chan.recv_ready():
                data = chan.recv(65536)
                if data:
                    last = time.monotonic()
                    yield data
                    continue
            if got:
                continue
            # Observe in the order the messages arrive (data, then EOF / exit-status, then close):
            # paramiko's transport thread can deliver all of them between two reads, so a status
            # read *before* seeing the close may be stale (that race was the "ended without an exit
            # status" seen under load), and buffers checked before EOF may still be filling.
            closed = chan.closed or not self.conn.transport.is_active()
            eof = chan.eof_received
            # a real exit status arrived (paramiko also sets the event on close, leaving exit_status -1)
            exited = chan.status_event.is_set() and chan.exit_status != -1
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if exited and drained and eof:
                break
            if closed:
                if not drained:
                    continue                  # what arrived before the close is read first
                # Closed without EOF: sshd sends exit-status before it has flushed all output, so a
                # link that dies now has lost some of it - that is a dropped connection, not an exit.
                if exited and not self.conn.lost(0.2):
                    break
                if self.conn.lost():
                    raise self.conn.dropped(f"running `{_short(self.argv)}`")
                sig = getattr(chan, "exit_signal", None)
                if sig:
                    raise RemoteError(f"{self.conn.board.where}: `{_short(self.argv)}` was killed by SIG{sig} on the board")
                raise ClosedWithoutStatus(f"{self.conn.board.where}: `{_short(self.argv)}` ended without an exit "
                                          "status (its sshd session closed the channel)")
            now = time.monotonic()
            if self.deadline is not None and now > self.deadline:
                self.kill()
                raise RemoteError(f"{self.conn.board.where}: `{_short(self.argv)}` timed out; killed it on the board")
            if idle_timeout is not None and now - last > idle_timeout:
                self.kill()
                raise RemoteError(f"{self.conn.board.where}: `{_short(self.argv)}` printed nothing for "
                                  f"{idle_timeout:.0f} s; killed it on the board")
            # the channel's pipe wakes us on output, stderr, EOF and close; the timeout only paces
            # the deadline checks (a short one cost ~1 ms of CPU per second per open channel)
            select.select([chan], [], [], 0.2)
        self.rc = chan.recv_exit_status()
        _quiet_close(chan)

    def kill(self) -> None:
        if self.rc is not None:
            return
        if self.pgid is None and self.conn.transport.is_active():
            # the pid line may still be in flight; give it a moment
            end = time.monotonic() + 2
            while self.pgid is None and time.monotonic() < end and not self.chan.closed:
                if self.chan.recv_stderr_ready():
                    self._take_stderr(self.chan.recv_stderr(65536))
                else:
                    time.sleep(0.01)
        if self.pgid is not None and self.conn.transport.is_active():
            self.conn.kill(self.pgid, pid=self.pid)
        _quiet_close(self.chan)

    def failed(self) -> RemoteError:
        tail = self.stderr.strip().splitlines()[-1:] or ["no stderr"]
        return RemoteError(f"{self.conn.board.where}: `{_short(self.argv)}` exited with {self.rc}: {tail[0]}")


class RemoteStream:
    """Iterate for stdout lines (str, no newline) as they arrive. close()/Ctrl-C kills the remote process."""

    def __init__(self, proc: _Proc, timeout: float | None, idle_timeout: float | None, check: bool) -> None:
        self._proc = proc
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._idle = idle_timeout
        self._check = check
        self._it: Iterator[str] | None = None

    @property
    def rc(self) -> int | None:
        return self._proc.rc

    @property
    def stderr(self) -> str:
        return self._proc.stderr

    @property
    def pgid(self) -> int | None:
        return self._proc.pgid

    def __enter__(self) -> "RemoteStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        if self._it is None:
            self._it = self._lines()
        return self._it

    def __next__(self) -> str:
        return next(iter(self))

    def send(self, data: bytes) -> bool:
        """Write to the remote process's stdin; False if it has already exited (nothing reads it).
        A dropped connection raises RemoteError (paramiko would call it "closed", like an exit)."""
        proc = self._proc
        chan = proc.chan
        if not (chan.closed or chan.exit_status_ready()):
            try:
                chan.sendall(data)
                return True
            except (OSError, EOFError, paramiko.SSHException):
                pass
        if not (chan.status_event.is_set() and chan.exit_status != -1) and proc.conn.lost(0.2):
            raise proc.conn.dropped(f"sending input to `{_short(proc.argv)}`")
        return False

    def set_deadline(self, seconds: float | None) -> None:
        """From now on, give the process at most `seconds` more (None: no limit); then kill it."""
        self._deadline = self._proc.deadline = None if seconds is None else time.monotonic() + seconds

    def close_stdin(self) -> bool:
        """Send EOF on the remote process's stdin (it may then exit by itself); False if the
        channel is already closed."""
        chan = self._proc.chan
        if chan.closed:
            return False
        try:
            chan.shutdown_write()
            return True
        except (OSError, EOFError, paramiko.SSHException):
            return False

    def wait(self, timeout: float | None = None) -> int | None:
        """Read the remaining output until the process exits (at most `timeout` s, then kill it);
        returns the exit code."""
        if timeout is not None:
            self._deadline = self._proc.deadline = time.monotonic() + timeout
        check, self._check = self._check, False
        try:
            for _ in self:
                pass
        finally:
            self._check = check
        return self._proc.rc

    def _lines(self) -> Iterator[str]:
        buf = b""
        try:
            for data in self._proc.read(self._deadline, self._idle):
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode(errors="replace")
            if buf:
                yield buf.rstrip(b"\r").decode(errors="replace")
        except GeneratorExit:
            # closed: by close(), which kills the process itself, or by the garbage collector, which
            # may run this at any allocation - even inside paramiko's open_channel, holding the
            # transport's lock, where kill()'s own open_channel would wait forever (it did, in CI).
            # A stream dropped without close() ends with its channel when the connection closes.
            raise
        except BaseException:
            self._proc.kill()
            raise
        if self._check and self._proc.rc != 0:
            raise self._proc.failed()

    def close(self) -> None:
        """Stop early: kill the remote process group (TERM, then KILL)."""
        self._proc.kill()
        if self._it is not None:
            self._it.close()
