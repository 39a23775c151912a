"""Debian bookworm ARM sysroots built without emulation, then made SSH-able with host tools.

debootstrap runs every maintainer script under qemu (about 4 minutes per arch); resolving the
package closure with a private apt state, `apt-get download`ing it and unpacking each .deb takes
seconds. Nothing here touches the host's dpkg database or architecture list. Because no maintainer
script runs, `prepare_for_ssh` does their work: users, sshd config, /bin/sh.

The result is cached under `$DEPLOYER_CACHE/sysroots/<arch>` and shared read-only by every board
(each board writes into its own overlay upper dir).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deployer.errors import DeployerError
from deployer.fsutil import write_text
from deployer.sim.paths import sysroots_dir

ARCHES = ("arm64", "armhf")
SUITES = {"bookworm", "bookworm-updates", "bookworm-security"}

# What a minimal Raspberry-Pi-like Debian needs for deployer: an sshd + sftp, python3, a C++ runtime
# for the ncnn wheel, a shell, and the usual tools. NOT ncnn and NOT numpy: deployer provisions the
# ncnn wheel itself and its runner is numpy-free.
PACKAGES = (
    "python3", "openssh-server", "openssh-sftp-server", "libstdc++6", "bash", "dash", "coreutils",
    "base-files", "base-passwd", "procps", "grep", "sed", "findutils", "gzip", "tar", "util-linux",
    "login", "passwd", "hostname", "iproute2", "libc-bin",
)
FORMAT = 2  # bump when the build or preparation changes, so old caches are rebuilt
STAMP = ".deployer-sysroot.json"

PI_UID = 1000
SSHD_UID = 100

Progress = Callable[[str, int, int], None]


@dataclass
class SysrootInfo:
    arch: str
    path: Path
    packages: int
    cached: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)


def sysroot_path(arch: str) -> Path:
    return sysroots_dir() / arch


def is_current(path: Path) -> bool:
    stamp = path / STAMP
    try:
        meta = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and meta.get("packages") == list(PACKAGES)


def ensure_sysroot(arch: str, progress: Progress | None = None) -> SysrootInfo:
    """Return the cached sysroot for `arch`, building it first if it is missing or outdated."""
    if arch == "host":  # light boards run the host's own userland (deployer.sim.hostboard)
        return SysrootInfo("host", Path("/"), 0, True, 0.0)
    if arch not in ARCHES:
        raise DeployerError(f"--arch {arch!r} is not supported; use one of: {', '.join(ARCHES)}")
    dest = sysroot_path(arch)
    if is_current(dest):
        meta = json.loads((dest / STAMP).read_text())
        return SysrootInfo(arch, dest, int(meta.get("debs", 0)), True, 0.0)
    root = sysroots_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{arch}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per arch; a second one waits and finds it built
        if is_current(dest):
            return SysrootInfo(arch, dest, int(json.loads((dest / STAMP).read_text()).get("debs", 0)), True, 0.0)
        return _build(arch, root, dest, progress)


def _build(arch: str, root: Path, dest: Path, progress: Progress | None) -> SysrootInfo:
    start = time.monotonic()
    build = root / f".build-{arch}-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    warnings: list[str] = []
    try:
        debs = download_closure(arch, root / f".apt-{arch}", progress, warnings)
        extract_debs(debs, build, progress)
        prepare_for_ssh(build)
        write_text(build / STAMP, json.dumps(
            {"format": FORMAT, "arch": arch, "packages": list(PACKAGES), "debs": len(debs),
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
        if dest.exists():  # outdated format or package list
            dest.rename(root / f".old-{arch}-{int(time.time())}")
        build.rename(dest)
        _remove_old_trees(root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return SysrootInfo(arch, dest, len(debs), False, time.monotonic() - start, warnings)


def _remove_old_trees(root: Path) -> None:
    """Replaced sysroots may still be the lower dir of running boards: delete them only when none runs."""
    if any(ns.name.startswith("dsim-") for ns in Path("/run/netns").glob("*")):
        return
    for old in root.glob(".old-*"):
        shutil.rmtree(old, ignore_errors=True)


# --- apt with a private state --------------------------------------------------------------------

def debian_sources(arch: str, apt: Path = Path("/etc/apt")) -> str:
    """The machine's own Debian bookworm sources as one deb822 file restricted to `arch`.

    Third-party repositories in the host's lists (amd64-only, other suites) are left out, so they
    cannot break or pollute the foreign-architecture resolution.
    """
    stanzas: list[dict[str, str]] = []
    files = [apt / "sources.list"] + sorted((apt / "sources.list.d").glob("*.list"))
    for f in files:
        if f.is_file():
            stanzas += _parse_one_line(f.read_text())
    for f in sorted((apt / "sources.list.d").glob("*.sources")):
        stanzas += _parse_deb822(f.read_text())
    out = []
    for st in stanzas:
        if "deb" not in st.get("Types", "").split() or st.get("Enabled", "yes") == "no":
            continue
        suites = [s for s in st.get("Suites", "").split() if s in SUITES]
        if not suites or "main" not in st.get("Components", "").split():
            continue
        lines = ["Types: deb", f"URIs: {st['URIs']}", f"Suites: {' '.join(suites)}",
                 "Components: main", f"Architectures: {arch}"]
        if st.get("Signed-By"):
            lines.append(f"Signed-By: {st['Signed-By']}")
        out.append("\n".join(lines))
    if not out:
        raise DeployerError(
            f"{apt}/sources.list(.d): no Debian bookworm 'main' source found; the sim sysroot is "
            "built from the machine's own Debian mirror (add e.g. 'deb http://deb.debian.org/debian "
            "bookworm main')")
    return "\n\n".join(out) + "\n"


def _parse_deb822(text: str) -> list[dict[str, str]]:
    stanzas, cur, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line
        elif ":" in line:
            key, _, val = line.partition(":")
            cur[key.strip()] = val.strip()
    return stanzas


def _parse_one_line(text: str) -> list[dict[str, str]]:
    stanzas = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^(deb|deb-src)\s+(\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.+)$",
                     line)
        if not m:
            continue
        st = {"Types": m.group(1), "URIs": m.group("uri"), "Suites": m.group("suite"),
              "Components": m.group("comps")}
        for opt in (m.group("opts") or "").split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                st["Signed-By"] = v
        stanzas.append(st)
    return stanzas


def _apt_options(state: Path, arch: str) -> list[str]:
    opts = {
        "Dir::State": state, "Dir::State::Lists": state / "lists", "Dir::State::status": state / "status",
        "Dir::Cache": state, "Dir::Cache::archives": state / "archives",
        "Dir::Etc::SourceList": state / "sources.list", "Dir::Etc::SourceParts": state / "sources.list.d",
        "Dir::Etc::PreferencesParts": state / "preferences.d", "Dir::Etc::Preferences": state / "preferences",
        "APT::Architecture": arch, "APT::Architectures::": arch, "Debug::NoLocking": "1",
        "APT::Install-Recommends": "0", "APT::Install-Suggests": "0", "APT::Sandbox::User": "root",
    }
    return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]


def download_closure(arch: str, state: Path, progress: Progress | None, warnings: list[str]) -> list[Path]:
    """Resolve and download the dependency closure of PACKAGES for `arch`; returns the .deb files.

    A mirror that serves a stale index for one suite (bookworm-security during a sync) fails
    `apt-get update`; as long as the base bookworm index arrived, the build goes on with the
    packages it has and says so in `warnings`.
    """
    for d in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    (state / "sources.list").write_text("")
    (state / "sources.list.d" / "debian.sources").write_text(debian_sources(arch))
    for old in (state / "archives").glob("*.deb"):
        old.unlink()
    opts = _apt_options(state, arch)
    if progress:
        progress(f"{arch}: apt-get update", 0, 1)
    res = _apt(["apt-get", *opts, "-q", "update"])
    failed = sorted({ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Err:")})
    if res.returncode != 0 or failed:
        if not list((state / "lists").glob(f"*_dists_bookworm_main_binary-{arch}_Packages*")):
            _fail(res, f"apt-get update for the {arch} sysroot")
        warnings += [f"apt-get update ({arch}): {ln.split(' ', 1)[1].strip()} failed; using the other indexes"
                     for ln in failed]
    install = ["install", *PACKAGES]
    on_fetch: Callable[[int], None] | None = None
    if progress:  # the count of files to fetch, from the same resolution the download will make
        plan = _apt(["apt-get", *opts, "-qq", "-y", "--print-uris", *install])
        if plan.returncode != 0:
            _fail(plan, f"resolving the {arch} packages")
        total = sum(1 for ln in plan.stdout.splitlines() if ln.startswith("'"))
        label = f"{arch}: downloading {total} packages"
        report = progress
        report(label, 0, total)
        on_fetch = lambda count: report(label, min(count, total), total)  # noqa: E731
    res = _apt(["apt-get", *opts, "-q", "-y", "--download-only", *install], on_fetch)
    if res.returncode != 0:
        _fail(res, f"downloading {arch} packages")
    debs = sorted((state / "archives").glob("*.deb"))
    if not debs:
        raise DeployerError(f"apt-get downloaded no {arch} packages into {state}/archives; check the Debian mirror")
    return debs


def extract_debs(debs: list[Path], dest: Path, progress: Progress | None) -> None:
    """Unpack every .deb into a merged-/usr tree (like a real bookworm install)."""
    (dest / "usr").mkdir(parents=True)
    for d in ("bin", "sbin", "lib"):
        (dest / "usr" / d).mkdir()
        (dest / d).symlink_to(f"usr/{d}")
    done = 0

    def one(deb: Path) -> None:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        res = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(dest)], stdin=tar.stdout,
                             capture_output=True, text=True)
        tar.stdout.close()  # type: ignore[union-attr]
        if tar.wait() != 0 or res.returncode != 0:
            raise DeployerError(f"{deb.name}: could not unpack into {dest}: {res.stderr.strip()[:200]}")

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for _ in pool.map(one, debs):
            done += 1
            if progress:
                progress(f"unpacking {len(debs)} packages", done, len(debs))


# --- what maintainer scripts would have done -------------------------------------------------------

SSHD_DROPIN = """\
# deployer sim: no PAM stack was configured (pam-auth-update never ran), key-only logins
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthenticationMethods publickey
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
"""


def prepare_for_ssh(root: Path) -> None:
    """Users (incl. `pi`, key-only), sshd config, /bin/sh and the small files postinst scripts make."""
    share = root / "usr/share"
    passwd = (share / "base-passwd/passwd.master").read_text().rstrip("\n").splitlines()
    group = (share / "base-passwd/group.master").read_text().rstrip("\n").splitlines()
    passwd += [f"sshd:x:{SSHD_UID}:65534::/run/sshd:/usr/sbin/nologin",
               f"pi:x:{PI_UID}:{PI_UID}:,,,:/home/pi:/bin/bash"]
    group = [_add_member(g, "pi", ("adm", "dialout", "audio", "video", "plugdev", "users")) for g in group]
    group.append(f"pi:x:{PI_UID}:")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    (root / "etc/group").write_text("\n".join(group) + "\n")
    # '*' (no password, NOT locked): with UsePAM no, sshd refuses '!'-locked accounts even for keys
    shadow = [f"{line.split(':')[0]}:*:19700:0:99999:7:::" for line in passwd]
    (root / "etc/shadow").write_text("\n".join(shadow) + "\n")
    os.chmod(root / "etc/shadow", 0o640)
    gshadow = [f"{line.split(':')[0]}:*::{line.split(':')[3]}" for line in group]
    (root / "etc/gshadow").write_text("\n".join(gshadow) + "\n")
    os.chmod(root / "etc/gshadow", 0o640)

    ssh = root / "etc/ssh"
    shutil.copy(share / "openssh/sshd_config", ssh / "sshd_config")
    (ssh / "sshd_config.d").mkdir(exist_ok=True)
    (ssh / "sshd_config.d/deployer-sim.conf").write_text(SSHD_DROPIN)
    for key in ssh.glob("ssh_host_*"):
        key.unlink()

    base = share / "base-files"
    for name in ("nsswitch.conf", "profile", "motd"):
        if (base / name).exists() and not (root / "etc" / name).exists():
            shutil.copy(base / name, root / "etc" / name)
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    if not (root / "bin/sh").exists():
        (root / "usr/bin/sh").symlink_to("dash")

    home = root / "home/pi"
    home.mkdir(parents=True)
    for f in (root / "etc/skel").glob(".*"):
        shutil.copy(f, home / f.name)
    for p in [home, *home.iterdir()]:
        os.chown(p, PI_UID, PI_UID)
    for d in ("var/log", "var/tmp", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)


def _add_member(line: str, user: str, groups: tuple[str, ...]) -> str:
    name, pw, gid, members = (line.split(":") + [""])[:4]
    if name not in groups:
        return line
    return f"{name}:{pw}:{gid}:{','.join(filter(None, [members, user]))}"


def _apt(argv: list[str], on_fetch: Callable[[int], None] | None = None) -> subprocess.CompletedProcess:
    """Run apt-get, reading its output as it comes: `on_fetch` gets the count of `Get:` lines (one per
    file fetched) so far. stderr goes to a file, so neither pipe can fill up and stall apt."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        out: list[str] = []
        fetched = 0
        for line in proc.stdout:  # type: ignore[union-attr]
            out.append(line)
            if on_fetch and line.startswith("Get:"):
                fetched += 1
                on_fetch(fetched)
        code = proc.wait()
        err.seek(0)
        return subprocess.CompletedProcess(argv, code, "".join(out), err.read())


def _fail(res: subprocess.CompletedProcess, what: str) -> None:
    lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.startswith("E:")] or \
        [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
    raise DeployerError(f"{what} failed (exit {res.returncode}): {lines[0] if lines else 'no output'}",
                        hint="check network access to the Debian mirror in /etc/apt/sources.list.d")
