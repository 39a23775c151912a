"""The per-folder record of what deployer placed on a board, so a re-push needs no remote hashing.

Hashing a 20 MB model on the board takes seconds under emulation (and on a Pi Zero), while nearly
every push is a repeat. So when an upload verifies a file's sha256 on the board, we also record its
board-side (size, mtime, sha256) in `<folder>/.deployer-manifest.json`. A later push reads that file
and stats the targets over the already-open SFTP channel (two pipelined round trips, no remote
process at all) and skips a file only when:

  * the manifest entry's sha256 equals the local file's sha256, and
  * the board's size and mtime equal the recorded ones, and
  * the file's mtime is older than the manifest itself (see "racy seconds" below).

Anything else (a missing, corrupt or hand-edited manifest, a touched file) falls back to hashing on
the board, and the manifest is rewritten.

Trade-off (the same as rsync's default "quick check"): a board-side edit that keeps the size and
puts the mtime back (`touch -d`, a restored backup) is not noticed. `upload_many(..., checksum=True)`
ignores the manifest and hashes everything, like `rsync --checksum`. The manifest is a cache, not a
security boundary: whoever can write the board's files can also rewrite it.

Racy seconds: SFTP v3 reports mtimes in whole seconds, so an edit in the same second as the
recorded mtime would keep it. As git does with its index, an entry is trusted only if the file's
mtime is strictly older than the manifest's own mtime (both from the board's clock); a file with
an mtime in the manifest's second is re-hashed once, and the rewritten manifest is then trusted.
Uploads give the board's copy the local file's mtime (transfer.py), usually long past, so a fresh
upload is trusted by the very next push.

A host clock ahead of the board's gives uploaded files (which keep the local mtime, like scp -p)
mtimes "in the future" for the board: they count as racy and are hashed until the board's clock
has passed them. Safe, only slower.

The manifest carries a sha256 of its own entries, so a truncated or hand-edited file reads as absent.
It is written to a temp name and renamed over the old one (atomic on the board's filesystem).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Sequence

import paramiko
from paramiko.sftp import (
    CMD_ATTRS, CMD_CLOSE, CMD_DATA, CMD_EXTENDED, CMD_FSTAT, CMD_HANDLE, CMD_OPEN, CMD_READ, CMD_STAT, CMD_WRITE,
    SFTP_FLAG_CREATE, SFTP_FLAG_READ, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE, int64,
)

MANIFEST_NAME = ".deployer-manifest.json"
FORMAT = 1
_READ_MAX = 64 * 1024            # one read covers ~550 entries; bigger manifests take a second pass
_WRITE_MAX = 128 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    size: int
    mtime: int            # whole seconds, board clock (what SFTP reports)
    sha256: str


@dataclass
class FolderManifest:
    path: str                                     # remote path of the manifest file
    entries: dict[str, Entry] = field(default_factory=dict)
    written: int | None = None                    # the manifest's own mtime; None = absent or unusable


@dataclass
class BoardState:
    """What one look at the board found: the manifests of the folders and the targets' stat."""

    manifests: dict[str, FolderManifest]          # folder -> manifest
    stats: dict[str, paramiko.SFTPAttributes | None]   # remote path -> stat (None: missing/unreadable)

    def unchanged(self, remote: str, size: int, sha256: str) -> bool:
        """True when the quick check says the board holds exactly these bytes (see module doc)."""
        folder, name = split(remote)
        man = self.manifests.get(folder)
        st = self.stats.get(remote)
        if man is None or man.written is None or st is None:
            return False
        e = man.entries.get(name)
        return (e is not None and e.sha256 == sha256 and e.size == size == st.st_size
                and st.st_mode is not None and stat_mod.S_ISREG(st.st_mode)
                and st.st_mtime is not None and e.mtime == st.st_mtime < man.written)


def split(remote: str) -> tuple[str, str]:
    p = PurePosixPath(remote)
    return str(p.parent), p.name


def manifest_path(folder: str) -> str:
    return str(PurePosixPath(folder, MANIFEST_NAME))


def _digest(files: dict) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def encode(entries: dict[str, Entry]) -> bytes:
    files = {n: [e.size, e.mtime, e.sha256] for n, e in sorted(entries.items())}
    doc = {"format": FORMAT, "about": "written by deployer after verifying each file's sha256 on this board",
           "files": files, "check": _digest(files)}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def decode(data: bytes) -> dict[str, Entry] | None:
    """Entries of a manifest, or None if it is not one we wrote intact (corrupt, truncated, edited)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        return None
    files = doc["files"]
    if doc.get("check") != _digest(files):
        return None
    out = {}
    for name, v in files.items():
        if not (isinstance(v, list) and len(v) == 3 and all(type(x) is int and x >= 0 for x in v[:2])
                and isinstance(v[2], str) and _HEX64.fullmatch(v[2])):
            return None
        out[name] = Entry(v[0], v[1], v[2])
    return out


# --- SFTP, pipelined: all requests of a round go out before the first answer is read ---------------

def pipelined(sftp: paramiko.SFTPClient, requests: Sequence[tuple[int, tuple]]) -> list:
    """Send every request, then collect the answers in order: (type, Message) or the OSError/EOFError
    that request's SFTP status meant. A dead connection raises (paramiko.SSHException)."""
    nums = [sftp._async_request(type(None), t, *args) for t, args in requests]
    out: list = []
    for num in nums:
        try:
            out.append(sftp._read_response(num))
        except (OSError, EOFError) as e:
            out.append(e)
    return out


