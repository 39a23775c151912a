"""Atomic local writes: nothing half-written under a real name, ever.

Every file deployer produces goes through here: write to a temporary sibling, fsync, rename.
A crash or Ctrl-C leaves either the old file or the new one, plus at most a `.tmp-*` sibling
that the next successful write of the same name removes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to `path`; on clean exit fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def read_input(path: str | os.PathLike, what: str = "file") -> bytes:
    """A user-named input file's bytes, or one line saying which file and why it can't be read."""
    from deployer.errors import DeployerError

    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DeployerError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DeployerError(f"{path}: is a folder, expected a {what}") from None
    except OSError as err:
        raise DeployerError(f"{path}: cannot read {what} ({err.strerror})") from None
