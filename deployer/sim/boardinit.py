"""PID 1 of an emulated board: assemble its filesystem, then become the board's own ARM sshd.

Started by deployer.sim.board as
    ip netns exec dsim-N unshare --mount --propagation private --pid --fork --uts --kill-child=SIGKILL \
        -- python -m deployer.sim.boardinit BOARD_DIR/init.json
so every mount below lives and dies with the board's mount namespace (nothing to unmount on the
host), and after the final exec the ARM sshd (run by qemu-user through binfmt) is PID 1: `ps -e` on
the board shows board processes only, and killing the namespace kills all of them.

Runs with the host's Python; must not import anything heavy.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 0x2, 0x4, 0x8, 0x1000, 0x4000
_libc = ctypes.CDLL(None, use_errno=True)
# character devices a board needs; bind-mounted one by one instead of exposing the host's /dev
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def mount(source: str, target: Path, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), str(target).encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}")


def assemble(cfg: dict) -> Path:
    root = Path(cfg["root"])
    mount("overlay", root, "overlay", 0,
          f"lowerdir={cfg['lower']},upperdir={cfg['upper']},workdir={cfg['work']}")
    mount("proc", root / "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount(cfg["cpuinfo"], root / "proc/cpuinfo", flags=MS_BIND)
    mount("sysfs", root / "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", root / "sys/firmware", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    dt = root / "sys/firmware/devicetree/base"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(cfg["model"].encode() + b"\0")

    dev = root / "dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=64k")
    for name in DEVICES:
        (dev / name).touch()
        mount(f"/dev/{name}", dev / name, flags=MS_BIND)
    (dev / "pts").mkdir()
    mount("devpts", dev / "pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620,gid=5")
    (dev / "ptmx").symlink_to("pts/ptmx")
    (dev / "shm").mkdir(mode=0o1777)
    os.chmod(dev / "shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        (dev / name).symlink_to(target)

    mount("tmpfs", root / "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    (root / "run/sshd").mkdir(mode=0o755)
    mount("tmpfs", root / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    socket.sethostname(cfg["hostname"])
    return root


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    root = assemble(cfg)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": cfg["qemu_cpu"],
           "LANG": "C.UTF-8"}
    # a fresh host key per board, made by the board's own (ARM) ssh-keygen into the overlay's upper dir
    subprocess.run(["chroot", str(root), "/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                    f"root@{cfg['hostname']}", "-f", "/etc/ssh/ssh_host_ed25519_key"], env=env, check=True)
    os.chroot(root)
    os.chdir("/")
    sys.stdout.flush()
    os.execve("/usr/sbin/sshd", ["/usr/sbin/sshd", "-D", "-e"], env)


if __name__ == "__main__":
    main()
