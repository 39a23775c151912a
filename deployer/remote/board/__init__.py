"""Code that runs on boards, kept as real files (tested and linted like the rest), read at run time.

Each script is sent as the argument of `python3 -c` or `sh -c` (nothing is installed on the board
for it), with its inputs as separate, quoted argv words. Python scripts are stdlib-only and
Python 3.5-compatible (old Jetson/Pi OS images); sh scripts are POSIX sh (dash, busybox).

| file | job | caller |
|---|---|---|
| lock.sh / lock.py | hold the board lock (flock(1); python fcntl without it) for the life of the SSH channel | deployer.remote.lock |
| state.py / state.sh | sha256 of targets + best resumable partial + free space, before an upload | deployer.ssh.transfer |
| follow.py | hash temp files while they are uploaded, set their mode | deployer.ssh.transfer |
| verify.sh | the same after the upload, for boards without python | deployer.ssh.transfer |
| free.sh | free bytes in a folder (after a failed write) | deployer.ssh.transfer |
| unpack.py | unpack an ncnn wheel into a runtime folder, atomically | deployer.remote.runtime |
| probe.py | board facts as JSON | deployer.remote.probe |
| kill.sh | TERM then KILL a remote process group | deployer.ssh.connect |
| dispatch.sh | prologue: run the python version if the board has that python, else the sh code after it | deployer.ssh.transfer, deployer.remote.probe |
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def script(name: str) -> str:
    """The text of board script `name` (e.g. "lock.py")."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def path(name: str):
    """The script as a file on the host (tests run the python/sh scripts locally)."""
    return resources.files(__package__).joinpath(name)