def _ok(answer, kind: int):
    return answer[1] if isinstance(answer, tuple) and answer[0] == kind else None


def look(sftp: paramiko.SFTPClient, remotes: Sequence[str]) -> BoardState:
    """Stat every target and read each folder's manifest: two round trips, no remote process."""
    folders = sorted({split(r)[0] for r in remotes})
    reqs = [(CMD_STAT, (sftp._adjust_cwd(r),)) for r in remotes]
    reqs += [(CMD_OPEN, (sftp._adjust_cwd(manifest_path(f)), SFTP_FLAG_READ, paramiko.SFTPAttributes()))
             for f in folders]
    first = pipelined(sftp, reqs)
    stats = {}
    for r, a in zip(remotes, first):
        msg = _ok(a, CMD_ATTRS)
        stats[r] = paramiko.SFTPAttributes._from_msg(msg) if msg is not None else None
    manifests = {f: FolderManifest(manifest_path(f)) for f in folders}
    handles = {}
    for f, a in zip(folders, first[len(remotes):]):
        msg = _ok(a, CMD_HANDLE)
        if msg is not None:
            handles[f] = msg.get_binary()
    reqs = [req for h in handles.values()
            for req in ((CMD_FSTAT, (h,)), (CMD_READ, (h, int64(0), _READ_MAX)), (CMD_CLOSE, (h,)))]
    second = pipelined(sftp, reqs)
    for k, f in enumerate(handles):
        st_msg, data_msg = _ok(second[3 * k], CMD_ATTRS), _ok(second[3 * k + 1], CMD_DATA)
        if st_msg is None or data_msg is None:
            continue
        st = paramiko.SFTPAttributes._from_msg(st_msg)
        data = data_msg.get_string()
        if st.st_size and st.st_size > len(data):     # a big folder: read the rest plainly (rare)
            try:
                with sftp.open(manifests[f].path, "rb") as fh:
                    data = fh.read()
            except (OSError, EOFError):
                continue
        entries = decode(data)
        if entries is not None and st.st_mtime is not None:
            manifests[f].entries, manifests[f].written = entries, st.st_mtime
    return BoardState(manifests, stats)


def record(sftp: paramiko.SFTPClient, state: BoardState, placed: Sequence[tuple[str, int, str]]) -> None:
    """Add (remote, size, sha256) of files just verified on the board to their folders' manifests.

    Best effort: the files are already in place and verified, so a failure here (read-only folder,
    full disk) only means the next push hashes them again. A dead connection still raises."""
    if not placed:
        return
    folders = sorted({split(r)[0] for r, _, _ in placed})
    tmp = {f: str(PurePosixPath(f, f"{MANIFEST_NAME}.tmp-{secrets.token_hex(4)}")) for f in folders}
    reqs = [(CMD_STAT, (sftp._adjust_cwd(r),)) for r, _, _ in placed]
    reqs += [(CMD_OPEN, (sftp._adjust_cwd(tmp[f]), SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC,
                         paramiko.SFTPAttributes())) for f in folders]
    first = pipelined(sftp, reqs)
    entries = {f: dict(state.manifests[f].entries) if f in state.manifests else {} for f in folders}
    for (remote, size, sha), a in zip(placed, first):
        folder, name = split(remote)
        msg = _ok(a, CMD_ATTRS)
        st = paramiko.SFTPAttributes._from_msg(msg) if msg is not None else None
        if st is not None and st.st_size == size and st.st_mtime is not None:
            entries[folder][name] = Entry(size, st.st_mtime, sha)
        else:
            entries[folder].pop(name, None)
    reqs, owners = [], []
    for f, a in zip(folders, first[len(placed):]):
        msg = _ok(a, CMD_HANDLE)
        if msg is None:
            continue
        h, data = msg.get_binary(), encode(entries[f])
        for off in range(0, len(data), _WRITE_MAX):
            reqs.append((CMD_WRITE, (h, int64(off), data[off:off + _WRITE_MAX])))
            owners.append(f)
        reqs.append((CMD_CLOSE, (h,)))
        owners.append(f)
        # the server handles requests in order: the rename sees the closed, complete file
        reqs.append((CMD_EXTENDED, ("posix-rename@openssh.com", sftp._adjust_cwd(tmp[f]),
                                    sftp._adjust_cwd(manifest_path(f)))))
        owners.append(f)
    failed = {f for f, a in zip(owners, pipelined(sftp, reqs)) if not isinstance(a, tuple)}
    for f in failed:
        try:
            sftp.remove(tmp[f])
        except (OSError, EOFError):
            pass
