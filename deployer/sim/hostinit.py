"""PID 1 of a light board (deployer.sim.hostboard): its own home, /proc and hostname, then the host's
sshd. (/tmp stays the host's: the board's own files, config and host key may live under it.)

Started like deployer.sim.boardinit, inside `ip netns exec dsim-N unshare --mount --pid --fork --uts`,
so the mounts below exist only in the board's mount namespace and die with it; killing the
namespace's PID 1 (the sshd after the exec) kills every process of the board.
Runs with the host's Python; imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from deployer.sim.boardinit import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, mount


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    mount(cfg["home"], Path(cfg["mount_home"]), flags=MS_BIND)
    mount("proc", Path("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)   # this pid namespace's view
    socket.sethostname(cfg["hostname"])
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    sys.stdout.flush()
    os.execve(cfg["sshd"], [cfg["sshd"], "-D", "-e", "-f", cfg["sshd_config"]], env)


if __name__ == "__main__":
    main()
