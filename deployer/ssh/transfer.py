"""sha256-verified, atomic, resumable uploads to boards, skipping what is already there.

A board must never run a truncated model because a WiFi link dropped mid-push, so a file is
written to a temp name in the same remote folder, hashed *on the board*, and only then renamed
over the real name (SFTP posix-rename: atomic on the board's filesystem). Temp names are per
process (`.<name>.part-<sha16>-<host>-<pid>-<rand>`, deployer.remote.layout.temp_name), so two
pushes never write into one file; the content hash in the name lets a retry (holding the board
lock, deployer.remote.lock) find a dead process's partial file of the same content, check its
prefix hash, claim it by renaming it to its own temp name, and resume from there. Nothing else
deletes temp files except the owner (on failure) and the stale sweep under the board lock.

Before sending, the free space of each target filesystem is compared with what the upload needs
(exit 3 with "board has 5.2 MB free in ..., needs 14 MB"); a write that still fails (ENOSPC
reaches SFTP as a bare "Failure") is explained from the free space, and our temp files are
removed. A dead link is noticed by the connection's watchdog within the board's `stall_timeout`
and reported with the bytes the board acknowledged.

The on-board check runs *during* the upload: the board's python follows the growing temp file and
hashes it as bytes land, so a long transfer pays nothing extra at the end (sh + sha256sum after the
upload on boards without python). upload_many renames only after every file verified, so a model's
.param and .bin change together.

Pushes are usually repeats. Every verified upload is recorded in a per-folder manifest on the
board (deployer/ssh/manifest.py), so a re-push first compares each target's size+mtime with it over
the open SFTP channel - two round trips, no remote process, no hashing. Files the quick check cannot
vouch for (touched, new, no or corrupt manifest) are hashed on the board by one remote command for
all of them, and skipped if their sha256 matches. That quick check is rsync's trade-off: an edit on
the board that keeps the size and restores the mtime is missed; `checksum=True` hashes everything.

Writes are pipelined by hand (many outstanding SFTP write requests, acked oldest-first) because
paramiko's own pipelining drains the whole queue every ~100 requests, which idles a long link.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Sequence

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_SETSTAT, CMD_STATUS, CMD_WRITE, int64

from deployer import fsutil
from deployer.errors import DeployerError, RemoteError
from deployer.remote import board as board_scripts
from deployer.remote import layout
from deployer.ssh import manifest
from deployer.ssh.connect import Connection, safe_remote_path

ProgressFn = Callable[[str, int, int], None]     # (remote path, bytes done, total bytes)

CHUNK = 128 * 1024         # bytes per SFTP write request (OpenSSH accepts up to 256 KiB)
DEPTH = 32                 # write requests in flight (4 MiB)
_READ = 1024 * 1024

# The board-side helpers (deployer/remote/board/) run in the board's python when it has one
# (hashlib uses OpenSSL's SHA-256 instructions: ~7x faster than coreutils sha256sum there), else in
# plain sh + sha256sum.
ANSWER_TIMEOUT = 120.0     # s for the on-board check to answer once every byte is acknowledged
FREE_MARGIN = 64 * 1024    # bytes kept free on the board beyond what an upload needs


@dataclass
class TransferResult:
    local: str
    remote: str
    size: int
    sha256: str
    skipped: bool          # already on the board with the same sha256
    sent: int              # bytes actually sent this time
    resumed_from: int      # bytes reused from an interrupted earlier upload
    seconds: float
    checked_by: str = ""   # "manifest" (size+mtime quick check), "sha256" (hashed on the board), "upload"


@dataclass(eq=False)
class _Item:
    local: Path
    remote: str
    size: int
    sha256: str
    mode: int
    tmp: str = ""              # our own per-process temp name (layout.temp_name)
    part_prefix: str = ""      # what any temp upload of this content starts with (for resuming)
    remote_sha: str | None = None
    part_name: str | None = None   # a dead process's partial file of the same content (basename)
    part_size: int = 0
    part_sha: str | None = None
    free: int | None = None        # free bytes in the target's folder (board filesystem)
    device: str = ""               # st_dev of that folder: files on one filesystem share its space
    created: bool = False          # our temp file exists on the board (remove it on failure)
    resumed_from: int = 0
    sent: int = 0
    verified: bool = False
    quick: bool = False        # vouched for by the manifest quick check (not hashed this time)
    atime: int = 0             # the local file's times, given to the board's copy
    mtime: int = 0


def sha256_file(path: str | os.PathLike, limit: int | None = None) -> str:
    """sha256 of a local file to upload (or of its first `limit` bytes)."""
    return fsutil.sha256_file(path, "file to upload", limit)


def upload(conn: Connection, local: str | os.PathLike, remote: str, progress: ProgressFn | None = None,
           *, mode: int | None = None, checksum: bool = False) -> TransferResult:
    """Upload one file: skip if unchanged, else temp name + on-board sha256 check + rename."""
    return upload_many(conn, [(local, remote)], progress, mode=mode, checksum=checksum)[0]


def upload_many(conn: Connection, files: Sequence[tuple[str | os.PathLike, str]],
                progress: ProgressFn | None = None, *, mode: int | None = None,
                checksum: bool = False) -> list[TransferResult]:
    """Upload several files; unchanged ones are skipped.

    "Unchanged" is decided by the manifest quick check (size+mtime, see the module doc) and, for
    files it cannot vouch for, by one remote command hashing all of them. `checksum=True` skips the
    quick check and hashes every file on the board (like rsync --checksum)."""
    t0 = time.monotonic()
    # starting the SFTP channel is a process start on the board (~0.2 s emulated): overlap it with
    # hashing the local files (hashlib releases the GIL)
    opening = _SftpOpener(conn) if files else None
    try:
        items = [_prepare(Path(local), remote, mode) for local, remote in files]
    except BaseException:
        if opening:
            opening.join()
        raise
    if opening:
        opening.join()
        opening.reraise()
    if not items:
        return []
    seen: set[str] = set()
    for it in items:
        if it.remote in seen:
            raise DeployerError(f"{conn.board.where}: {it.remote} is the target of two uploads in one push")
        seen.add(it.remote)
    state = _look(conn, items)
    for it in items:
        it.quick = not checksum and state.unchanged(it.remote, it.size, it.sha256)
        if it.quick:
            it.remote_sha = it.sha256
    unsure = [it for it in items if not it.quick]
    if unsure:
        _query_state(conn, unsure)
    todo = [it for it in items if it.remote_sha != it.sha256]
    try:
        for it in items:
            if it in todo:
                _plan_resume(conn, it)
            elif progress:
                progress(it.remote, it.size, it.size)
        if todo:
            _check_space(conn, todo)
            _send_all(conn, todo, progress)
        unverified = [it for it in todo if not it.verified]
        if unverified:                     # the board had no python to hash while uploading
            _verify(conn, unverified)
        _place(conn, todo)
    except BaseException:
        _discard_all(conn, todo)
        raise
    _record(conn, state, [it for it in items if not it.quick])
    secs = time.monotonic() - t0
    return [
        TransferResult(str(it.local), it.remote, it.size, it.sha256, it not in todo, it.sent, it.resumed_from, secs,
                       "upload" if it in todo else "manifest" if it.quick else "sha256")
        for it in items
    ]


def remote_sha256(conn: Connection, paths: Sequence[str]) -> dict[str, str | None]:
    """sha256 of files on the board (None if missing), in one command."""
    for p in paths:
        _check_remote(p)
    # a partial-file prefix that matches nothing: only the targets themselves are hashed
    items = [_Item(Path("-"), p, 0, "", 0, part_prefix=str(PurePosixPath(p).with_name(
        f".{PurePosixPath(p).name}{layout.PART_MARK}none-"))) for p in paths]
    _query_state(conn, items)
    return {it.remote: it.remote_sha for it in items}


def download(conn: Connection, remote: str, local: str | os.PathLike, progress: ProgressFn | None = None) -> str:
    """Fetch a file atomically (temp + rename locally); returns its sha256."""
    _check_remote(remote)
    d = hashlib.sha256()
    try:
        total = conn.sftp.stat(remote).st_size or 0
        with fsutil.atomic_open(local, "wb") as out, conn.sftp.open(remote, "rb") as src:
            src.prefetch(total)
            done = 0
            while True:
                b = src.read(_READ)
                if not b:
                    break
                out.write(b)
                d.update(b)
                done += len(b)
                if progress:
                    progress(remote, done, total)
    except FileNotFoundError:
        raise DeployerError(f"{conn.board.where}: remote file {remote} does not exist") from None
    except (OSError, EOFError, paramiko.SSHException) as e:
        if conn.lost():
            raise conn.dropped(f"downloading {remote}") from None
        raise RemoteError(f"{conn.board.where}: cannot download {remote}: {e}") from None
    return d.hexdigest()


# --- steps -----------------------------------------------------------------------------------

def _check_remote(remote: str) -> None:
    if not remote or remote.endswith("/"):
        raise DeployerError(f"remote path '{remote}' must name a file")
    safe_remote_path(remote)


def _prepare(local: Path, remote: str, mode: int | None) -> _Item:
    _check_remote(remote)
    if PurePosixPath(remote).name.startswith(manifest.MANIFEST_NAME):
        raise DeployerError(f"remote name '{remote}' is reserved for deployer's upload manifest",
                            hint="pick another file name")
    try:
        st = local.stat()
    except FileNotFoundError:
        raise DeployerError(f"local file {local} not found") from None
    if not local.is_file():
        raise DeployerError(f"{local} is not a regular file")
    try:
        digest = sha256_file(local)
    except OSError as e:
        raise DeployerError(f"cannot read {local}: {e.strerror}") from None
    p = PurePosixPath(remote)
    return _Item(local, remote, st.st_size, digest, mode if mode is not None else st.st_mode & 0o777,
                 tmp=layout.temp_name(remote, digest), part_prefix=str(p.with_name(layout.part_prefix(p.name, digest))),
                 atime=int(st.st_atime), mtime=int(st.st_mtime))


class _SftpOpener(threading.Thread):
    def __init__(self, conn: Connection) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.conn.sftp
        except BaseException as e:  # handed to the caller by join()
            self.error = e

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def _look(conn: Connection, items: list[_Item]) -> manifest.BoardState:
    try:
        return manifest.look(conn.sftp, [it.remote for it in items])
    except (OSError, EOFError, paramiko.SSHException):
        if conn.lost():
            raise conn.dropped(f"checking {items[0].remote} on the board") from None
        raise


def _record(conn: Connection, state: manifest.BoardState, verified: list[_Item]) -> None:
    """Remember the files just verified on the board (uploaded or hashed) for the next quick check."""
    try:
        manifest.record(conn.sftp, state, [(it.remote, it.size, it.sha256) for it in verified])
    except (OSError, EOFError, paramiko.SSHException):
        if conn.lost():
            raise conn.dropped(f"recording {verified[0].remote} in the upload manifest "
                               "(the files themselves are in place and verified)") from None
        # best effort: the files are in place and verified; the next push just hashes them again


def _board_python_or_sh(conn: Connection, py: str, sh: str, args: list[str], doing: str) -> list[str]:
    """Run board script `sh` (deployer/remote/board/) which execs `py` in the board's python when
    there is one; every argument quoted, paths made safe from option parsing."""
    res = conn.run(["sh", "-c", board_scripts.script(sh), "sh", board_scripts.script(py), conn.board.python, *args],
                   timeout=ANSWER_TIMEOUT + 10 * len(args))
    bad = next((ln for ln in res.stdout.splitlines() if ln.startswith("error ")), None)
    if res.rc != 0 or bad:
        tail = bad[6:] if bad else (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"{conn.board.where}: {doing} failed (rc {res.rc}): {tail}")
    return res.stdout.splitlines()


def _query_state(conn: Connection, items: list[_Item]) -> None:
    args = [a for it in items for a in (layout.arg(it.remote), layout.arg(it.part_prefix))]
    lines = _board_python_or_sh(conn, "state.py", "state.sh", args, "checking remote files")
    if len(lines) != len(items):
        raise RemoteError(f"{conn.board.where}: unexpected answer while checking remote files: {lines[:3]}")
    for it, line in zip(items, lines):
        a, name, size, sha, free, dev = (line.split("\t") + ["-"] * 6)[:6]
        it.remote_sha = a if a != "-" else None
        it.part_name = name if name != "-" else None
        it.part_size = int(size) if size.isdigit() else 0
        it.part_sha = sha if sha != "-" else None
        it.free = int(free) if free.isdigit() else None
        it.device = dev


def _plan_resume(conn: Connection, it: _Item) -> None:
    """Resume from a dead process's partial upload of the same content: check its prefix against
    the local file, then claim it by renaming it to our own temp name (atomic: if another process
    claimed it first, we start from zero)."""
    if not (it.part_name and 0 < it.part_size <= it.size and it.part_sha):
        return
    if sha256_file(it.local, it.part_size) != it.part_sha:
        return
    src = str(PurePosixPath(it.remote).with_name(it.part_name))
    try:
        conn.sftp.posix_rename(src, it.tmp)
    except (OSError, EOFError, paramiko.SSHException):
        if conn.lost():
            raise conn.dropped(f"resuming {it.remote}") from None
        return
    it.created = True
    it.resumed_from = it.part_size


def _check_space(conn: Connection, items: list[_Item]) -> None:
    """Refuse before sending when a board filesystem cannot hold what is about to be written."""
    need: dict[str, int] = {}
    free: dict[str, tuple[int, str]] = {}
    for it in items:
        if it.free is None:
            continue
        key = it.device or str(PurePosixPath(it.remote).parent)
        need[key] = need.get(key, 0) + it.size - it.resumed_from
        free[key] = (it.free, str(PurePosixPath(it.remote).parent))
    for key, n in need.items():
        have, folder = free[key]
        if n + FREE_MARGIN > have:
            raise RemoteError(f"{conn.board.where}: board has {_mb(have)} free in {folder}, needs {_mb(n)}",
                              hint="free space on the board or point runtime_dir at a bigger filesystem")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _send_all(conn: Connection, items: list[_Item], progress: ProgressFn | None) -> None:
    """Upload every item to its temp name; the board hashes each one while it arrives."""
    follower: list = []
    # starting a remote process costs a round trip plus a fork and a python start-up (seconds on
    # an emulated board): do it on a thread while the SFTP session opens and the writes flow
    starter = threading.Thread(target=_start_follower, args=(conn, items, follower), daemon=True)
    starter.start()
    it = items[0]
    try:
        for k, it in enumerate(items):
            _send_one(conn, it, k, starter, follower, progress)
        starter.join()
        stream = _follower(conn, follower)
        stream.set_deadline(ANSWER_TIMEOUT)    # every byte is acknowledged: the answers are due
        lines = iter(stream)
        answers = [next(lines, "no answer") for _ in items]
        if answers[0] != "nopython":
            for _ in lines:          # let it exit by itself: killing costs another remote process
                pass
    except FileNotFoundError as e:
        _stop_follower(starter, follower)
        raise RemoteError(f"{conn.board.where}: cannot create {it.tmp}: {e}") from None
    except PermissionError:
        _stop_follower(starter, follower)
        raise DeployerError(f"{conn.board.where}: permission denied writing {it.tmp}",
                            hint="pick a runtime_dir the login user can write") from None
    except (OSError, EOFError, paramiko.SSHException, RemoteError) as e:
        _stop_follower(starter, follower)
        done = it.resumed_from + it.sent
        if conn.lost():
            raise conn.dropped(
                f"uploading {it.remote} ({_acked(done, it.size)} acknowledged by the board; re-run to resume)"
            ) from None
        if isinstance(e, RemoteError):
            raise
        raise _write_failed(conn, it, done, e) from None
    except BaseException:
        _stop_follower(starter, follower)
        raise
    if answers[0] == "nopython":
        return                       # _verify checks them afterwards with sh + sha256sum
    for it, answer in zip(items, answers):
        if answer == "ok":
            it.verified = True
        else:
            raise _mismatch(conn, it, answer)


def _acked(done: int, total: int) -> str:
    return f"{done} of {total} bytes" if total < 100_000 else f"{done} of {total} bytes ({_mb(done)} of {_mb(total)})"


def _write_failed(conn: Connection, it: _Item, done: int, e: BaseException) -> RemoteError:
    """A write refused by the board: say why (full disk? SFTP only says "Failure"), then remove
    our partial file so the disk is not left full."""
    folder = str(PurePosixPath(it.remote).parent)
    free = None
    try:
        res = conn.run(["sh", "-c", board_scripts.script("free.sh"), "sh", layout.arg(folder)], timeout=30)
        free = int(res.stdout.strip()) if res.stdout.strip().isdigit() else None
    except DeployerError:
        pass
    _discard(conn, it)
    left = it.size - done
    if free is not None and free < max(left, 1) + FREE_MARGIN:
        return RemoteError(f"{conn.board.where}: the board ran out of disk space in {folder} while uploading "
                           f"{it.remote} ({_acked(done, it.size)} written, {_mb(free)} left free); "
                           "the partial file was removed", hint="free space on the board, then re-run")
    return RemoteError(f"{conn.board.where}: uploading {it.remote} failed after {_acked(done, it.size)}: "
                       f"{_why(e)}; the partial file was removed")


def _why(e: BaseException) -> str:
    return " ".join((str(e).strip() or type(e).__name__).split())


def _send_one(conn: Connection, it: _Item, k: int, starter: threading.Thread, follower: list,
              progress: ProgressFn | None) -> None:
    sftp = conn.sftp
    offset = it.resumed_from
    if progress:
        progress(it.remote, offset, it.size)
    with open(it.local, "rb") as src:
        src.seek(offset)
        f = sftp.open(it.tmp, "r+b" if offset else "wb")
        it.created = True
        try:
            if k == 0:
                starter.join()
            stream = _follower(conn, follower)
            stream.send(f"{k}\n".encode())       # truncated (or resumed) now: the board may read it
            def acked(n: int) -> None:
                it.sent += n
                if progress:
                    progress(it.remote, offset + it.sent, it.size)

            pipelined_write(sftp, f.handle, src, offset, acked)
        except BaseException:
            # What stopped the write is what the caller must see. Ctrl-C or SIGTERM can cut a packet
            # in half, which ends the session; close()'s error after it used to replace the
            # interrupt ("connection lost", exit 3, and a group command went on to the next board).
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                f.close()
            raise
        try:
            f.close()
        except (OSError, EOFError, paramiko.SSHException):
            if conn.lost(0.2):
                raise
            raise OSError(f"closing {it.tmp} failed") from None


def _follower(conn: Connection, follower: list):
    if not follower:
        raise RemoteError(f"{conn.board.where}: could not start the on-board hash check")
    if isinstance(follower[0], BaseException):
        raise follower[0]
    return follower[0]


def _stop_follower(starter: threading.Thread, follower: list) -> None:
    starter.join()
    if follower and not isinstance(follower[0], BaseException):
        try:
            follower[0].close()
        except (DeployerError, OSError, EOFError, paramiko.SSHException):
            pass


def _start_follower(conn: Connection, items: list[_Item], out: list) -> None:
    args = [a for it in items for a in (layout.arg(it.tmp), str(it.size), it.sha256, f"{it.mode:o}")]
    try:
        out.append(conn.stream(
            ["sh", "-c", board_scripts.script("dispatch.sh") + "echo nopython", "sh",
             board_scripts.script("follow.py"), conn.board.python, *args], check=False))
    except BaseException as e:  # handed to the uploading thread
        out.append(e)


def _discard(conn: Connection, it: _Item) -> None:
    """Remove our own temp file (never another process's: the name is ours alone)."""
    if not it.created:
        return
    try:
        conn.sftp.remove(it.tmp)
        it.created = False
    except FileNotFoundError:
        it.created = False
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _discard_all(conn: Connection, items: list[_Item]) -> None:
    """On failure: remove our temp files while the link is up (after a dropped link they stay,
    named by content, for the next push to resume from; the stale sweep removes them later)."""
    if not conn.alive:
        return
    for it in items:
        _discard(conn, it)


def _mismatch(conn: Connection, it: _Item, answer: str) -> RemoteError:
    words = answer.split()
    if len(words) == 2 and words[0] == "bad":
        what = ("the file on the board is longer than sent" if words[1] == "too-long"
                else f"sha256 on the board is {words[1][:16]}..., expected {it.sha256[:16]}...")
    else:
        what = f"the on-board check gave no verdict ({answer[:80]!r})"
    return RemoteError(
        f"{conn.board.where}: {it.remote}: {what}; the upload was discarded and {it.remote} was not replaced",
        hint="re-run the push; if it repeats, check the board's storage",
    )


def pipelined_write(sftp: paramiko.SFTPClient, handle: bytes, src: IO[bytes], offset: int,
                    on_ack: Callable[[int], None] | None = None) -> int:
    """Write the rest of `src` to an open SFTP file from `offset`: CHUNK-sized requests, DEPTH in
    flight, each acknowledgement reported to `on_ack(bytes)`. Returns the bytes written. A write the
    board refuses (a full disk: OpenSSH's sftp-server says only "Failure") raises at its ack.

    Private paramiko calls (_async_request/_read_response) are what SFTPFile.write uses itself;
    only the flow control differs: wait for the oldest request once DEPTH are in flight, with
    requests 4x paramiko's 32 KiB (fewer packets and acks per byte on a small board's sshd)."""
    pending: deque[tuple[int, int]] = deque()
    written = 0
    # Acknowledgements that have arrived are taken as they come, not only once DEPTH are in flight:
    # the sender spends most of a slow link blocked on the channel window, and progress read
    # "0 B/6.0 MB" for the first 4 MiB (20 s at 2 Mbit/s) while the board had most of it.
    ready = getattr(sftp.sock, "recv_ready", None) or (lambda: False)

    def ack() -> None:
        nonlocal written
        num, n = pending.popleft()
        t, _ = sftp._read_response(num)
        if t != CMD_STATUS:
            raise OSError(f"unexpected SFTP reply {t} to a write")
        written += n
        if on_ack:
            on_ack(n)

    while True:
        data = src.read(CHUNK)
        if not data:
            break
        num = sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), data)
        pending.append((num, len(data)))
        offset += len(data)
        while len(pending) >= DEPTH or (pending and ready()):
            ack()
    while pending:
        ack()
    return written


