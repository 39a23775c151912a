"""Measurement context: what the board looked like right before and right after a timed run.

A latency number is only worth something with its context: a governor left on `powersave`, a Pi
throttling at 80 C, a clock capped by the firmware or a background job make a model look twice as
slow. The board side is `board/context.sh` (POSIX sh, reads /sys and /proc, no Python), piped to
`sh -s` over the run's own SSH connection; this module parses its lines and turns the before/after
pair into flags, each a sentence a user can act on. A run with flags is still stored, but every
view of it (run output, history, compare, report) shows them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COLLECTOR = Path(__file__).with_name("board") / "context.sh"
SYSFS_ENV = "DEPLOYER_SYSFS_ROOT"  # host env var forwarded to the collector (emulated boards' fake /sys)


@dataclass(frozen=True)
class Thresholds:
    """When a context change voids a measurement. Defaults follow what users report hurting them."""

    temp_rise_c: float = 5.0          # temperature rose by more than this during the run
    hot_c: float = 80.0               # Pi 4 firmware soft-throttles from 80 C
    clock_drop: float = 0.05          # current clock below 95 % of the allowed maximum, or fell by 5 %
    load_per_core: float = 0.75       # 1-min load average per core before the run
    other_cpu_pct: float = 20.0       # other processes used more than this % of one core during the run
    spread_rel_mad: float = 0.10      # MAD/median above 10 %: the samples disagree too much
    spread_ci_rel: float = 0.05       # median CI half-width above 5 % of the median


@dataclass
class Flag:
    """One reason not to trust a run blindly; `kind` is stable for scripts, `message` is for people."""

    kind: str       # governor | clock | throttled | temperature | load | spread | warmup | duration
    message: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Snapshot:
    uptime_s: float | None = None
    nproc: int | None = None
    clk_tck: int = 100
    loadavg: list[float] = field(default_factory=list)
    mem_total_kb: int | None = None
    mem_available_kb: int | None = None
    cpus: list[dict[str, Any]] = field(default_factory=list)
    thermal: list[dict[str, Any]] = field(default_factory=list)
    throttled: str | None = None
    nvpmodel: str | None = None
    jetson_clocks: str | None = None
    procs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("procs")
        return d


def _num(text: str, kind: type = int) -> Any:
    if text in ("-", ""):
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def parse_snapshot(text: str) -> Snapshot:
    """The collector's lines -> Snapshot. Unknown kinds are ignored (newer collectors add facts)."""
    snap = Snapshot()
    in_stat, collector_pid = False, None
    for raw in text.splitlines():
        if in_stat:
            if raw.strip() == "stat-end":
                in_stat = False
            else:
                _parse_stat(raw, snap, collector_pid)
            continue
        kind, _, rest = raw.strip().partition(" ")
        if kind == "stat-begin":
            in_stat, collector_pid = True, _num(rest.strip() or "-")
            continue
        parts = rest.split()
        if kind == "uptime" and parts:
            snap.uptime_s = _num(parts[0], float)
        elif kind == "nproc" and parts:
            snap.nproc = _num(parts[0])
        elif kind == "clk_tck" and parts:
            snap.clk_tck = _num(parts[0]) or 100
        elif kind == "loadavg":
            snap.loadavg = [v for v in (_num(p, float) for p in parts[:3]) if v is not None]
        elif kind == "mem" and len(parts) >= 2:
            snap.mem_total_kb, snap.mem_available_kb = _num(parts[0]), _num(parts[1])
        elif kind == "cpu" and len(parts) >= 6:
            snap.cpus.append({"cpu": _num(parts[0]), "governor": None if parts[1] == "-" else parts[1],
                              "cur_khz": _num(parts[2]), "min_khz": _num(parts[3]), "max_khz": _num(parts[4]),
                              "cpuinfo_max_khz": _num(parts[5])})
        elif kind == "thermal" and len(parts) >= 2:
            milli = _num(parts[1])
            snap.thermal.append({"zone": parts[0], "type": " ".join(parts[2:]) or None,
                                 "celsius": milli / 1000.0 if milli is not None else None})
        elif kind == "throttled" and parts:
            snap.throttled = parts[0]
        elif kind == "nvpmodel":
            snap.nvpmodel = rest.strip() or None
        elif kind == "jetson_clocks":
            snap.jetson_clocks = rest.strip() or None
    return snap


def _parse_stat(line: str, snap: Snapshot, skip_pid: int | None) -> None:
    """`pid (comm) state ppid ... utime stime ...` (proc(5)); comm may hold spaces and ')'."""
    head, sep, tail = line.rpartition(")")
    if not sep or " (" not in head:
        return
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    pid = _num(pid_text.strip())
    # after the comm: state(3) ppid(4) ... utime(14) stime(15) -> indexes 0 and 11, 12
    if pid is None or pid == skip_pid or len(fields) < 13:
        return
    utime, stime = _num(fields[11]), _num(fields[12])
    if utime is not None and stime is not None:
        snap.procs[pid] = {"ticks": utime + stime, "state": fields[0], "comm": comm}


def collector_argv(sysfs_root: str | None = None) -> list[str]:
    """`sh -s` reading the collector from stdin; the override root (if any) travels as an env var."""
    root = sysfs_root if sysfs_root is not None else os.environ.get(SYSFS_ENV) or None
    argv = ["sh", "-s"]
    if root:
        argv = ["env", f"{SYSFS_ENV}={root}", *argv]
    return argv


def collect(conn: Any, sysfs_root: str | None = None, timeout: float = 60.0) -> Snapshot:
    """Run the collector on the board over an open connection. RemoteError if the link fails;
    a collector that cannot read something just leaves the field empty."""
    res = conn.run(collector_argv(sysfs_root), stdin=COLLECTOR.read_bytes(), timeout=timeout)
    return parse_snapshot(res.stdout if isinstance(res.stdout, str) else res.stdout.decode("utf-8", "replace"))


