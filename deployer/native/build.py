"""Cross-build ncnn + deployer's C++ runner into one static executable per board arch.

Why it is built this way:
- Static (glibc, libstdc++, ncnn's own simple OpenMP): the binary runs on any Linux userland of its
  arch, old (JetPack 4, glibc 2.27) or without Python and without a libc at all.
- ncnn's runtime CPU dispatch stays on, so one aarch64 binary picks the fp16/dotprod/i8mm kernels
  on ARMv8.2+ cores and the plain NEON ones on a Cortex-A72 - the same choice the wheel makes.
- Only what a runner needs is compiled: no Vulkan, tools, examples, tests, Python, pixel helpers
  or C API. The layer set is ncnn's default, so any model the wheel loads, the runner loads.
- The benchmark flavour (per-layer times, NCNN_BENCHMARK) differs from the normal library in one
  translation unit, net.cpp: it is recompiled against a platform.h with NCNN_BENCHMARK=1 and
  swapped into a copy of libncnn.a, so the second flavour costs seconds instead of a full build.
  The runner's layers build supplies ncnn::benchmark() itself and records times in memory.
- ccache (when installed) keeps rebuilds after a cache wipe or a flag change cheap; base_dir is the
  native cache folder so object hashes do not depend on where that folder is.
- Everything is keyed by ncnn version + arch + flags + toolchain + runner source, under
  $DEPLOYER_CACHE/native; `deployer run` only ever reads a finished build, never builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.native import source

HERE = Path(__file__).resolve().parent
RUNNER_SOURCE = HERE / "runner.cpp"
RUNNER_NAME = "deployer-runner"
LAYERS_NAME = "deployer-runner-layers"
RECIPE = 1  # bump when the build steps change in a way the flags below do not show


@dataclass(frozen=True)
class Toolchain:
    arch: str            # deployer's arch name (the wheel's): aarch64 | armv7l
    triple: str          # Debian cross compiler prefix
    cmake_file: str      # file in deployer/native/toolchains
    debian_package: str  # apt package with the compiler

    @property
    def cxx(self) -> str:
        return f"{self.triple}-g++"

    @property
    def tool(self) -> Callable[[str], str]:
        return lambda name: f"{self.triple}-{name}"

    def cmake_path(self) -> Path:
        return HERE / "toolchains" / self.cmake_file

    def march_flags(self) -> list[str]:
        """The -m flags of the toolchain file (the runner is compiled with the same)."""
        text = self.cmake_path().read_text()
        m = re.search(r'set\(CMAKE_CXX_FLAGS "([^"]*)"\)', text)
        return shlex.split(m.group(1)) if m else []


TOOLCHAINS = {
    "aarch64": Toolchain("aarch64", "aarch64-linux-gnu", "aarch64-linux-gnu.cmake", "g++-aarch64-linux-gnu"),
    "armv7l": Toolchain("armv7l", "arm-linux-gnueabihf", "arm-linux-gnueabihf.cmake", "g++-arm-linux-gnueabihf"),
}
_ALIASES = {"arm64": "aarch64", "aarch64": "aarch64", "armhf": "armv7l", "armv7l": "armv7l", "armv7": "armv7l"}

# What is switched off is never needed by a runner; what stays on is ncnn's default (same kernels
# and layers as the wheel). RTTI/exceptions stay on like the wheel's build.
CMAKE_OPTIONS = {
    "CMAKE_BUILD_TYPE": "Release",
    "NCNN_VULKAN": "OFF",
    "NCNN_OPENMP": "ON",
    "NCNN_SIMPLEOMP": "ON",
    "NCNN_SHARED_LIB": "OFF",
    "NCNN_RUNTIME_CPU": "ON",
    "NCNN_BUILD_TOOLS": "OFF",
    "NCNN_BUILD_EXAMPLES": "OFF",
    "NCNN_BUILD_TESTS": "OFF",
    "NCNN_BUILD_BENCHMARK": "OFF",
    "NCNN_PYTHON": "OFF",
    "NCNN_PIXEL": "OFF",
    "NCNN_PIXEL_ROTATE": "OFF",
    "NCNN_PIXEL_AFFINE": "OFF",
    "NCNN_PIXEL_DRAWING": "OFF",
    "NCNN_C_API": "OFF",
    "NCNN_INSTALL_SDK": "OFF",
    "NCNN_DISABLE_RTTI": "OFF",
    "NCNN_DISABLE_EXCEPTION": "OFF",
    "CMAKE_EXE_LINKER_FLAGS": "-static",
}
RUNNER_FLAGS = ["-O2", "-std=c++11", "-Wall"]


def toolchain(arch: str) -> Toolchain:
    key = _ALIASES.get(arch.strip().lower())
    if key is None:
        raise DeployerError(f"--arch {arch!r}: native runtimes are built for aarch64 (arm64) and armv7l (armhf)")
    return TOOLCHAINS[key]


@dataclass
class NativeBuild:
    """A finished build in the cache: what `deployer run` pushes to a board."""

    version: str
    arch: str
    key: str
    folder: Path
    runner: Path
    layers: Path | None
    size: int
    layers_size: int | None = None
    times_s: dict[str, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("folder", "runner", "layers"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


# ---------------------------------------------------------------- keys and cache layout

def _compiler_version(tc: Toolchain) -> str:
    exe = shutil.which(tc.cxx)
    if exe is None:
        raise DeployerError(f"no {tc.cxx} on this machine: the {tc.arch} runtime needs Debian's cross compiler",
                            hint=f"apt-get install {tc.debian_package} (scripts/setup.sh does this)")
    out = subprocess.run([exe, "-dumpfullversion"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def lib_key(version: str, tc: Toolchain, compiler: str) -> str:
    """What the ncnn library depends on: version, arch, options, toolchain file, compiler."""
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": RECIPE, "version": version, "arch": tc.arch, "options": CMAKE_OPTIONS,
                         "compiler": compiler}, sort_keys=True).encode())
    h.update(tc.cmake_path().read_bytes())
    return h.hexdigest()[:16]


def runner_source_sha() -> str:
    """The runner source a build was linked from, recorded in its manifest: the runner's flags are a
    protocol with deployer.remote.session, so only builds of this very source are used."""
    return hashlib.sha256(RUNNER_SOURCE.read_bytes()).hexdigest()[:16]


def runtime_key(lkey: str) -> str:
    """Library key + runner source + runner flags: the folder of the finished executables."""
    h = hashlib.sha256()
    h.update(lkey.encode())
    h.update(RUNNER_SOURCE.read_bytes())
    h.update(" ".join(RUNNER_FLAGS).encode())
    return h.hexdigest()[:16]


def runtimes_dir() -> Path:
    return source.native_cache() / "runtimes"


def build_dir(version: str, tc: Toolchain, lkey: str) -> Path:
    # two levels under the native cache, like every build dir, so ccache's base_dir-relative paths match
    return source.native_cache() / "build" / f"ncnn-{version}-{tc.arch}-{lkey}"


def damage(path: Path, size: int | None) -> str | None:
    """Why a cached executable cannot be shipped (None: it can).

    A truncated or overwritten runner was uploaded over the board's good one and died there with no
    exit status, which read as a board failure (exit 3); the manifest's size and the ELF magic catch
    it on the host."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            actual = os.fstat(fh.fileno()).st_size
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if head != b"\x7fELF":
        return "not an ELF executable"
    if size is not None and actual != size:
        return f"{actual} bytes where its manifest says {size}"
    return None


