"""What a board is, in one remote command: userland arch, python, glibc, CPU, memory, disk, deployer state.

One command because every exec on a slow or emulated board costs most of a second. The facts
are read by the board's own python (stdlib only, 3.6-compatible) and returned as JSON.

The userland architecture comes from that python (MULTIARCH, pointer size), not `uname -m`:
32-bit Raspberry Pi OS runs a 64-bit kernel, so uname says aarch64 while only armhf wheels work.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from deployer.errors import RemoteError
from deployer.remote import board as board_scripts
from deployer.remote.layout import BoardLayout
from deployer.remote.layout import arg as layout_arg
from deployer.ssh.connect import Connection

# (implementer, part) -> core name, from the ARM/NVIDIA/Qualcomm MIDR part numbers.
_PARTS = {
    (0x41, 0xB02): "ARM11-MPCore", (0x41, 0xB76): "ARM1176", (0x41, 0xC05): "Cortex-A5",
    (0x41, 0xC07): "Cortex-A7", (0x41, 0xC08): "Cortex-A8", (0x41, 0xC09): "Cortex-A9",
    (0x41, 0xC0D): "Cortex-A17", (0x41, 0xC0E): "Cortex-A17", (0x41, 0xC0F): "Cortex-A15",
    (0x41, 0xD01): "Cortex-A32", (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55", (0x41, 0xD06): "Cortex-A65", (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73", (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD0E): "Cortex-A76AE", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4A): "Neoverse-E1", (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD4C): "Cortex-X1C",
    (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x4E, 0x003): "Denver2", (0x4E, 0x004): "Carmel",
    (0x51, 0x800): "Kryo-2xx-Gold", (0x51, 0x801): "Kryo-2xx-Silver", (0x51, 0x802): "Kryo-3xx-Gold",
    (0x51, 0x803): "Kryo-3xx-Silver", (0x51, 0x804): "Kryo-4xx-Gold", (0x51, 0x805): "Kryo-4xx-Silver",
}

_MULTIARCH = {
    "aarch64-linux-gnu": "arm64", "arm-linux-gnueabihf": "armhf", "arm-linux-gnueabi": "armel",
    "x86_64-linux-gnu": "amd64", "i386-linux-gnu": "i386", "riscv64-linux-gnu": "riscv64",
}
_WHEEL_ARCH = {"arm64": "aarch64", "armhf": "armv7l", "armel": "armv5tel", "amd64": "x86_64", "i386": "i686",
               "riscv64": "riscv64"}


@dataclass
class CpuCluster:
    cpus: list[int]
    core: str
    max_freq_mhz: float | None


@dataclass
class BoardFacts:
    board: str
    arch: str                   # Debian-style userland arch: arm64, armhf, armel, amd64, ...
    wheel_arch: str             # wheel platform suffix: aarch64, armv7l, armv6l, x86_64, ...
    pointer_bits: int
    machine: str                # platform.machine() (the kernel's view)
    kernel_machine: str         # uname -m
    multiarch: str | None
    dpkg_arch: str | None
    python: str
    python_path: str
    soabi: str | None
    python_platform: str
    glibc: str | None           # "2.36"
    cpu_model: str              # "Cortex-A72", or "4x Cortex-A76 + 4x Cortex-A55"
    cores: int                  # processors listed in /proc/cpuinfo (what ncnn counts)
    os_cpu_count: int | None
    clusters: list[CpuCluster]
    hardware: str | None        # cpuinfo Hardware/Model line
    governors: list[str | None]
    mem_total: int | None       # bytes
    mem_available: int | None
    disk_free: int              # bytes free for the login user where runtime_dir lives
    disk_path: str
    dt_model: str | None        # /sys/firmware/devicetree/base/model
    hostname: str
    os: str | None
    temperature_c: float | None
    runtime_dir: str            # absolute on the board
    runtimes: dict[str, str | None]   # <runtime_dir>/runtime/<name> -> wheel sha256 marker (None = incomplete)
    models: dict[str, dict] = field(default_factory=dict)   # relpath under models/ -> {sha256, size}
    ncnn: str | None = None     # ncnn version visible to the board's python (dist-info)
    seconds: float = 0.0

    @property
    def glibc_tuple(self) -> tuple[int, int] | None:
        if not self.glibc:
            return None
        major, _, minor = self.glibc.partition(".")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None

    @property
    def manylinux_tags(self) -> list[str]:
        """Wheel platform tags this board accepts, newest first (PEP 600 + legacy aliases)."""
        g = self.glibc_tuple
        if not g or g[0] != 2:
            return [f"linux_{self.wheel_arch}"]
        tags = [f"manylinux_2_{m}_{self.wheel_arch}" for m in range(g[1], 16, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.wheel_arch}" for m, name in legacy.items() if g[1] >= m]
        return tags + [f"linux_{self.wheel_arch}"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["manylinux_tags"] = self.manylinux_tags
        return d


def probe(conn: Connection, *, timeout: float = 120.0) -> BoardFacts:
    """Gather BoardFacts with one remote command: the Python probe where the board has its python,
    else (Buildroot/Yocto images, `sim up --image minimal`) the POSIX sh probe, chosen on the board
    by dispatch.sh, so a board without Python costs no second round trip. Such a board takes the
    native runtime (deployer.native)."""
    from deployer.native import shprobe

    board = conn.board
    t0 = time.monotonic()
    root = layout_arg(BoardLayout.for_board(board).root)
    res = conn.run(["sh", "-c", board_scripts.script("dispatch.sh") + shprobe.script(), "sh",
                    board_scripts.script("probe.py"), board.python, root], timeout=timeout)
    def failed(what: str) -> RemoteError:
        tail = (res.stderr.strip().splitlines() or ["no stderr"])[-1]
        return RemoteError(f"{board.where}: {what} failed (rc {res.rc}): {tail}")

    if res.stdout.startswith(shprobe.HEADER):
        try:
            raw = shprobe.parse(res.stdout)
        except ValueError:
            raise failed("sh probe") from None
        return facts_from_raw(board.name, raw, time.monotonic() - t0)
    if res.rc != 0:
        raise failed("probe script")
    try:
        raw = json.loads(res.stdout)
    except ValueError:
        raise RemoteError(f"{board.where}: probe printed something that is not JSON: {res.stdout[:80]!r}") from None
    return facts_from_raw(board.name, raw, time.monotonic() - t0)


def facts_from_raw(board: str, raw: dict[str, Any], seconds: float = 0.0) -> BoardFacts:
    """Turn the board script's raw JSON into BoardFacts (pure; unit-tested with recorded inputs)."""
    arch = userland_arch(raw.get("multiarch"), raw.get("dpkg_arch"), raw["machine"], raw["pointer_bits"])
    wheel_arch = _WHEEL_ARCH.get(arch, raw["machine"])
    if arch == "armhf" and raw["machine"] == "armv6l":
        wheel_arch = "armv6l"
    cpus = raw.get("cpuinfo", [])
    clusters = cpu_clusters(cpus, raw.get("max_freq_khz", {}))
    glibc = raw.get("glibc")
    if glibc and glibc.startswith("glibc "):
        glibc = glibc.split()[1]
    extra = {k: v for c in raw.get("cpuinfo_extra", []) for k, v in c.items()}
    hardware = extra.get("model") or extra.get("hardware")
    return BoardFacts(
        board=board, arch=arch, wheel_arch=wheel_arch, pointer_bits=raw["pointer_bits"],
        machine=raw["machine"], kernel_machine=raw["kernel_machine"], multiarch=raw.get("multiarch"),
        dpkg_arch=raw.get("dpkg_arch"), python=raw["python"], python_path=raw["python_path"],
        soabi=raw.get("soabi"), python_platform=raw["python_platform"], glibc=glibc,
        cpu_model=describe_clusters(clusters), cores=len(cpus), os_cpu_count=raw.get("os_cpu_count"),
        clusters=clusters, hardware=hardware,
        governors=[raw.get("governors", {}).get(c["processor"]) for c in cpus],
        mem_total=raw.get("mem_total"), mem_available=raw.get("mem_available"),
        disk_free=raw["disk_free"], disk_path=raw["disk_path"], dt_model=raw.get("dt_model"),
        hostname=raw["hostname"], os=raw.get("os"), temperature_c=raw.get("temperature_c"),
        runtime_dir=raw["runtime_dir"], runtimes=raw.get("runtimes", {}), models=raw.get("models", {}),
        ncnn=raw.get("ncnn"), seconds=round(seconds, 3),
    )


