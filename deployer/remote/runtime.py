"""The ncnn runtime a board runs: wheel choice, the host wheel cache, push + unpack on the board.

Why a host cache: boards often have no internet (or a slow one), and a run must never download
behind the user's back. `deployer runtime fetch` is the one command that touches the network; every
other path reads `$DEPLOYER_CACHE/wheels` and, when the wheel is missing, says exactly which fetch
command fills it.

Why the same ncnn version as the host by default: the host's cross-check and the board's run must
execute the same kernels' semantics, or "int8 differs on the board" becomes undiagnosable.

Why manylinux tags are matched by hand: the newest aarch64 ncnn wheels are tagged
`manylinux_2_28`, armv7l `manylinux_2_31`; a resolver that only offers `manylinux2014` silently
gets an old release. A wheel fits a board when the board's glibc is at least the tag's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from deployer import fsutil
from deployer.errors import DeployerError, RemoteError
from deployer.remote import board as board_scripts
from deployer.remote.layout import BoardLayout, arg

ARCHES = ("aarch64", "armv7l", "x86_64")
_ARCH_ALIASES = {"arm64": "aarch64", "armhf": "armv7l", "armv7": "armv7l", "armv8l": "armv7l",
                 "amd64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7l", "x86_64": "x86_64"}
DEFAULT_GLIBC = (2, 36)  # Debian 12 / Raspberry Pi OS bookworm
MIN_MANYLINUX_GLIBC = 17
_WHEEL_RE = re.compile(r"^(?P<name>ncnn)-(?P<version>[^-]+)-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_MANYLINUX_RE = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def normalize_arch(arch: str) -> str:
    norm = _ARCH_ALIASES.get(arch.strip().lower())
    if norm is None:
        raise DeployerError(f"architecture {arch!r} has no ncnn wheel; use one of {', '.join(ARCHES)}")
    return norm


def parse_python(version: str) -> tuple[int, int]:
    m = re.fullmatch(r"(?:cp)?3\.?(\d+)(?:\.\d+)*", version.strip())
    if not m:
        raise DeployerError(f"python version {version!r} is not like 3.11")
    return 3, int(m.group(1))


def parse_glibc(version: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    if not m:
        raise DeployerError(f"glibc version {version!r} is not like 2.36")
    return int(m.group(1)), int(m.group(2))


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+]", version))


@dataclass(frozen=True)
class WheelPlatform:
    """What a board's Python can load: interpreter version, userland arch, glibc."""

    arch: str
    python: tuple[int, int]
    glibc: tuple[int, int] = DEFAULT_GLIBC

    @property
    def python_tag(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def python_dotted(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    def manylinux_tags(self) -> list[str]:
        """Newest first, the tags pip would accept on this board (the explicit list avoids resolver
        surprises)."""
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(self.glibc[1], MIN_MANYLINUX_GLIBC - 1, -1)]
        tags += [f"{legacy}_{self.arch}" for legacy, glibc in _LEGACY_MANYLINUX.items() if glibc <= self.glibc]
        return tags

    def accepts(self, platform_tag: str) -> bool:
        m = _MANYLINUX_RE.match(platform_tag)
        if m:
            return m.group(3) == self.arch and (int(m.group(1)), int(m.group(2))) <= self.glibc
        legacy, _, arch = platform_tag.partition("_")
        glibc = _LEGACY_MANYLINUX.get(legacy)
        return glibc is not None and arch == self.arch and glibc <= self.glibc


@dataclass(frozen=True)
class Wheel:
    path: Path
    version: str
    python_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> "Wheel | None":
        m = _WHEEL_RE.match(path.name)
        if not m:
            return None
        return cls(path, m["version"], tuple(m["py"].split(".")), tuple(m["plat"].split(".")))

    def fits(self, platform: WheelPlatform) -> bool:
        return platform.python_tag in self.python_tags and any(platform.accepts(t) for t in self.platform_tags)

    @property
    def tag(self) -> str:
        """The folder-name tag on the board, e.g. cp311-manylinux_2_28_aarch64 (its newest platform)."""
        return f"{self.python_tags[0]}-{self.platform_tags[-1]}"

    @property
    def runtime_name(self) -> str:
        return f"ncnn-{self.version}-{self.tag}"

    def sha256(self) -> str:
        return fsutil.sha256_file(self.path, "ncnn wheel")

    def check_intact(self) -> None:
        """A truncated or overwritten cached wheel was uploaded, left on the board under its real
        name, and failed there as "unpacking ... failed: File is not a zip file" (blamed on the
        board, exit 3). Its zip directory (at the end of the file) is read on the host first."""
        import zipfile

        try:
            with zipfile.ZipFile(self.path) as zf:
                ok = any(n.startswith("ncnn/") for n in zf.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise DeployerError(f"cached wheel {self.path} is damaged ({err})",
                                hint="delete it and run deployer runtime fetch again") from None
        if not ok:
            raise DeployerError(f"cached wheel {self.path} holds no ncnn package",
                                hint="delete it and run deployer runtime fetch again")


def cache_dir() -> Path:
    return fsutil.cache_dir() / "wheels"


def host_ncnn_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("ncnn")
    except metadata.PackageNotFoundError:
        return None


def list_cached(cache: Path | None = None) -> list[Wheel]:
    folder = cache or cache_dir()
    if not folder.is_dir():
        return []
    wheels = [w for w in (Wheel.parse(p) for p in sorted(folder.glob("ncnn-*.whl"))) if w is not None]
    return sorted(wheels, key=lambda w: (_version_key(w.version), w.path.name), reverse=True)


def fetch_argv(platform: WheelPlatform, version: str | None, dest: Path) -> list[str]:
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--implementation", "cp", "--python-version", platform.python_dotted, "--dest", str(dest)]
    for tag in platform.manylinux_tags():
        argv += ["--platform", tag]
    return argv + [f"ncnn=={version}" if version else "ncnn"]


def fetch_hint(platform: WheelPlatform, version: str | None) -> str:
    """The exact command a user runs to fill the cache for this board."""
    parts = ["deployer", "runtime", "fetch", "--arch", platform.arch, "--python", platform.python_dotted]
    if platform.glibc != DEFAULT_GLIBC:
        parts += ["--glibc", f"{platform.glibc[0]}.{platform.glibc[1]}"]
    if version:
        parts += ["--version", version]
    return " ".join(parts)


def select_wheel(platform: WheelPlatform, version: str | None = None, cache: Path | None = None) -> Wheel:
    """The cached wheel for this board: `version` (default: the host's ncnn), or the newest that
    fits when version is 'latest'. Never downloads."""
    want = host_ncnn_version() if version is None else (None if version == "latest" else version)
    fitting = [w for w in list_cached(cache) if w.fits(platform)]
    if want is not None:
        fitting = [w for w in fitting if w.version == want]
    if fitting:
        return fitting[0]
    what = f"ncnn {want}" if want else "an ncnn wheel"
    raise DeployerError(
        f"no cached {what} for {platform.arch} / Python {platform.python_dotted} / glibc "
        f"{platform.glibc[0]}.{platform.glibc[1]} in {cache or cache_dir()}",
        hint=f"run: {fetch_hint(platform, want)}",
    )


def fetch_wheel(platform: WheelPlatform, version: str | None = None, cache: Path | None = None,
                run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Wheel:
    """Download once into the cache (pip download); a cached fit is returned without the network."""
    folder = cache or cache_dir()
    want = host_ncnn_version() if version is None else (None if version == "latest" else version)
    if want is not None:
        cached = [w for w in list_cached(folder) if w.fits(platform) and w.version == want]
        if cached:
            return cached[0]
    folder.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in folder.glob("*.whl")}
    proc = run(fetch_argv(platform, want, folder), capture_output=True, text=True)
    if proc.returncode != 0:
        last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "pip failed")
        raise DeployerError(f"pip download of ncnn{'==' + want if want else ''} for {platform.arch} / "
                            f"Python {platform.python_dotted} failed: {last.strip()}")
    new = [w for w in list_cached(folder) if w.fits(platform) and (want is None or w.version == want)]
    if not new:
        raise DeployerError(f"pip download finished but no fitting ncnn wheel is in {folder} "
                            f"(new files: {', '.join(sorted({p.name for p in folder.glob('*.whl')} - before)) or 'none'})")
    return new[0]


# ---------------------------------------------------------------- facts -> platform

def _fact(facts: Any, *names: str) -> Any:
    for name in names:
        value = facts.get(name) if isinstance(facts, dict) else getattr(facts, name, None)
        if value not in (None, ""):
            return value
    return None


def platform_from_facts(facts: Any, board: str = "board") -> WheelPlatform:
    """Board facts (deployer.remote.probe.BoardFacts or its dict) -> the wheel platform.

    The userland arch comes from the board's Python, not `uname -m`: 32-bit Pi OS runs a 64-bit kernel.
    """
    arch = _fact(facts, "wheel_arch", "arch", "machine")
    py = _fact(facts, "python_version", "python")
    glibc = _fact(facts, "glibc", "glibc_version", "libc_version")
    if not arch or not py:
        raise DeployerError(f"{board}: probe did not report the board's Python architecture/version; "
                            "is python3 installed on the board?")
    if not glibc:
        raise DeployerError(f"{board}: probe found no glibc; ncnn's manylinux wheels need a glibc userland")
    if isinstance(py, (tuple, list)):
        py = ".".join(str(p) for p in py[:2])
    return WheelPlatform(normalize_arch(str(arch)), parse_python(str(py)), parse_glibc(str(glibc)))


# ---------------------------------------------------------------- on the board

@dataclass(frozen=True)
class RuntimeInstall:
    """Where the board's ncnn lives (PYTHONPATH) and what provisioning had to do."""

    path: str
    version: str
    wheel: str
    uploaded: bool
    unpacked: bool


def ensure_runtime(conn: Any, wheel: Wheel, *, runtime_dir: str, python: str, board: str,
                   upload: Callable[..., Any], progress: Callable[..., Any] | None = None,
                   markers: dict[str, str | None] | None = None) -> RuntimeInstall:
    """Make `<runtime_dir>/runtime/ncnn-<version>-<tag>/` hold the wheel's files.

    Skips everything when the board already has it (sha256 marker written last, inside the temp dir,
    before the rename: a marker can only exist in a complete unpack). `markers` = the probe's
    `runtimes` (folder name -> marker): when it already shows this wheel, no remote command is needed.
    Temp folders start with '.', so a probe never mistakes them for runtimes; a failed unpack removes
    its own (deployer/remote/board/unpack.py), and the stale sweep under the board lock any others.
    Callers that change the board hold the board lock (deployer.remote.lock).
    """
    lay = BoardLayout(runtime_dir)
    dest = lay.runtime_for(wheel.runtime_name)
    remote_wheel = lay.wheel(wheel.path.name)
    sha = wheel.sha256()
    if markers and markers.get(wheel.runtime_name) == sha:
        return RuntimeInstall(dest, wheel.version, wheel.path.name, uploaded=False, unpacked=False)
    # a shell `cat`, not python: on slow or emulated boards a python start costs seconds
    check = conn.run(["sh", "-c", 'cat -- "$1" 2>/dev/null; exit 0', "sh", arg(lay.runtime_marker(wheel.runtime_name))],
                     timeout=120)
    if check.rc != 0:
        raise RemoteError(f"{board}: checking the ncnn runtime failed: {_last_line(check)}")
    if check.stdout.strip() == sha:
        return RuntimeInstall(dest, wheel.version, wheel.path.name, uploaded=False, unpacked=False)
    wheel.check_intact()
    result = upload(conn, wheel.path, remote_wheel, progress=progress)
    unpack = conn.run([python, "-c", board_scripts.script("unpack.py"), arg(remote_wheel), arg(dest), sha],
                      timeout=600)
    if unpack.rc != 0:
        words = unpack.stdout.split()
        if words[:2] == ["error", "nospace"]:
            free, need = (words[2:4] + ["-", "-"])[:2]
            detail = (f"board has {int(free) / 1e6:.1f} MB free in {lay.runtime}, needs {int(need) / 1e6:.1f} MB"
                      if free.isdigit() and need.isdigit() else f"the board's disk filled up in {lay.runtime}")
            raise RemoteError(f"{board}: cannot unpack {wheel.path.name}: {detail}; nothing was left behind",
                              hint="free space on the board or point runtime_dir at a bigger filesystem")
        raise RemoteError(f"{board}: unpacking {wheel.path.name} into {dest} failed: {_last_line(unpack)}")
    skipped = bool(getattr(result, "skipped", False))
    return RuntimeInstall(dest, wheel.version, wheel.path.name, uploaded=not skipped, unpacked=True)


def _last_line(result: Any) -> str:
    for stream in (result.stderr, result.stdout):
        text = stream.decode() if isinstance(stream, bytes) else (stream or "")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return f"exit code {result.rc}"


def describe(wheels: Sequence[Wheel]) -> list[dict[str, Any]]:
    return [{"file": w.path.name, "version": w.version, "python": list(w.python_tags),
             "platforms": list(w.platform_tags), "size": w.path.stat().st_size} for w in wheels]
