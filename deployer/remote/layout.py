"""Every path deployer uses on a board, in one place.

Why one module: a board path built by string concatenation in five places is five chances to
hand a board's shell or python an argument that starts with '-' (read as an option: a
`runtime_dir: "-cimport os;..."` in a targets file used to run code on the board) or that walks
out of the deploy folder with '..'. Here the deploy root is validated once, every sub-path is
derived from it, and names from users (model files, runtime names, release ids) are checked
before they are joined.

Conventions (the board's login shell and SFTP agree on them):
- A relative root is relative to the login user's home (exec and SFTP both start there);
  `~/x` is written `x`, `~` is `.`. An absolute root is used as is.
- No path component starts with '-', none is '..', no control characters, and the root uses a
  conservative character set, so a path is never read as an option and quoting is the only
  thing standing between it and the shell (every remote argument is shlex-quoted anyway).

Layout under the root (default `.deployer` in the login home):

    .deployer.lock                the board lock (deployer.remote.lock): holder's pid/host/user/command/time
    runtime/<ncnn-ver-tag>/       unpacked ncnn wheels (marker `.deployer-sha256` written last)
    wheels/<file>.whl             uploaded wheels
    bin/runner.py                 the benchmark runner
    models/<name>                 models pushed by `push`/`run`
    results/                      board-side results (reserved)
    tmp/                          scratch for operations (per-process sub-folders)
    releases/<id>/, blobs/<sha256>, current -> releases/<id>    fleet releases (deployer.fleet extends these)
    incoming/<sha256>.part, history, state/health-<id>.json      fleet uploads, switch log, health notes
                                  (board side: deployer/fleet/board/fleet.sh uses these names)

Temp files: uploads go to `.<name>.part-<sha16>-<host>-<pid>-<rand>` next to the final name
(`temp_name`), unpacks to `.<name>.tmp-<pid>` folders; both start with '.' so listings skip them
and both carry a recognisable marker so the stale-temp sweep (under the lock) finds them.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from deployer.errors import DeployerError

DEFAULT_ROOT = ".deployer"
LOCK_NAME = ".deployer.lock"
PART_MARK = ".part-"            # upload temp files: .<name>.part-<sha16>-<host>-<pid>-<rand>
TMP_MARK = ".tmp-"              # unpack temp folders: .<name>.tmp-<pid>
OLD_MARK = ".old-"              # replaced folders waiting for removal: .<name>.old-<pid>

# characters allowed in a deploy root (a path the user writes in targets YAML)
_ROOT_RE = re.compile(r"^[A-Za-z0-9._+@%=,:/ ~-]+$")
# a single name (file, runtime folder, release id) joined under the root
_NAME_RE = re.compile(r"^[A-Za-z0-9._+@=,-]+$")
_HOST_RE = re.compile(r"[^A-Za-z0-9.]+")


def check_root(value: Any) -> str:
    """Validate a deploy root (targets `runtime_dir`) and return it normalised for exec and SFTP.

    Raises ValueError with the reason (callers add the file/line/board)."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    raw = value.strip()
    if not raw:
        return DEFAULT_ROOT
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValueError("contains control characters")
    if not _ROOT_RE.fullmatch(raw):
        bad = sorted({c for c in raw if not _ROOT_RE.match(c)})
        raise ValueError(f"contains {' '.join(repr(c) for c in bad)}; use letters, digits and . _ - + @ / ~")
    if raw == "~":
        return "."
    if raw.startswith("~/"):
        raw = raw[2:] or "."
    elif raw.startswith("~"):
        raise ValueError("'~user' paths are not supported; use an absolute path or one relative to the login home")
    p = PurePosixPath(raw)
    for part in p.parts:
        if part == "..":
            raise ValueError("must not contain '..'")
        if part.startswith("-"):
            raise ValueError(f"component '{part}' starts with '-' (it would be read as an option)")
        if "~" in part:
            raise ValueError("'~' is only allowed as the first character ('~/...')")
    out = str(p)
    return out if out not in ("", "/") or p.is_absolute() else "."


def check_name(name: Any, what: str = "name") -> str:
    """A single path component from a user (model file name, runtime folder, release id): no '/',
    no '..', no leading '-' or '.', conservative characters. DeployerError otherwise."""
    if not isinstance(name, str) or not name:
        raise DeployerError(f"{what} must be a non-empty name")
    if name in (".", "..") or name.startswith(("-", ".")) or not _NAME_RE.fullmatch(name):
        raise DeployerError(f"{what} {name!r} may only use letters, digits and . _ + - @ = , "
                            "(no '/', no leading '-' or '.')")
    return name


def arg(path: str) -> str:
    """A board path as a command argument: relative paths that could be read as an option get './'.

    Paths from a BoardLayout never start with '-'; this is the belt to that pair of braces for
    paths that reach a command from elsewhere."""
    return "./" + path if path.startswith("-") else path


def host_tag() -> str:
    """This controller's host name, reduced to characters that are safe in a board file name."""
    return (_HOST_RE.sub("_", socket.gethostname()).strip("_") or "host")[:24]


