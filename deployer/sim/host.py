"""Host prerequisites for emulated boards: root, a few Debian packages, qemu binfmt handlers.

Each check fails with one line that says exactly what is missing and the command that fixes it;
`install_packages` and `ensure_binfmt` do the fixing when the user agreed (--install-deps or a
confirm on a tty).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deployer.errors import DeployerError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Binfmt:
    """A qemu-user binfmt_misc handler; `F` (fix-binary) lets chroots run ARM code with no qemu inside."""

    name: str
    magic: bytes
    interpreter: str
    mask: bytes = bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff")  # ELF ident + e_type + e_machine

BINFMTS = {
    "arm64": Binfmt("qemu-aarch64", bytes.fromhex("7f454c460201010000000000000000000200b700"),
                    "/usr/bin/qemu-aarch64-static"),
    "armhf": Binfmt("qemu-arm", bytes.fromhex("7f454c4601010100000000000000000002002800"),
                    "/usr/bin/qemu-arm-static"),
}

# command -> Debian package that provides it on the host
BASE_PACKAGES = {"qemu-user-static": "/usr/bin/qemu-aarch64-static", "binfmt-support": "/usr/sbin/update-binfmts",
                 "iproute2": "/usr/sbin/ip", "util-linux": "/usr/bin/unshare"}
SHAPER_PACKAGES = {"ethtool": "/usr/sbin/ethtool"}


def require_root(geteuid: Callable[[], int] = os.geteuid) -> None:
    if geteuid() != 0:
        raise DeployerError(
            "deployer sim needs root (network namespaces, mounts, binfmt_misc); run it as root, "
            "e.g. sudo deployer sim up")


def missing_packages(shaped: bool = False, installed: Callable[[str], bool] | None = None) -> list[str]:
    """Debian packages the simulator needs that are not installed (dpkg says so, or the tool is gone)."""
    wanted = dict(BASE_PACKAGES, **(SHAPER_PACKAGES if shaped else {}))
    check = installed or _package_installed
    return [pkg for pkg, tool in wanted.items() if not (check(pkg) and Path(tool).exists())]


def apt_command(packages: list[str]) -> str:
    return "apt-get update && apt-get install -y " + " ".join(shlex.quote(p) for p in packages)


def missing_packages_error(packages: list[str]) -> DeployerError:
    return DeployerError(
        f"deployer sim needs Debian packages that are not installed: {', '.join(packages)}; install them with: "
        f"{apt_command(packages)}  (or rerun with --install-deps)")


def install_packages(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "-q", "update"], ["apt-get", "-q", "-y", "install", *packages]):
        res = subprocess.run(argv, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeployerError(f"{' '.join(argv[:4])} failed (exit {res.returncode}): {last}")


def _package_installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return res.returncode == 0 and res.stdout.strip().endswith(" installed")


# --- binfmt_misc -------------------------------------------------------------------------------------

def binfmt_problem(arch: str, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why ARM binaries of `arch` would not run through qemu here, or None when they will."""
    fmt = BINFMTS[arch]
    if not (binfmt_dir / "register").exists():
        return f"binfmt_misc is not mounted at {binfmt_dir}"
    entry = binfmt_dir / fmt.name
    if not entry.exists():
        return f"no {fmt.name} binfmt handler is registered"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"the {fmt.name} binfmt handler is disabled"
    flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        return f"the {fmt.name} binfmt handler lacks the F (fix-binary) flag (flags: {flags or 'none'})"
    return None


def ensure_binfmt(arch: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Mount binfmt_misc and (re)register qemu for `arch` with flag F; idempotent."""
    if binfmt_problem(arch, binfmt_dir) is None:
        return
    fmt = BINFMTS[arch]
    if not (binfmt_dir / "register").exists():
        _quiet(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)])
    if binfmt_problem(arch, binfmt_dir) is not None:
        _quiet(["update-binfmts", "--enable", fmt.name])
    problem = binfmt_problem(arch, binfmt_dir)
    if problem and (binfmt_dir / "register").exists():
        entry = binfmt_dir / fmt.name
        if entry.exists():
            entry.write_text("-1")  # unregister the wrong one; ours below has F
        (binfmt_dir / "register").write_bytes(_register_line(fmt))
        problem = binfmt_problem(arch, binfmt_dir)
    if problem:
        raise DeployerError(
            f"cannot run {arch} binaries: {problem}; fix it with: "
            f"mount -t binfmt_misc binfmt_misc {binfmt_dir} && update-binfmts --enable {fmt.name}")


def _register_line(fmt: Binfmt) -> bytes:
    esc = lambda b: "".join(f"\\x{c:02x}" for c in b)  # noqa: E731
    return f":{fmt.name}:M::{esc(fmt.magic)}:{esc(fmt.mask)}:{fmt.interpreter}:F".encode()


def _quiet(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True)
