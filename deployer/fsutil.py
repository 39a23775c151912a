"""Atomic local writes: nothing half-written under a real name, ever.

Every file deployer produces goes through here: write to a temporary sibling, fsync, rename.
A crash or Ctrl-C leaves either the old file or the new one. Ctrl-C, SIGTERM and SIGHUP (the CLIs,
deployer's and the examples', turn them into KeyboardInterrupt) remove the temporary sibling; only a
process killed outright (SIGKILL, power loss) leaves a `.NAME.tmp-*` file, which nothing removes later.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", perms: int | None = None) -> Iterator[IO]:
    """Open a temp file next to `path`; on clean exit fsync and rename it over `path`.

    The file gets `perms` if given (e.g. 0o600 for a private key: never readable by others, not
    even for a moment), else the replaced file's mode, else 0666 minus the umask like open()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, perms if perms is not None else new_file_mode(path))   # mkstemp makes 0600
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on a folder (its own fd, so threads of one process exclude each other
    too), for writers that replace several files in it or read-modify-write one: nothing is left
    behind in the user's folder, and the lock goes with the process."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def umask() -> int:
    """The process umask, read without changing it (/proc; os.umask round trip as a fallback)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def new_file_mode(path: Path) -> int:
    """The mode a replaced file keeps, else 0666 minus the umask (0644 by default), like open()."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


# User-named input files are read whole, so a size cap keeps `/dev/zero`-like mistakes and
# multi-gigabyte typos from eating memory. 4 GiB is above any model a small ARM board can run;
# DEPLOYER_MAX_INPUT_BYTES overrides it (e.g. for a huge calibration .npy).
DEFAULT_MAX_INPUT_BYTES = 4 << 30


def overwritten_input(outputs: Iterable[T], inputs: Iterable[tuple[str | os.PathLike | None, str]],
                      ) -> tuple[T, str] | None:
    """The first output that is one of the (path, name) inputs (after symlinks), with that input's
    name; else None. Every writer that takes output paths from the user (ncnn2int8, ncnn2table,
    quantize) refuses such a pair before any work: a mistyped output must not destroy the model or
    the data the run reads."""
    read: dict[str, str] = {}
    for path, name in inputs:
        if path is not None:
            read.setdefault(os.path.realpath(path), name)
    for out in outputs:
        name = read.get(os.path.realpath(out))          # type: ignore[arg-type]
        if name is not None:
            return out, name
    return None


def max_input_bytes() -> int:
    text = os.environ.get("DEPLOYER_MAX_INPUT_BYTES", "")
    try:
        value = int(text) if text else DEFAULT_MAX_INPUT_BYTES
    except ValueError:
        value = DEFAULT_MAX_INPUT_BYTES
    return value if value > 0 else DEFAULT_MAX_INPUT_BYTES


def _open_regular(path: str | os.PathLike, what: str, limit: int | None) -> tuple[int, int]:
    """(fd, byte cap applied) of a user-named regular file, opened without blocking on FIFOs.

    O_NONBLOCK makes opening a FIFO with no writer return at once instead of hanging; fstat on the
    open descriptor (not the name) then refuses FIFOs, devices, sockets and folders, so nothing can
    swap the file between the check and the read.
    """
    from deployer.errors import DeployerError

    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DeployerError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DeployerError(f"{path}: is a folder, expected a {what}") from None
    except OSError as err:
        raise DeployerError(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DeployerError(f"{path}: is a folder, expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                    or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise DeployerError(f"{path}: is {kind}, expected a regular {what}")
        cap = max_input_bytes() if limit is None else limit
        if st.st_size > cap:
            raise DeployerError(
                f"{path}: {what} is {st.st_size:,} bytes, over the {cap:,}-byte limit",
                hint="is it the right file? DEPLOYER_MAX_INPUT_BYTES raises the limit")
        os.set_blocking(fd, True)
        return fd, cap
    except BaseException:
        os.close(fd)
        raise


def check_input(path: str | os.PathLike, what: str = "file", *, limit: int | None = None) -> Path:
    """The path, if it names a readable regular file within the size limit; else one-line error.

    For the few readers that must hand a path to a library (ncnn's own loader); everything that can
    take bytes should use `read_input`.
    """
    fd, _ = _open_regular(path, what, limit)
    os.close(fd)
    return Path(path)


def read_input(path: str | os.PathLike, what: str = "file", *, limit: int | None = None) -> bytes:
    """A user-named input file's bytes, or one line saying which file and why it can't be read.

    Regular files only (FIFOs, devices and folders are refused without blocking), at most `limit`
    bytes (default `max_input_bytes()`).
    """
    from deployer.errors import DeployerError

    fd, cap = _open_regular(path, what, limit)
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(cap + 1)
    except OSError as err:
        raise DeployerError(f"{path}: cannot read {what} ({err.strerror})") from None
    if len(data) > cap:          # grew while we read it
        raise DeployerError(f"{path}: {what} is over the {cap:,}-byte limit")
    return data


def read_input_text(path: str | os.PathLike, what: str = "file", *, limit: int | None = None) -> str:
    """`read_input` decoded as UTF-8; a binary file is one line naming the byte, not a traceback."""
    from deployer.errors import DeployerError

    raw = read_input(path, what, limit=limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DeployerError(f"{path}: not a UTF-8 text {what} (byte {err.start} is 0x{raw[err.start]:02x})") from None


def cache_dir() -> Path:
    """The deployer cache: $DEPLOYER_CACHE, else ~/.cache/deployer (wheels, sysroots, native builds,
    zoo models, logs, the fleet controller's socket all live under it)."""
    return Path(os.environ.get("DEPLOYER_CACHE") or Path.home() / ".cache" / "deployer").expanduser()


_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()
_READ = 1 << 20


def sha256_file(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> str:
    """sha256 of a local file (or of its first `limit` bytes), hex.

    Remembered for the life of the process by (path, inode, size, mtime): the steps of one command
    (a run records the model's hash, its upload checks it, a release names files by it) ask for the
    same unchanged file several times, and a model can be hundreds of MB."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, limit)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    d = hashlib.sha256()
    left = limit
    with open_input(path, what) as f:
        while left is None or left > 0:
            b = f.read(_READ if left is None else min(_READ, left))
            if not b:
                break
            d.update(b)
            if left is not None:
                left -= len(b)
    with _digests_lock:
        _digests[key] = d.hexdigest()
    return _digests[key]


@contextlib.contextmanager
def open_input(path: str | os.PathLike, what: str = "file") -> Iterator[IO[bytes]]:
    """A user-named regular file opened for streaming (hashing, uploading): no size cap, but FIFOs,
    devices and folders are refused at once instead of hanging or reading forever."""
    fd, _ = _open_regular(path, what, limit=1 << 62)
    with os.fdopen(fd, "rb") as fh:
        yield fh
