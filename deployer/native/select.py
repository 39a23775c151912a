"""Which runtime a board runs (the static native runner or the Python wheel), and pushing the native one.

Targets YAML `runtime: native | python | auto` (default auto), overridable per run (`--runtime`):
- native: the static executable from `deployer runtime build` for the board's arch; never built
  here (a missing build is one line saying which command makes it).
- python: the ncnn wheel + runner.py (needs Python and a glibc that fits the wheel on the board).
- auto: native when a build for the board's arch is in the cache, else the wheel. A board without
  Python gets native or a clear error.
`--layers` needs the native benchmark flavour, so it always means native.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import DeployerError
from deployer.native import build as nb

RUNTIMES = ("auto", "native", "python")
_NATIVE_ARCH = {"arm64": "aarch64", "aarch64": "aarch64", "armhf": "armv7l", "armv7l": "armv7l"}


@dataclass(frozen=True)
class NativeInstall:
    """Where the board's native runner is; field names follow remote.runtime.RuntimeInstall so a
    push report or run result reads the same for both runtimes."""

    path: str            # the executable on the board
    version: str         # ncnn version it was built from
    wheel: str           # the binary's file name (the wheel's name for the python runtime)
    uploaded: bool
    unpacked: bool = False
    kind: str = "native"
    arch: str = ""
    build_key: str = ""
    flavour: str = "normal"   # normal | layers (NCNN_BENCHMARK)
    size: int = 0


def check_runtime(value: Any, where: str = "runtime") -> str:
    if value is None:
        return "auto"
    if not isinstance(value, str) or value.strip().lower() not in RUNTIMES:
        raise DeployerError(f"{where}: {value!r} is not one of {', '.join(RUNTIMES)}")
    return value.strip().lower()


def board_arch(facts: Any) -> str | None:
    """The native build arch for a board's userland (armhf userland on a 64-bit kernel = armv7l)."""
    arch = getattr(facts, "arch", None) if not isinstance(facts, dict) else facts.get("arch")
    return _NATIVE_ARCH.get(str(arch or ""))


def has_python(facts: Any) -> bool:
    py = getattr(facts, "python", None) if not isinstance(facts, dict) else facts.get("python")
    return bool(py)


def choose(board: Any, facts: Any, requested: str | None, *, layers: bool = False,
           version: str | None = None) -> tuple[str, nb.NativeBuild | None]:
    """('native', build) or ('python', None) for this board and run."""
    name = getattr(board, "name", "board")
    want = check_runtime(requested if requested is not None else getattr(board, "runtime", None),
                         f"board '{name}': runtime")
    arch = board_arch(facts)
    if layers and want == "python":
        raise DeployerError(f"board '{name}': --layers needs the native runtime (per-layer times come from its "
                            "NCNN_BENCHMARK build); drop --runtime python")
    if want == "python":
        return "python", None
    found = nb.find_build(arch, version, layers=layers) if arch else None
    if found is not None:
        return "native", found
    if want == "auto" and not layers and has_python(facts):
        return "python", None
    if arch is None:
        raise DeployerError(f"board '{name}': no native runtime for its userland "
                            f"({getattr(facts, 'arch', None) or 'unknown arch'}); native builds exist for "
                            "arm64 (aarch64) and armhf (armv7l)")
    flag = " --benchmark" if layers else ""
    why = "--layers needs" if layers else ("the board has no Python, so it needs" if not has_python(facts)
                                            else "runtime: native needs")
    raise DeployerError(f"board '{name}': {why} a native {arch} runtime"
                        f"{' with per-layer timing' if layers else ''}, and none is built",
                        hint=f"run: deployer runtime build --arch {arch}{flag}"
                             + (f" --ncnn-version {version}" if version else ""))


def push_native(session: Any, build: nb.NativeBuild, *, layers: bool, progress: Any, checksum: bool,
                extra: list[tuple[Path, str]]) -> tuple[NativeInstall, list[Any]]:
    """Upload the runner executable (skipped when the board has identical bytes) plus `extra` files
    in one transfer; returns the install and the transfer results of everything."""
    from deployer.ssh.transfer import upload_many

    local = build.layers if layers else build.runner
    if local is None or not local.is_file():
        raise DeployerError(f"native build {build.folder} has no {'layers ' if layers else ''}runner; "
                            f"run: deployer runtime build --arch {build.arch}{' --benchmark' if layers else ''}")
    name = f"{local.name}-{build.version}-{build.arch}-{build.key[:12]}"
    remote = session.layout.under("bin", name)       # deployer.remote.layout: checked names, no '-' options
    sent = upload_many(session.conn, [(local, remote), *[(p, r) for p, r in extra]], progress, checksum=checksum)
    install = NativeInstall(path=remote, version=build.version, wheel=name, uploaded=not sent[0].skipped,
                            arch=build.arch, build_key=build.key, flavour="layers" if layers else "normal",
                            size=local.stat().st_size)
    return install, sent


def native_argv(binary: str, python_argv: list[str], *, layers: bool) -> list[str]:
    """The native command: the wheel runner's argv (env PYTHONPATH=.. python -u runner.py FLAGS)
    with its interpreter part replaced by the executable; the flags are the same protocol."""
    if python_argv[:1] != ["env"] or len(python_argv) < 5 or python_argv[3] != "-u":
        raise DeployerError("internal: unexpected runner command layout")
    return [binary, *python_argv[5:], *(["--layers"] if layers else [])]
