"""Board facts without Python on the board: probe.sh (POSIX sh; deployer.remote.probe runs it when
the board lacks its python), its sections parsed on the host.

The result is the same raw dict the Python probe script prints, so deployer.remote.probe turns it
into BoardFacts with the same code; `python` and the Python-only fields are None, which is how the
rest of deployer knows the board can only take the native runtime. The /proc, /sys and /etc files
(CPUs, clocks, governors, memory, model, temperature, OS) are parsed by the Python probe's own
`file_facts`, fed the file sections probe.sh dumped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployer.remote.board.probe import file_facts


SCRIPT = Path(__file__).with_name("probe.sh")
HEADER = "==deployer-probe 1"       # probe.sh's first line
_ELF_MACHINES = {183: "aarch64", 40: "arm", 62: "x86_64", 3: "i386"}


def script() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """'==deployer:NAME' headed sections -> {NAME: body} (body without the surrounding newlines)."""
    out: dict[str, str] = {}
    name = None
    body: list[str] = []
    for line in text.split("\n"):
        if line.startswith("==deployer:"):
            if name is not None:
                out[name] = "\n".join(body).strip("\n")
            name, body = line[len("==deployer:"):], []
        elif name is not None:
            body.append(line)
    if name is not None:
        out[name] = "\n".join(body).strip("\n")
    return out


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def parse(text: str) -> dict[str, Any]:
    """probe.sh output -> the raw facts dict of deployer/remote/board/probe.py."""
    if not text.startswith(HEADER) or "==deployer:end" not in text:
        raise ValueError("not a complete probe.sh output")
    s = sections(text)
    f = lambda path: s.get(f"file {path}")  # noqa: E731
    elf = [int(b) for b in (s.get("elf") or "").split() if b.isdigit()]
    elf_class = elf[4] if len(elf) == 20 and elf[:4] == [127, 69, 76, 70] else None
    elf_machine = elf[18] + 256 * elf[19] if elf_class else None
    machine = s.get("machine", "").strip() or "unknown"
    raw: dict[str, Any] = {
        "machine": machine, "kernel_machine": machine,
        "pointer_bits": 64 if elf_class == 2 else 32 if elf_class == 1 else (64 if "64" in machine else 32),
        "multiarch": None, "python": None, "python_path": None, "soabi": None, "python_platform": None,
        "hostname": s.get("hostname", "").strip(), "runtime_dir": s.get("runtime_dir", "").strip(),
        "dpkg_arch": (s.get("dpkg_arch") or "").strip() or None,
        "elf_machine": _ELF_MACHINES.get(elf_machine or -1),
    }
    glibc = (s.get("glibc") or "").strip()
    raw["glibc"] = glibc or None
    raw.update(file_facts(f))
    raw["os_cpu_count"] = len(raw["cpuinfo"]) or None
    raw["disk_path"] = s.get("disk_path", "").strip() or raw["runtime_dir"]
    df = ((s.get("disk") or "").strip().splitlines() or [""])[-1].split()
    raw["disk_free"] = int(df[3]) * 1024 if len(df) >= 4 and df[3].isdigit() else 0
    raw["runtimes"] = {name[len("runtime "):]: (body.strip() or None)
                       for name, body in s.items() if name.startswith("runtime ")}
    sizes = {}
    for line in (s.get("model_sizes") or "").splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit() and name.startswith("./"):
            sizes[name[2:]] = int(size)
    models = {}
    for line in (s.get("models") or "").splitlines():
        digest, _, name = line.strip().partition("  ")
        if len(digest) == 64 and name.startswith("./"):
            models[name[2:]] = {"sha256": digest, "size": sizes.get(name[2:])}
    raw["models"] = models
    raw["ncnn"] = None
    return raw