def _verify(conn: Connection, items: list[_Item]) -> None:
    args = [a for it in items for a in (f"{it.mode:o}", layout.arg(it.tmp), it.sha256)]
    res = conn.run(["sh", "-c", board_scripts.script("verify.sh"), "sh", *args],
                   timeout=ANSWER_TIMEOUT + sum(it.size for it in items) / 5e6)
    lines = res.stdout.splitlines()
    for it, line in zip(items, lines + ["no answer"] * len(items)):
        if line != "ok":
            raise _mismatch(conn, it, line)
    for it in items:
        it.verified = True


def _place(conn: Connection, items: list[_Item]) -> None:
    """Rename the verified temp files into place, all requests pipelined.

    Each file first gets the local file's times (like scp -p): a board-side edit later always
    moves the mtime away from the recorded one, and the next push's quick check can trust the
    file at once instead of re-hashing it because it was written in the manifest's second."""
    if not items:
        return
    sftp = conn.sftp
    reqs = []
    for it in items:
        times = paramiko.SFTPAttributes()
        times.st_atime, times.st_mtime = it.atime, it.mtime
        tmp, final = sftp._adjust_cwd(it.tmp), sftp._adjust_cwd(it.remote)
        reqs += [(CMD_SETSTAT, (tmp, times)), (CMD_EXTENDED, ("posix-rename@openssh.com", tmp, final))]
    try:
        answers = manifest.pipelined(sftp, reqs)
    except (OSError, EOFError, paramiko.SSHException) as e:
        if conn.lost():
            raise conn.dropped(f"renaming {items[0].tmp} into place (the old {items[0].remote} is intact)") from None
        raise RemoteError(f"{conn.board.where}: cannot rename {items[0].tmp} to {items[0].remote}: {e}") from None
    for it, renamed in zip(items, answers[1::2]):     # a refused utime only costs a re-hash next time
        if not isinstance(renamed, tuple):
            raise RemoteError(f"{conn.board.where}: cannot rename {it.tmp} to {it.remote}: {renamed}")


__all__ = [
    "ProgressFn", "TransferResult", "download", "remote_sha256", "sha256_file", "upload",
    "upload_many",
]