def collect_local(sysfs_root: str | None = None) -> Snapshot:
    """The same collector on this machine (tests, and host-side runs)."""
    import subprocess

    argv = collector_argv(sysfs_root)
    proc = subprocess.run(argv, input=COLLECTOR.read_bytes(), capture_output=True, timeout=60)
    return parse_snapshot(proc.stdout.decode("utf-8", "replace"))


# ------------------------------------------------------------------------------------------------ flags

def _max_temp(snap: Snapshot) -> float | None:
    temps = [z["celsius"] for z in snap.thermal if z.get("celsius") is not None]
    return max(temps) if temps else None


def other_processes(before: Snapshot, after: Snapshot, top: int = 5) -> list[dict[str, Any]]:
    """Processes alive across the whole run, by CPU used during it (% of one core). The runner
    itself starts after `before` and ends before `after`, so it never counts as 'other'."""
    elapsed = (after.uptime_s or 0.0) - (before.uptime_s or 0.0)
    if elapsed <= 0:
        return []
    busy = []
    for pid, p in after.procs.items():
        q = before.procs.get(pid)
        if q is None or q["comm"] != p["comm"]:
            continue
        ticks = p["ticks"] - q["ticks"]
        if ticks > 0:
            busy.append({"pid": pid, "comm": p["comm"],
                         "cpu_pct": round(100.0 * ticks / after.clk_tck / elapsed, 1)})
    busy.sort(key=lambda d: -d["cpu_pct"])
    return busy[:top]


def context_flags(before: Snapshot, after: Snapshot, th: Thresholds = Thresholds()) -> list[Flag]:
    """Everything in the before/after pair that makes the timing suspect, as sentences."""
    flags: list[Flag] = []
    governors = sorted({c["governor"] for c in before.cpus + after.cpus if c.get("governor")})
    if any(g != "performance" for g in governors):
        flags.append(Flag("governor", f"cpufreq governor {'/'.join(governors)} (not 'performance'): the clock "
                                      "moves during the run; set 'performance' for stable numbers"))
    for snap, when in ((before, "before"), (after, "after")):
        low = [c for c in snap.cpus if c.get("cur_khz") and (c.get("cpuinfo_max_khz") or c.get("max_khz"))
               and c["cur_khz"] < (1 - th.clock_drop) * (c.get("cpuinfo_max_khz") or c["max_khz"])]
        if low:
            c = low[0]
            top = c.get("cpuinfo_max_khz") or c["max_khz"]
            flags.append(Flag("clock", f"cpu{c['cpu']} at {c['cur_khz'] // 1000} MHz of {top // 1000} MHz {when} the "
                                       f"run ({len(low)} core(s) below max)"))
            break
    prev = {c["cpu"]: c.get("cur_khz") for c in before.cpus}
    dropped = [c for c in after.cpus if prev.get(c["cpu"]) and c.get("cur_khz")
               and c["cur_khz"] < (1 - th.clock_drop) * prev[c["cpu"]]]
    if dropped:
        c = dropped[0]
        flags.append(Flag("clock", f"cpu{c['cpu']} clock dropped from {prev[c['cpu']] // 1000} to "
                                   f"{c['cur_khz'] // 1000} MHz during the run"))
    for snap, when in ((before, "before"), (after, "after")):
        value = _throttle_bits(snap.throttled)
        if value:
            flags.append(Flag("throttled", f"firmware throttling flags {snap.throttled} {when} the run "
                                           f"({_describe_throttle(value)})"))
            break
    t0, t1 = _max_temp(before), _max_temp(after)
    if t0 is not None and t1 is not None and t1 - t0 > th.temp_rise_c:
        flags.append(Flag("temperature", f"temperature rose {t1 - t0:.1f} C during the run ({t0:.1f} -> {t1:.1f} C)"))
    if t1 is not None and t1 >= th.hot_c:
        flags.append(Flag("temperature", f"hot: {t1:.1f} C at the end of the run (throttling starts near "
                                         f"{th.hot_c:.0f} C)"))
    cores = before.nproc or 1
    if before.loadavg and before.loadavg[0] > th.load_per_core * cores:
        flags.append(Flag("load", f"load average {before.loadavg[0]:.2f} on {cores} core(s) before the run"))
    others = [p for p in other_processes(before, after) if p["cpu_pct"] > th.other_cpu_pct]
    if others:
        names = ", ".join(f"{p['comm']} (pid {p['pid']}) {p['cpu_pct']:.0f}%" for p in others[:3])
        flags.append(Flag("load", f"other processes used CPU during the run: {names}"))
    return flags


def _throttle_bits(text: str | None) -> int:
    if not text:
        return 0
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return 0


_THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}


def _describe_throttle(value: int) -> str:
    now = [name for bit, name in _THROTTLE_BITS.items() if value >> bit & 1]
    since = [name for bit, name in _THROTTLE_BITS.items() if value >> (bit + 16) & 1]
    parts = []
    if now:
        parts.append("now: " + ", ".join(now))
    if since:
        parts.append("since boot: " + ", ".join(since))
    return "; ".join(parts) or "unknown bits"


def context_json(before: Snapshot, after: Snapshot, th: Thresholds = Thresholds()) -> dict[str, Any]:
    """What the run record stores: both snapshots, the busiest other processes, and the flags."""
    return {"before": before.to_json(), "after": after.to_json(),
            "other_processes": other_processes(before, after),
            "flags": [f.to_json() for f in context_flags(before, after, th)]}