def temp_name(final: str, sha256: str = "") -> str:
    """Per-process temp name for an upload to `final`, in the same folder:
    `.<name>.part-<sha16>-<host>-<pid>-<rand>`. The content hash lets a later push (holding the
    board lock) find and resume a partial file of the same content left by a dead process; the
    host, pid and random part make two live processes never share a temp file."""
    p = PurePosixPath(final)
    return str(p.with_name(f"{part_prefix(p.name, sha256)}{host_tag()}-{os.getpid()}-{secrets.token_hex(3)}"))


def part_prefix(name: str, sha256: str = "") -> str:
    """`.<name>.part-` or, with a content hash, `.<name>.part-<sha16>-`: the prefix every temp
    upload of that file (and content) starts with."""
    return f".{name}{PART_MARK}" + (f"{sha256[:16]}-" if sha256 else "")


@dataclass(frozen=True)
class BoardLayout:
    """The paths of one board's deploy folder. Build with `BoardLayout.for_board(board)`."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "root", check_root(self.root))
        except ValueError as e:
            raise DeployerError(f"runtime_dir {self.root!r}: {e}") from None

    @classmethod
    def for_board(cls, board: Any) -> "BoardLayout":
        """The layout for a Board (its `runtime_dir`, default `.deployer`)."""
        root = getattr(board, "runtime_dir", None) or DEFAULT_ROOT
        try:
            return cls(check_root(root))
        except ValueError as e:
            name = getattr(board, "name", "?")
            raise DeployerError(f"board '{name}': runtime_dir {root!r}: {e}",
                                hint="fix runtime_dir: in the targets file") from None

    # -- fixed places ---------------------------------------------------------------------------

    def _sub(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    @property
    def lock(self) -> str:
        """The board lock file (deployer.remote.lock)."""
        return self._sub(LOCK_NAME)

    @property
    def runtime(self) -> str:
        return self._sub("runtime")

    @property
    def wheels(self) -> str:
        return self._sub("wheels")

    @property
    def bin(self) -> str:
        return self._sub("bin")

    @property
    def runner(self) -> str:
        return self._sub("bin", "runner.py")

    @property
    def models(self) -> str:
        return self._sub("models")

    @property
    def results(self) -> str:
        return self._sub("results")

    @property
    def tmp(self) -> str:
        return self._sub("tmp")

    # fleet releases (deployer.fleet owns what goes inside)
    @property
    def releases(self) -> str:
        return self._sub("releases")

    @property
    def blobs(self) -> str:
        return self._sub("blobs")

    @property
    def current(self) -> str:
        """The `current` symlink (-> releases/<id>), switched by rename, never `ln -sf`."""
        return self._sub("current")

    @property
    def incoming(self) -> str:
        """Fleet uploads in progress, `incoming/<sha256>.part` (kept across runs: they resume)."""
        return self._sub("incoming")

    @property
    def history(self) -> str:
        """Fleet switch log, one `<epoch> <release id>` line per switch (rollback order, GC keep list)."""
        return self._sub("history")

    @property
    def release_state(self) -> str:
        """Fleet health notes, `state/health-<release id>.json` (the only mutable per-release data)."""
        return self._sub("state")

    def incoming_part(self, sha256: str) -> str:
        return self._sub("incoming", PurePosixPath(self.blob(sha256)).name + ".part")

    # -- names joined under the root -----------------------------------------------------------

    def runtime_for(self, name: str) -> str:
        return self._sub("runtime", check_name(name, "runtime name"))

    def runtime_marker(self, name: str) -> str:
        return self._sub("runtime", check_name(name, "runtime name"), ".deployer-sha256")

    def wheel(self, filename: str) -> str:
        return self._sub("wheels", check_name(filename, "wheel file name"))

    def model(self, filename: str) -> str:
        return self._sub("models", check_name(filename, "model file name"))

    def release(self, release_id: str) -> str:
        return self._sub("releases", check_name(release_id, "release id"))

    def blob(self, sha256: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            raise DeployerError(f"blob name {sha256!r} is not a sha256")
        return self._sub("blobs", sha256)

    def under(self, *names: str) -> str:
        """A path under the root from several user-provided names, each checked like check_name."""
        return self._sub(*(check_name(n, "remote name") for n in names))

    def contains(self, path: str) -> bool:
        """True if `path` (as built by this layout or given by a caller) lies inside the root."""
        p = PurePosixPath(path)
        if ".." in p.parts:
            return False
        root = PurePosixPath(self.root)
        if str(root) == ".":
            return not p.is_absolute()
        return p == root or root in p.parents

    def temp_folders(self) -> list[str]:
        """Folders the stale-temp sweep looks in (not recursive): where uploads and unpacks put
        their temp files. deployer.fleet appends its own folders."""
        return [self.root, self.bin, self.models, self.wheels, self.runtime, self.tmp, self.releases, self.blobs]


__all__ = [
    "BoardLayout", "DEFAULT_ROOT", "LOCK_NAME", "OLD_MARK", "PART_MARK", "TMP_MARK", "arg", "check_name",
    "check_root", "host_tag", "part_prefix", "temp_name",
]