def userland_arch(multiarch: str | None, dpkg_arch: str | None, machine: str, pointer_bits: int) -> str:
    """Debian arch of the board's userland; the kernel's machine name only as the last resort."""
    if multiarch and multiarch in _MULTIARCH:
        return _MULTIARCH[multiarch]
    if dpkg_arch:
        return dpkg_arch
    m = machine.lower()
    if m in ("aarch64", "arm64", "armv8l", "armv8b"):
        return "arm64" if pointer_bits == 64 else "armhf"
    if m.startswith("arm"):
        return "armhf"
    if m in ("x86_64", "amd64"):
        return "amd64" if pointer_bits == 64 else "i386"
    if m in ("i386", "i486", "i586", "i686"):
        return "i386"
    return m


def core_name(cpu: dict[str, str]) -> str:
    """`CPU implementer`/`CPU part` -> "Cortex-A72"; else the x86 `model name`; else "unknown"."""
    try:
        impl = int(cpu.get("cpu implementer", ""), 16)
        part = int(cpu.get("cpu part", ""), 16)
    except ValueError:
        return cpu.get("model name") or cpu.get("cpu model") or "unknown"
    return _PARTS.get((impl, part), f"ARM part {impl:#04x}:{part:#05x}")


def cpu_clusters(cpus: list[dict[str, str]], max_freq_khz: dict[str, int | None]) -> list[CpuCluster]:
    """Group cores by (core type, max frequency): big.LITTLE shows up as two or three clusters,
    fastest first."""
    groups: dict[tuple[str, int | None], list[int]] = {}
    for c in cpus:
        n = c["processor"]
        key = (core_name(c), max_freq_khz.get(n))
        groups.setdefault(key, []).append(int(n))
    out = [CpuCluster(sorted(ids), name, round(f / 1000, 1) if f else None) for (name, f), ids in groups.items()]
    out.sort(key=lambda c: (-(c.max_freq_mhz or 0), c.cpus[0]))
    return out


def describe_clusters(clusters: list[CpuCluster]) -> str:
    if not clusters:
        return "unknown"
    names = [c.core for c in clusters]
    if len(set(names)) == 1 and len(clusters) == 1:
        return names[0]
    return " + ".join(f"{len(c.cpus)}x {c.core}" + (f" @{c.max_freq_mhz:.0f} MHz" if c.max_freq_mhz else "")
                      for c in clusters)