def find_build(arch: str, version: str | None = None, *, layers: bool = False,
               strict: bool = True) -> NativeBuild | None:
    """The newest finished build of this runner source for arch (and version), or None. Never builds.

    `strict`: a damaged cached executable is one line saying how to rebuild it (when no intact build
    is left), not something to push; build() passes False to rebuild it."""
    tc = toolchain(arch)
    folder = runtimes_dir()
    if not folder.is_dir():
        return None
    found = []
    damaged: list[str] = []
    this_source = runner_source_sha()
    for manifest in folder.glob(f"*/{tc.arch}/*/manifest.json"):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):      # a JSON list or string here was an AttributeError (exit 4)
            continue
        if version is not None and data.get("version") != version:
            continue
        if data.get("runner_source") != this_source:
            # built from another runner.cpp (an older deployer): its flags may differ from the ones
            # this session sends (`--lease` made every such run a UsageError on the board)
            continue
        b = _from_manifest(manifest.parent, data)
        if b is None or not b.runner.is_file() or (layers and (b.layers is None or not b.layers.is_file())):
            continue
        why = [f"{p}: {w}" for p, n in ((b.runner, b.size), (b.layers if layers else None, b.layers_size))
               if p is not None and (w := damage(p, n))]
        if why:
            damaged += why
            continue
        found.append((manifest.stat().st_mtime, b))
    if not found:
        if damaged and strict:
            raise DeployerError(f"the cached native {tc.arch} runtime is damaged ({damaged[0]})",
                                hint=f"rebuild it: deployer runtime build --arch {tc.arch}"
                                     + (" --benchmark" if layers else ""))
        return None
    current = [b for _, b in found if b.key == _current_key(tc, b.version)]
    return current[0] if current else max(found, key=lambda t: t[0])[1]


