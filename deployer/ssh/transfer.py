"""sha256-verified, atomic, resumable uploads to boards, skipping what is already there.

A board must never run a truncated model because a WiFi link dropped mid-push, so a file is
written to a temp name in the same remote folder, hashed *on the board*, and only then renamed
over the real name (SFTP posix-rename: atomic on the board's filesystem). The temp name carries
the content hash, so a retry finds the partial file of the same content, checks its prefix hash,
and resumes from there instead of starting over.

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
from typing import IO, Callable, Iterator, Sequence

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_SETSTAT, CMD_STATUS, CMD_WRITE, int64

from deployer import fsutil
from deployer.errors import DeployerError, RemoteError
from deployer.ssh import manifest
from deployer.ssh.connect import Connection, safe_remote_path

ProgressFn = Callable[[str, int, int], None]     # (remote path, bytes done, total bytes)

CHUNK = 128 * 1024         # bytes per SFTP write request (OpenSSH accepts up to 256 KiB)
DEPTH = 32                 # write requests in flight (4 MiB)
_READ = 1024 * 1024

# The board-side helpers run in the board's python when it has one (hashlib uses OpenSSL's
# SHA-256 instructions: ~7x faster than coreutils sha256sum here), else in plain sh + sha256sum.
_PY_HASH = (
    "import hashlib, os, sys\n"
    "def h(p):\n"
    "    d = hashlib.sha256()\n"
    "    with open(p, 'rb') as f:\n"
    "        for b in iter(lambda: f.read(1 << 20), b''):\n"
    "            d.update(b)\n"
    "    return d.hexdigest()\n"
    "a = sys.argv[1:]\n"
)
_SH_HASH = 'h() { sha256sum < "$1" | cut -c1-64; }; '
# args: final1 part1 final2 part2 ... -> per pair "<final sha|-> <part size|-> <part sha|->"
_STATE_PY = _PY_HASH + (
    "for f, p in zip(a[0::2], a[1::2]):\n"
    "    try:\n"
    "        os.makedirs(os.path.dirname(f) or '.', exist_ok=True)\n"
    "    except OSError:\n"
    "        pass\n"
    "    x = h(f) if os.path.isfile(f) else '-'\n"
    "    y, z = (str(os.path.getsize(p)), h(p)) if os.path.isfile(p) else ('-', '-')\n"
    "    print(x, y, z)\n"
)
_STATE_SH = _SH_HASH + (
    'while [ $# -gt 1 ]; do f=$1; p=$2; shift 2; '
    'case $f in */*) d=${f%/*};; *) d=.;; esac; [ -d "${d:-/}" ] || mkdir -p -- "${d:-/}"; '
    'if [ -f "$f" ]; then a=$(h "$f"); else a=-; fi; '
    'if [ -f "$p" ]; then b=$(wc -c < "$p"); c=$(h "$p"); else b=-; c=-; fi; '
    'echo "${a:--} $b ${c:--}"; done'
)
# Fallback check after the upload for boards without python (sh + sha256sum).
# args: mode tmp want stale_prefix ... -> per file "ok" or "bad <sha>"; removes stale partial files
_VERIFY_SH = _SH_HASH + (
    'while [ $# -gt 3 ]; do m=$1; t=$2; w=$3; s=$4; shift 4; '
    'chmod "$m" "$t" 2>/dev/null; g=$(h "$t"); '
    'if [ "$g" = "$w" ]; then echo ok; for x in "$s"*; do [ "$x" = "$t" ] || rm -f -- "$x"; done; '
    'else echo "bad ${g:-unreadable}"; rm -f -- "$t"; fi; done'
)
# Hashes the temp files on the board *while* they are uploaded (following their growth), so the
# on-board check costs nothing extra at the end of a long transfer. One process serves a whole
# upload_many. File k is opened only after the client sends "k" on stdin (after SFTP truncated it);
# stdin EOF means the client went away. args: (tmp size want mode stale_prefix)... -> per file
# "ok" or "bad <sha>".
_FOLLOW_PY = _PY_HASH + (
    "import select\n"
    "inbox = [b'']\n"
    "def poll(wait):\n"
    "    if select.select([sys.stdin], [], [], wait)[0]:\n"
    "        b = os.read(sys.stdin.fileno(), 4096)\n"
    "        if not b:\n"
    "            sys.exit(3)\n"
    "        inbox[0] += b\n"
    "def signal(k):\n"
    "    while (b'%d\\n' % k) not in inbox[0]:\n"
    "        poll(None)\n"
    "for k in range(len(a) // 5):\n"
    "    t, n, w, m, s = a[5 * k], int(a[5 * k + 1]), a[5 * k + 2], int(a[5 * k + 3], 8), a[5 * k + 4]\n"
    "    signal(k)\n"
    "    d, got = hashlib.sha256(), 0\n"
    "    with open(t, 'rb') as f:\n"
    "        while got < n:\n"
    "            b = f.read(min(1 << 20, n - got))\n"
    "            if b:\n"
    "                d.update(b)\n"
    "                got += len(b)\n"
    "            else:\n"
    "                poll(0.05)\n"
    "        if f.read(1):\n"
    "            got = -1\n"
    "    g = d.hexdigest() if got == n else 'too-long'\n"
    "    if g != w:\n"
    "        print('bad', g, flush=True)\n"
    "        continue\n"
    "    os.chmod(t, m)\n"
    "    dd, base = os.path.dirname(s) or '.', os.path.basename(s)\n"
    "    for x in os.listdir(dd):\n"
    "        if x.startswith(base) and x != os.path.basename(t):\n"
    "            try:\n"
    "                os.remove(os.path.join(dd, x))\n"
    "            except OSError:\n"
    "                pass\n"
    "    print('ok', flush=True)\n"
)

# Fresh pushes have nothing to hash: answer in sh and skip the python start-up (slow on small boards).
_NOTHING_THERE = (
    'found=; i=0; for x in "$@"; do i=$((i+1)); '
    'if [ $i -gt 2 ] && [ -e "$x" ]; then found=1; break; fi; done; '
    'if [ -z "$found" ]; then shift 2; while [ $# -gt 1 ]; do '
    'case $1 in */*) d=${1%/*};; *) d=.;; esac; [ -d "${d:-/}" ] || mkdir -p -- "${d:-/}"; '
    'echo "- - -"; shift 2; done; exit 0; fi; '
)

# args: py_script python sh-args...: the python version if the board has that python, else sh.
_DISPATCH = 'p=$1; q=$2; shift 2; if command -v "$q" >/dev/null 2>&1; then exec "$q" -c "$p" "$@"; fi; '


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
    tmp: str = ""
    stale_prefix: str = ""
    remote_sha: str | None = None
    part_size: int = 0
    part_sha: str | None = None
    resumed_from: int = 0
    sent: int = 0
    verified: bool = False
    quick: bool = False        # vouched for by the manifest quick check (not hashed this time)
    atime: int = 0             # the local file's times, given to the board's copy
    mtime: int = 0


def sha256_file(path: str | os.PathLike, limit: int | None = None) -> str:
    """sha256 of a local file (or of its first `limit` bytes)."""
    d = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            b = f.read(_READ if left is None else min(_READ, left))
            if not b:
                break
            d.update(b)
            if left is not None:
                left -= len(b)
    return d.hexdigest()


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
    for it in items:
        if it in todo:
            _plan_resume(it)
        elif progress:
            progress(it.remote, it.size, it.size)
    if todo:
        _send_all(conn, todo, progress)
    unverified = [it for it in todo if not it.verified]
    if unverified:                     # the board had no python to hash while uploading
        _verify(conn, unverified)
    _place(conn, todo)
    _record(conn, state, [it for it in items if not it.quick])
    secs = time.monotonic() - t0
    return [
        TransferResult(str(it.local), it.remote, it.size, it.sha256, it not in todo, it.sent, it.resumed_from, secs,
                       "upload" if it in todo else "manifest" if it.quick else "sha256")
        for it in items
    ]


def remote_sha256(conn: Connection, paths: Sequence[str]) -> dict[str, str | None]:
    """sha256 of files on the board (None if missing), in one command."""
    items = [_Item(Path("-"), p, 0, "", 0, tmp=p + ".none") for p in paths]
    for p in paths:
        _check_remote(p)
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
    stale_prefix = str(p.with_name(f".{p.name}.part-"))
    return _Item(local, remote, st.st_size, digest, mode if mode is not None else st.st_mode & 0o777,
                 tmp=stale_prefix + digest[:16], stale_prefix=stale_prefix,
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


def _sh(conn: Connection, py: str, sh: str, args: list[str], doing: str) -> list[str]:
    res = conn.run(["sh", "-c", _NOTHING_THERE + _DISPATCH + sh, "sh", py, conn.board.python, *args])
    if res.rc != 0:
        tail = (res.stderr.strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"{conn.board.where}: {doing} failed (rc {res.rc}): {tail}")
    return res.stdout.splitlines()


def _dash(p: str) -> str:
    """Relative paths that start with '-' would be read as options by chmod and friends."""
    return "./" + p if p.startswith("-") else p


def _query_state(conn: Connection, items: list[_Item]) -> None:
    args = [a for it in items for a in (_dash(it.remote), _dash(it.tmp))]
    lines = _sh(conn, _STATE_PY, _STATE_SH, args, "checking remote files")
    if len(lines) != len(items):
        raise RemoteError(f"{conn.board.where}: unexpected answer while checking remote files: {lines[:3]}")
    for it, line in zip(items, lines):
        a, b, c = (line.split() + ["-", "-", "-"])[:3]
        it.remote_sha = a if a != "-" else None
        it.part_size = int(b) if b.isdigit() else 0
        it.part_sha = c if c != "-" else None


def _plan_resume(it: _Item) -> None:
    if 0 < it.part_size <= it.size and it.part_sha and sha256_file(it.local, it.part_size) == it.part_sha:
        it.resumed_from = it.part_size


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
        lines = iter(stream)
        answers = [next(lines, "no answer") for _ in items]
        if answers[0] != "nopython":
            for _ in lines:          # let it exit by itself: killing costs another remote process
                pass
    except FileNotFoundError as e:
        _stop_follower(starter, follower)
        raise DeployerError(f"{conn.board.where}: cannot create {it.tmp}: {e}") from None
    except PermissionError:
        _stop_follower(starter, follower)
        raise DeployerError(f"{conn.board.where}: permission denied writing {it.tmp}",
                            hint="pick a runtime_dir the login user can write") from None
    except (OSError, EOFError, paramiko.SSHException, RemoteError) as e:
        _stop_follower(starter, follower)
        if conn.lost():
            raise conn.dropped(
                f"uploading {it.remote} ({it.resumed_from + it.sent} of {it.size} bytes sent; re-run to resume)"
            ) from None
        raise RemoteError(f"{conn.board.where}: uploading {it.remote} failed: {e}") from None
    except BaseException:
        _stop_follower(starter, follower)
        raise
    if answers[0] == "nopython":
        return                       # _verify checks them afterwards with sh + sha256sum
    for it, answer in zip(items, answers):
        if answer == "ok":
            it.verified = True
        else:
            for other in items:
                _discard(conn, other)
            raise _mismatch(conn, it, answer.split()[-1])


def _send_one(conn: Connection, it: _Item, k: int, starter: threading.Thread, follower: list,
              progress: ProgressFn | None) -> None:
    sftp = conn.sftp
    offset = it.resumed_from
    if progress:
        progress(it.remote, offset, it.size)
    with open(it.local, "rb") as src:
        src.seek(offset)
        f = sftp.open(it.tmp, "r+b" if offset else "wb")
        try:
            if k == 0:
                starter.join()
            stream = _follower(conn, follower)
            stream.send(f"{k}\n".encode())       # truncated (or resumed) now: the board may read it
            _pipelined_write(sftp, f.handle, src, offset, it, progress)
        finally:
            f.close()


def _follower(conn: Connection, follower: list):
    if not follower:
        raise RemoteError(f"{conn.board.where}: could not start the on-board hash check")
    if isinstance(follower[0], BaseException):
        raise follower[0]
    return follower[0]


def _stop_follower(starter: threading.Thread, follower: list) -> None:
    starter.join()
    if follower and not isinstance(follower[0], BaseException):
        follower[0].close()


def _start_follower(conn: Connection, items: list[_Item], out: list) -> None:
    args = [a for it in items for a in (_dash(it.tmp), str(it.size), it.sha256, f"{it.mode:o}", _dash(it.stale_prefix))]
    try:
        out.append(conn.stream(
            ["sh", "-c", _DISPATCH + "echo nopython", "sh", _FOLLOW_PY, conn.board.python, *args], check=False))
    except BaseException as e:  # handed to the uploading thread
        out.append(e)


def _discard(conn: Connection, it: _Item) -> None:
    try:
        conn.sftp.remove(it.tmp)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _mismatch(conn: Connection, it: _Item, got: str) -> RemoteError:
    return RemoteError(
        f"{conn.board.where}: {it.remote}: sha256 on the board is {got[:16]}..., expected "
        f"{it.sha256[:16]}...; the upload was discarded, the old file is untouched",
        hint="re-run the push; if it repeats, check the board's storage",
    )


def _pipelined_write(sftp: paramiko.SFTPClient, handle: bytes, src: IO[bytes], offset: int, it: _Item,
                     progress: ProgressFn | None) -> None:
    # Private paramiko calls (_async_request/_read_response) are what SFTPFile.write uses itself;
    # we only change the flow control: wait for the oldest request once DEPTH are in flight.
    pending: deque[tuple[int, int]] = deque()
    base = offset

    def ack() -> None:
        num, n = pending.popleft()
        t, _ = sftp._read_response(num)
        if t != CMD_STATUS:
            raise OSError(f"unexpected SFTP reply {t} to a write")
        it.sent += n
        if progress:
            progress(it.remote, base + it.sent, it.size)

    while True:
        data = src.read(CHUNK)
        if not data:
            break
        num = sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), data)
        pending.append((num, len(data)))
        offset += len(data)
        while len(pending) >= DEPTH:
            ack()
    while pending:
        ack()


def _verify(conn: Connection, items: list[_Item]) -> None:
    args = [a for it in items for a in (f"{it.mode:o}", _dash(it.tmp), it.sha256, _dash(it.stale_prefix))]
    res = conn.run(["sh", "-c", _VERIFY_SH, "sh", *args])
    lines = res.stdout.splitlines()
    for it, line in zip(items, lines + ["bad no-answer"] * len(items)):
        if line != "ok":
            raise _mismatch(conn, it, line.split()[-1])


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


@contextlib.contextmanager
def rich_progress(console=None, description: str = "upload") -> Iterator[ProgressFn]:
    """A ProgressFn that draws one rich bar per file on stderr; for CLI commands."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    if console is None:
        from deployer.cli.common import console
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=False) as bar:
        def update(remote: str, done: int, total: int) -> None:
            if remote not in tasks:
                tasks[remote] = bar.add_task(f"{description} {PurePosixPath(remote).name}", total=total)
            bar.update(tasks[remote], completed=done, total=total)

        yield update


__all__ = [
    "ProgressFn", "TransferResult", "download", "remote_sha256", "rich_progress", "sha256_file", "upload",
    "upload_many",
]
