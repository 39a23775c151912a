"""Light emulated boards (`sim up --arch host`): the host's own userland, one sshd per board.

Why: a fleet of hundreds of qemu-user ARM boards does not fit on a 2-core machine (each ARM sshd
and python start costs emulated CPU seconds), but a fleet controller's job - connections, locks,
transfers, waves, failures - is the same against any sshd. A light board is the host's
/usr/sbin/sshd in the board's own network namespace (10.200.N.2, like the ARM boards), in its own
mount, pid and uts namespaces, where a per-board folder is bind-mounted over the login user's home
(deployer.sim.hostinit). Each board therefore has its own files, host key, hostname and process
table, and costs one sshd (a few MB) while idle. /tmp is the host's (shared).

The login user is `dsim` (created once: key-only, no password); its home on every board is that
board's `<board_dir>/home`.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deployer.errors import DeployerError
from deployer.fsutil import atomic_open
from deployer.sim.net import Slot

USER = "dsim"
HOME = Path("/home") / USER
SSHD = "/usr/sbin/sshd"
INIT_MODULE = "deployer.sim.hostinit"


def check_host() -> None:
    if not Path(SSHD).exists():
        raise DeployerError("light boards (--arch host) run the host's OpenSSH server, which is not installed; "
                            "install it with: apt-get update && apt-get install -y openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation folder


def ensure_user() -> tuple[int, int]:
    """The login user of light boards: key-only (password '*', not '!' which UsePAM=no treats as locked)."""
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        res = subprocess.run(["useradd", "-M", "-d", str(HOME), "-s", "/bin/sh", USER], capture_output=True, text=True)
        if res.returncode != 0:
            raise DeployerError(f"cannot create the light boards' login user {USER}: {res.stderr.strip()}") from None
        subprocess.run(["usermod", "-p", "*", USER], capture_output=True, check=False)
        pw = pwd.getpwnam(USER)
    HOME.mkdir(mode=0o755, exist_ok=True)   # the mount point; each board mounts its own home here
    return pw.pw_uid, pw.pw_gid


def prepare_host_board(board_dir: Path, slot: Slot, hostname: str, client_pub: str) -> tuple[Path, str]:
    """The board's home, host key and sshd config; returns (init config path, host public key line)."""
    check_host()
    uid, gid = ensure_user()
    shutil.rmtree(board_dir, ignore_errors=True)
    board_dir.mkdir(parents=True, mode=0o755)
    home = board_dir / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_text(client_pub + "\n")
    for p, mode in ((home, 0o755), (ssh, 0o700), (ssh / "authorized_keys", 0o600)):
        os.chown(p, uid, gid)
        p.chmod(mode)
    key = Ed25519PrivateKey.generate()
    with atomic_open(board_dir / "ssh_host_ed25519_key", "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()))
    (board_dir / "ssh_host_ed25519_key").chmod(0o600)     # sshd ignores a host key others can read
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    known = board_dir / "upper/etc/ssh/ssh_host_ed25519_key.pub"    # where start_board reads every board's key
    known.parent.mkdir(parents=True)
    known.write_text(pub + "\n")
    (board_dir / "sshd_config").write_text(
        f"ListenAddress {slot.board_addr}\nPort 22\nHostKey {board_dir / 'ssh_host_ed25519_key'}\nPidFile none\n"
        f"AuthorizedKeysFile {HOME}/.ssh/authorized_keys\nAllowUsers {USER}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\n"
        "StrictModes no\nSubsystem sftp internal-sftp\nMaxStartups 200:30:400\nMaxSessions 64\n"
        "ClientAliveInterval 15\nClientAliveCountMax 3\nLogLevel ERROR\n")
    config = board_dir / "init.json"
    config.write_text(json.dumps({"home": str(home), "mount_home": str(HOME), "hostname": hostname,
                                  "sshd": SSHD, "sshd_config": str(board_dir / "sshd_config")}))
    return config, " ".join(pub.split()[:2])
