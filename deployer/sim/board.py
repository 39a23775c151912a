"""One emulated board's life: overlay dirs and per-board config, start its namespaces, wait for its
sshd, stop it.

Board state lives in `<board_dir>/upper` (the overlay's upper dir over the shared read-only
sysroot), so a board starts clean when its dir is deleted and several boards share one sysroot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import DeployerError
from deployer.sim.net import Slot
from deployer.sim.paths import python_module_env
from deployer.sim.procs import ProcRef
from deployer.sim.profiles import BoardProfile
from deployer.sim.sysroot import PI_UID

READY_TIMEOUT = 60.0


@dataclass
class StartedBoard:
    unshare: ProcRef
    init: ProcRef
    host_key: str
    seconds: float


def prepare_board_dir(board_dir: Path, slot: Slot, profile: BoardProfile, hostname: str, sysroot: Path,
                      client_pub: str, lower: str | None = None) -> Path:
    """Fresh overlay dirs plus the files that make this board itself; returns the init config path.
    `lower` overrides the overlay lowerdir (deployer.sim.minimal: a Python-hiding layer over the sysroot)."""
    for what, path in (("sim state dir", board_dir), ("sysroot", sysroot)):
        if any(c in str(path) for c in ",:\\"):  # overlayfs mount options cannot carry these
            raise DeployerError(f"{what} {path}: overlayfs cannot use a path containing ',', ':' or '\\'; "
                                f"set DEPLOYER_SIM_DIR / DEPLOYER_CACHE to a plain path")
    shutil.rmtree(board_dir, ignore_errors=True)
    for d in ("upper", "work", "root"):
        (board_dir / d).mkdir(parents=True, mode=0o755)
    upper = board_dir / "upper"
    (board_dir / "cpuinfo").write_text(profile.cpuinfo(slot.n))
    _write(upper / "etc/hostname", f"{hostname}\n")
    _write(upper / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
                                "::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    # sshd clears the environment of sessions; SetEnv is what makes user processes emulate the board's core.
    # Each connection's sshd child takes ~0.3 s to start under emulation, so bursts of connections pile
    # up as "unauthenticated": the default MaxStartups 10:30:100 would start resetting them.
    _write(upper / "etc/ssh/sshd_config.d/zz-board.conf",
           f"ListenAddress {slot.board_addr}\nSetEnv QEMU_CPU={profile.qemu_cpu}\nMaxStartups 100:30:200\n")
    ssh_dir = upper / "home/pi/.ssh"
    ssh_dir.mkdir(parents=True)
    (upper / "home").chmod(0o755)
    _write(ssh_dir / "authorized_keys", client_pub + "\n")
    for p, mode in ((upper / "home/pi", 0o755), (ssh_dir, 0o700), (ssh_dir / "authorized_keys", 0o600)):
        os.chown(p, PI_UID, PI_UID)
        p.chmod(mode)
    config = board_dir / "init.json"
    config.write_text(json.dumps({
        "root": str(board_dir / "root"), "lower": lower or str(sysroot), "upper": str(upper),
        "work": str(board_dir / "work"), "cpuinfo": str(board_dir / "cpuinfo"), "model": profile.model,
        "hostname": hostname, "qemu_cpu": profile.qemu_cpu}))
    return config


def start_board(name: str, slot: Slot, board_dir: Path, config: Path, log: Path,
                timeout: float = READY_TIMEOUT, init_module: str = "deployer.sim.boardinit") -> StartedBoard:
    """Launch the board's namespaces and ARM sshd; return once the sshd answers with its banner.

    `log` (the sshd's stderr) lives outside `board_dir`, so it survives a failed start for diagnosis.
    """
    t0 = time.monotonic()
    argv = ["ip", "netns", "exec", slot.netns, "unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--uts", "--kill-child=SIGKILL", "--", sys.executable, "-m", init_module, str(config)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, cwd="/",
                                start_new_session=True, env=python_module_env())
    unshare = ProcRef.of(proc.pid)
    init: ProcRef | None = None
    try:
        deadline = t0 + timeout
        while True:
            if init is None and unshare.children():
                init = ProcRef.of(unshare.children()[0])
            if proc.poll() is not None:
                raise DeployerError(f"board {name}: its sshd exited during start ({_last_line(log)}); "
                                    f"full log: {log}")
            if init is not None and sshd_answers(slot.board_addr, timeout=1.0):
                break
            if time.monotonic() > deadline:
                raise DeployerError(f"board {name}: sshd on {slot.board_addr}:22 did not answer within "
                                    f"{timeout:.0f} s ({_last_line(log)}); full log: {log}")
            time.sleep(0.05)
        key_file = board_dir / "upper/etc/ssh/ssh_host_ed25519_key.pub"
        host_key = " ".join(key_file.read_text().split()[:2])
    except BaseException:
        stop_board(unshare, init)
        proc.wait()
        raise
    return StartedBoard(unshare, init, host_key, time.monotonic() - t0)


def stop_board(unshare: ProcRef, init: ProcRef | None) -> bool:
    """Stop a board; True when none of its processes is left.

    `unshare --fork` blocks SIGTERM, so TERM goes to the namespace's PID 1 (sshd, which exits), and
    if unshare is still there, KILL it: --kill-child then kills PID 1, and a dying pid namespace
    takes every other board process with it.
    """
    for pid in unshare.children() if unshare.alive() else []:
        ProcRef.of(pid).signal(signal.SIGTERM)
    if init is not None:
        init.signal(signal.SIGTERM)
    if not unshare.wait_gone(3.0):
        unshare.signal(signal.SIGKILL)
    gone = unshare.wait_gone(3.0)
    if init is not None:
        if not init.wait_gone(1.0):
            init.signal(signal.SIGKILL)
        gone = init.wait_gone(3.0) and gone
    return gone


def sshd_answers(address: str, port: int = 22, timeout: float = 2.0) -> bool:
    """A TCP connect that gets an SSH banner back: the board's sshd is really serving."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"
