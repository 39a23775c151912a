"""What emulated boards cost: sysroot build (cold/warm), board start, SSH connect and round trip,
shaped-link RTT and throughput. Needs root. Prints a table and JSON (bench/results/sim.json).

    python bench/bench_sim.py [--cold] [--repeat 5]

--cold builds both sysroots into a temporary DEPLOYER_CACHE (downloads ~40 MB per arch from the
machine's Debian mirror); without it the cold numbers are skipped. Boards run in a private state dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deployer.sim import sysroot  # noqa: E402
from deployer.sim.linkspec import parse_link  # noqa: E402
from deployer.sim.manager import sim_down, sim_up  # noqa: E402

SHAPED = "delay=20,rate=20,loss=0"


def sysroot_times(cold: bool) -> dict:
    out = {}
    for arch in sysroot.ARCHES:
        if cold:
            tmp = tempfile.mkdtemp(prefix="deployer-bench-cache-")
            old = os.environ.get("DEPLOYER_CACHE")
            os.environ["DEPLOYER_CACHE"] = tmp
            try:
                info = sysroot.ensure_sysroot(arch)
                out[f"sysroot {arch} cold build (s)"] = info.seconds
                out[f"sysroot {arch} packages"] = info.packages
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if old is None:
                    os.environ.pop("DEPLOYER_CACHE")
                else:
                    os.environ["DEPLOYER_CACHE"] = old
        sysroot.ensure_sysroot(arch)
        t = time.perf_counter()
        info = sysroot.ensure_sysroot(arch)
        assert info.cached
        out[f"sysroot {arch} warm check (s)"] = time.perf_counter() - t
    return out


def connect(address: str, key: Path, known_hosts: Path) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.load_host_keys(str(known_hosts))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(address, username="pi", key_filename=str(key), allow_agent=False, look_for_keys=False, timeout=30)
    return c


def exec_true(c: paramiko.SSHClient) -> float:
    t = time.perf_counter()
    _, stdout, _ = c.exec_command("true")
    stdout.channel.recv_exit_status()
    return time.perf_counter() - t


def tcp_rtt_ms(address: str, n: int = 10) -> float:
    vals = []
    for _ in range(n):
        t = time.perf_counter()
        with socket.create_connection((address, 22), timeout=10):
            vals.append((time.perf_counter() - t) * 1000)
    return statistics.median(vals)


def push_mbit(c: paramiko.SSHClient, size: int) -> float:
    chan = c.get_transport().open_session()
    chan.exec_command("cat > /dev/null; echo done")
    t = time.perf_counter()
    chan.sendall(b"\0" * size)
    chan.shutdown_write()
    chan.recv(16)
    secs = time.perf_counter() - t
    chan.recv_exit_status()
    return size * 8 / secs / 1e6


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", action="store_true", help="also time cold sysroot builds (downloads)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/sim.json")
    args = ap.parse_args()
    results: dict[str, float] = sysroot_times(args.cold)
    state = Path(tempfile.mkdtemp(prefix="deployer-bench-sim-"))
    try:
        boards = {}
        for label, arch, link in (("arm64", "arm64", None), ("armhf", "armhf", None),
                                  ("arm64 shaped", "arm64", parse_link(SHAPED))):
            t = time.perf_counter()
            res = sim_up(arch=arch, link=link, targets_dir=state / "targets", state_dir=state / "state")
            results[f"board up {label} (s)"] = time.perf_counter() - t
            boards[label] = res.added[0]
        key, known = state / "state/client_ed25519", state / "targets/sim_known_hosts"
        for label, b in boards.items():
            results[f"idle board RSS {label} (MB, its sshd under qemu)"] = rss_mb(b.init.pid)
        for label, b in boards.items():
            connects, rtts = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                c = connect(b.address, key, known)
                connects.append(time.perf_counter() - t)
                rtts.append(exec_true(c))
                c.close()
            results[f"ssh connect {label} (s, median)"] = statistics.median(connects)
            results[f"ssh exec 'true' round trip {label} (s, median)"] = statistics.median(rtts)
            results[f"tcp connect RTT {label} (ms, median)"] = tcp_rtt_ms(b.address)
            with connect(b.address, key, known) as c:
                results[f"push 4 MB over ssh {label} (Mbit/s)"] = push_mbit(c, 4_000_000)
        t = time.perf_counter()
        sim_down(state_dir=state / "state")
        results["sim down, 3 boards (s)"] = time.perf_counter() - t
    finally:
        sim_down(state_dir=state / "state")
        shutil.rmtree(state, ignore_errors=True)

    table = Table("measure", "value", title=f"emulated boards (shaped link: {SHAPED})")
    for k, v in results.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console(stderr=True).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
