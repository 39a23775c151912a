"""Send release blobs to a board over SFTP, resuming interrupted uploads.

The bytes travel by deployer.ssh.transfer.pipelined_write, the same SFTP write path `push` uses;
what is fleet-specific is where they go and how a part on the board is resumed.

Each blob goes to `incoming/<sha256>.part`; when a part is already there (a cut link, a killed
controller) the upload continues at its size. The board verifies the sha256 of the whole file
when the release is committed (fleet.sh `commit`), so a resumed prefix that is somehow wrong is
caught there, deleted, and sent again in full. A full disk removes the part it was writing, so
nothing half-written is left behind.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paramiko

from deployer.errors import RemoteError
from deployer.remote.layout import BoardLayout
from deployer.ssh.transfer import pipelined_write

ProgressFn = Callable[[int, int], None]  # (bytes done in this board's upload, bytes to send)


@dataclass
class Sent:
    sha256: str
    size: int
    sent: int            # bytes written now
    resumed_from: int    # bytes that were already on the board


class DiskFull(RemoteError):
    """The board ran out of space while receiving a release."""


def send_blobs(conn: Any, layout: BoardLayout, blobs: list[tuple[str, Path, int, int]],
               progress: ProgressFn | None = None) -> list[Sent]:
    """blobs = [(sha256, local path, size, bytes already on the board)]."""
    total = sum(size - min(part, size) for _, _, size, part in blobs)
    done = shown = 0
    out = []

    def acked(n: int) -> None:       # progress every MiB (hundreds of boards feed one live view)
        nonlocal done, shown
        done += n
        if progress and (done - shown >= 1 << 20 or done == total):
            shown = done
            progress(done, total)

    for sha, path, size, part in blobs:
        offset = part if 0 < part <= size else 0
        remote = layout.incoming_part(sha)
        try:
            sftp = conn.sftp
            with open(path, "rb") as src:
                src.seek(offset)
                dst = sftp.open(remote, "r+b" if offset else "wb")
                try:
                    pipelined_write(sftp, dst.handle, src, offset, acked)
                finally:
                    dst.close()
            # belt and braces: what the board holds now is the whole blob
            stored = conn.sftp.stat(remote).st_size
            if stored != size:
                _remove(conn, remote)
                raise DiskFull(f"{conn.board.name}: the board stored only {stored} of {size} bytes of {path.name} "
                               "(disk full?); the partial file was removed, the current release is untouched",
                               hint="free space on the board (or lower --keep), then re-run")
        except (OSError, EOFError, paramiko.SSHException) as err:
            if _no_space(err):
                _remove(conn, remote)
                raise DiskFull(f"{conn.board.name}: the board's disk is full (while receiving {path.name}); "
                               "the current release is untouched",
                               hint="free space on the board (or lower --keep), then re-run") from None
            if not getattr(conn, "alive", True) or conn.lost(0.5):
                raise conn.dropped(f"uploading {path.name}") from None
            raise RemoteError(f"{conn.board.name}: uploading {path.name} failed: {err}") from None
        out.append(Sent(sha, size, size - offset, offset))
    return out


def _no_space(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    # OpenSSH's sftp-server maps ENOSPC to the generic SSH_FX_FAILURE ("Failure")
    return "no space" in text or "quota" in text or text.strip() in ("failure", "[errno none] failure")


def _remove(conn: Any, remote: str) -> None:
    try:
        conn.sftp.remove(remote)
    except (OSError, EOFError, paramiko.SSHException):
        pass