def _current_key(tc: Toolchain, version: str) -> str | None:
    try:
        return runtime_key(lib_key(version, tc, _compiler_version(tc)))
    except DeployerError:
        return None  # no cross compiler on this machine: any finished build of this runner source will do


def _from_manifest(folder: Path, data: dict) -> NativeBuild | None:
    try:
        layers = folder / LAYERS_NAME if data.get("layers_size") else None
        return NativeBuild(version=data["version"], arch=data["arch"], key=data["key"], folder=folder,
                           runner=folder / RUNNER_NAME, layers=layers, size=int(data["size"]),
                           layers_size=data.get("layers_size"), times_s=data.get("times_s", {}),
                           flags=data.get("flags", {}))
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------- the build

Progress = Callable[[str, int, int], None]


def _run(argv: list[str], cwd: Path, log: Path, env: dict[str, str], what: str,
         progress: Progress | None = None) -> None:
    """Run one build step niced (the machine is shared), its output appended to the build log.

    The step runs in a process group of its own that goes down with this call when it is interrupted
    or fails: on SIGTERM (deployer's own pid: timeout(1), a cancelled CI job) ninja and its compilers
    used to go on building in the background for many minutes."""
    with open(log, "a") as fh:
        fh.write("$ " + shlex.join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(["nice", "-n", "19", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert proc.stdout is not None
        try:
            for line in iter(proc.stdout.readline, ""):
                fh.write(line)
                fh.flush()
                m = re.match(r"^\[(\d+)/(\d+)\]", line)
                if m and progress is not None:
                    progress(what, int(m.group(1)), int(m.group(2)))
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    if rc != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise DeployerError(f"{what} failed (exit {rc}): {' | '.join(tail)[-400:]}", hint=f"full log: {log}")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL if it is still there after 10 s. SIGTERM first:
    ninja and the compilers then remove the outputs they were writing (a killed compiler can leave a
    truncated object file that looks up to date to the next build)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(source.native_cache() / "ccache"))
    env.setdefault("CCACHE_BASEDIR", str(source.native_cache()))
    env.setdefault("CCACHE_NOHASHDIR", "1")
    env.setdefault("CCACHE_MAXSIZE", "3G")
    env["LC_ALL"] = "C"
    return env


def _jobs() -> int:
    return max(1, min(os.cpu_count() or 1, int(os.environ.get("DEPLOYER_BUILD_JOBS", "0") or 0) or os.cpu_count() or 1))


def build_library(version: str, tc: Toolchain, compiler: str, log: Path, progress: Progress | None = None
                  ) -> tuple[Path, dict[str, float]]:
    """Configure + compile libncnn.a (skipped when the build dir already has it)."""
    src = source.extract_sdist(version)
    lkey = lib_key(version, tc, compiler)
    bdir = build_dir(version, tc, lkey)
    lib = bdir / "src" / "libncnn.a"
    times: dict[str, float] = {}
    if lib.is_file() and (bdir / ".deployer-done").is_file():
        return bdir, times
    bdir.mkdir(parents=True, exist_ok=True)
    env = _env()
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise DeployerError(f"no {tool} on this machine: building the native runtime needs it",
                                hint="apt-get install cmake ninja-build (scripts/setup.sh does this)")
    argv = ["cmake", "-G", "Ninja", "-S", str(src), "-B", str(bdir),
            f"-DCMAKE_TOOLCHAIN_FILE={tc.cmake_path()}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    if shutil.which("ccache"):
        argv += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    argv += [f"-D{k}={v}" for k, v in CMAKE_OPTIONS.items()]
    t = time.monotonic()
    _run(argv, bdir, log, env, f"cmake configure ({tc.arch})")
    times["configure"] = time.monotonic() - t
    t = time.monotonic()
    _run(["ninja", "-j", str(_jobs()), "ncnn"], bdir, log, env, f"ncnn {version} for {tc.arch}", progress)
    times["library"] = time.monotonic() - t
    (bdir / ".deployer-done").write_text(lkey + "\n")
    return bdir, times


def _compile_command(bdir: Path, suffix: str) -> list[str]:
    """ncnn's own compile command for one source file (compile_commands.json), as argv."""
    entries = json.loads((bdir / "compile_commands.json").read_text())
    for e in entries:
        if e["file"].endswith(suffix):
            return shlex.split(e["command"]) if "command" in e else list(e["arguments"])
    raise DeployerError(f"{bdir}: no compile command for {suffix}")


def build_layers_library(bdir: Path, tc: Toolchain, log: Path) -> Path:
    """libncnn.a with net.cpp recompiled under NCNN_BENCHMARK=1 (the only file the option changes
    on CPU: command.cpp is Vulkan-only, benchmark.cpp's printers are replaced by the runner's)."""
    out = bdir / "layers"
    lib = out / "libncnn.a"
    if lib.is_file():
        return lib
    tmp = bdir / f".layers.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:       # a failed or interrupted build used to leave this folder (a copy of libncnn.a) in the cache
        (tmp / "overlay").mkdir(parents=True)
        platform_h = (bdir / "src" / "platform.h").read_text()
        bench_h, n = re.subn(r"#define NCNN_BENCHMARK 0", "#define NCNN_BENCHMARK 1", platform_h)
        if n != 1:
            raise DeployerError(f"{bdir}/src/platform.h has no '#define NCNN_BENCHMARK 0' line; unknown ncnn layout")
        (tmp / "overlay" / "platform.h").write_text(bench_h)
        argv = _compile_command(bdir, "/src/net.cpp")
        if argv and os.path.basename(argv[0]) == "ccache":
            argv = argv[1:]
        o = argv.index("-o")
        argv[o + 1] = str(tmp / "net.cpp.o")  # same member name as in libncnn.a, so `ar r` replaces it
        argv.insert(1, f"-I{tmp / 'overlay'}")
        _run(argv, bdir, log, _env(), f"net.cpp with NCNN_BENCHMARK ({tc.arch})")
        shutil.copy2(bdir / "src" / "libncnn.a", tmp / "libncnn.a")
        _run([tc.tool("ar"), "r", str(tmp / "libncnn.a"), str(tmp / "net.cpp.o")], bdir, log, _env(),
             "ar (layers library)")
        members = subprocess.run([tc.tool("ar"), "t", str(tmp / "libncnn.a")], capture_output=True, text=True).stdout
        if members.split().count("net.cpp.o") != 1:
            raise DeployerError(f"{bdir}: the layers library does not hold exactly one net.cpp.o")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


def link_program(bdir: Path, tc: Toolchain, version: str, sources: list[Path], out: Path, log: Path, *,
                 lib: Path | None = None, defines: dict[str, str] | None = None, strip: bool = True) -> Path:
    """Compile + statically link C++ sources against a finished libncnn.a (the runner, or a
    benchmark baseline built by the very same recipe)."""
    src = source.extract_sdist(version) / "src"
    argv = [tc.cxx, *tc.march_flags(), *RUNNER_FLAGS, f"-I{src}", f"-I{bdir / 'src'}",
            f"-DRUNNER_NCNN_VERSION=\"{version}\""]
    for k, v in (defines or {}).items():
        argv.append(f"-D{k}={v}")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    argv += [str(s) for s in sources] + [str(lib or bdir / "src" / "libncnn.a"), "-static", "-pthread", "-o", str(tmp)]
    try:
        _run(argv, bdir, log, _env(), f"link {out.name} ({tc.arch})")
        if strip:
            _run([tc.tool("strip"), str(tmp)], bdir, log, _env(), f"strip {out.name}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def build(arch: str, version: str | None = None, *, layers: bool = False, progress: Progress | None = None
          ) -> NativeBuild:
    """Build (or find) the native runtime for arch; the layers flavour too when asked."""
    from deployer.remote.runtime import host_ncnn_version

    version = source.check_version(version or host_ncnn_version() or "")
    tc = toolchain(arch)
    compiler = _compiler_version(tc)
    lkey = lib_key(version, tc, compiler)
    rkey = runtime_key(lkey)
    folder = runtimes_dir() / version / tc.arch / rkey
    existing = find_build(tc.arch, version, layers=layers, strict=False)
    if existing is not None and existing.key == rkey:
        return existing
    source.extract_sdist(version)  # a missing source is one line, before anything is created
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    manifest = folder / "manifest.json"
    lock_path = source.native_cache() / "build" / f".lock-{version}-{tc.arch}"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per version+arch at a time (setup vs a user)
        # under the lock: a build that just relinked a damaged runner has rewritten its manifest
        try:
            previous = json.loads(manifest.read_text()) if manifest.is_file() else {}
        except ValueError:
            previous = {}
        previous = previous if isinstance(previous, dict) else {}
        for binary, size in ((folder / RUNNER_NAME, previous.get("size")),
                             (folder / LAYERS_NAME, previous.get("layers_size"))):
            if binary.is_file() and damage(binary, size):   # find_build skipped it: link it again
                binary.unlink()
        times: dict[str, float] = {}
        t0 = time.monotonic()
        bdir, lib_times = build_library(version, tc, compiler, log, progress)
        times.update(lib_times)
        runner = folder / RUNNER_NAME
        if not runner.is_file():
            t = time.monotonic()
            link_program(bdir, tc, version, [RUNNER_SOURCE], runner, log)
            times["runner"] = time.monotonic() - t
        layers_bin = folder / LAYERS_NAME if layers or (folder / LAYERS_NAME).is_file() else None
        if layers_bin is not None and not layers_bin.is_file():
            t = time.monotonic()
            lib = build_layers_library(bdir, tc, log)
            link_program(bdir, tc, version, [RUNNER_SOURCE], layers_bin, log, lib=lib,
                         defines={"RUNNER_LAYERS": "1"})
            times["layers"] = time.monotonic() - t
        times["total"] = time.monotonic() - t0
        result = NativeBuild(version=version, arch=tc.arch, key=rkey, folder=folder, runner=runner,
                             layers=layers_bin, size=runner.stat().st_size,
                             layers_size=layers_bin.stat().st_size if layers_bin else None, times_s=times,
                             flags={**CMAKE_OPTIONS, "march": " ".join(tc.march_flags()), "compiler": compiler,
                                    "library_key": lkey})
        data = result.to_json()
        data["times_s"] = {**previous.get("times_s", {}), **times}
        data["runner_source"] = runner_source_sha()
        result.times_s = data["times_s"]
        fsutil.write_text(manifest, json.dumps(data, indent=2) + "\n")
    return result
