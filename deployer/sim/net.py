"""Board networking: one network namespace and one 10.200.N.0/24 per board, optional shaped link.

Plain:   host dsimNh 10.200.N.1  <-veth->  eth0 10.200.N.2 (netns dsim-N)
Shaped:  host dsimNh 10.200.N.1  <-veth->  [netns dsim-wan-N: wh <-shaper-> wb]  <-veth->  eth0 10.200.N.2

Boards reach each other (ProxyJump through one board to another) through the host: each board has a
route for 10.200.0.0/16 via its host end, and IPv4 forwarding is switched on for the board-facing
host interfaces only (net.ipv4.conf.dsimNh.forwarding), never globally, so there is nothing to
restore and the host does not become a router for its other interfaces.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import DeployerError
from deployer.sim.linkspec import LinkSpec
from deployer.sim.paths import python_module_env
from deployer.sim.procs import ProcRef, terminate
from deployer.sim.shaper import READY

SUBNET = "10.200.0.0/16"
MAX_SLOT = 254
BOARD_IF = "eth0"


@dataclass(frozen=True)
class Slot:
    """Machine-wide identity of a board's network: names and addresses derive from N."""

    n: int

    @property
    def netns(self) -> str:
        return f"dsim-{self.n}"

    @property
    def wan_netns(self) -> str:
        return f"dsim-wan-{self.n}"

    @property
    def host_if(self) -> str:
        return f"dsim{self.n}h"

    @property
    def host_addr(self) -> str:
        return f"10.200.{self.n}.1"

    @property
    def board_addr(self) -> str:
        return f"10.200.{self.n}.2"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise DeployerError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def netns_names() -> set[str]:
    out = ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def free_slot(reserved: set[int] = frozenset()) -> Slot:  # type: ignore[assignment]
    """Lowest N whose namespaces and host interface do not exist (any simulator instance may own them)."""
    names = netns_names()
    for n in range(1, MAX_SLOT + 1):
        s = Slot(n)
        if n in reserved or s.netns in names or s.wan_netns in names or Path(f"/sys/class/net/{s.host_if}").exists():
            continue
        return s
    raise DeployerError(f"all {MAX_SLOT} board slots in {SUBNET} are in use; run deployer sim down")


def create_network(slot: Slot, link: LinkSpec | None, shaper_log: Path) -> ProcRef | None:
    """Build the namespaces and veths for `slot`; returns the shaper process when the link is shaped."""
    try:
        ip("netns", "add", slot.netns)
        if link is None:
            ip("link", "add", slot.host_if, "type", "veth", "peer", "name", BOARD_IF, "netns", slot.netns)
        else:
            ip("netns", "add", slot.wan_netns)
            ip("link", "add", slot.host_if, "type", "veth", "peer", "name", "wh", "netns", slot.wan_netns)
            ip("link", "add", BOARD_IF, "netns", slot.netns, "type", "veth", "peer", "name", "wb",
               "netns", slot.wan_netns)
        ip("addr", "add", f"{slot.host_addr}/24", "dev", slot.host_if)
        ip("link", "set", slot.host_if, "up")
        ip("-n", slot.netns, "addr", "add", f"{slot.board_addr}/24", "dev", BOARD_IF)
        ip("-n", slot.netns, "link", "set", BOARD_IF, "up")
        ip("-n", slot.netns, "link", "set", "lo", "up")
        ip("-n", slot.netns, "route", "add", SUBNET, "via", slot.host_addr)
        Path(f"/proc/sys/net/ipv4/conf/{slot.host_if}/forwarding").write_text("1")
        if link is None:
            return None
        for ns in (slot.wan_netns,):
            ip("-n", ns, "link", "set", "wh", "up")
            ip("-n", ns, "link", "set", "wb", "up")
        _offloads_off(None, slot.host_if)
        _offloads_off(slot.netns, BOARD_IF)
        _offloads_off(slot.wan_netns, "wh", gro=True)
        _offloads_off(slot.wan_netns, "wb", gro=True)
        return start_shaper(slot, link, shaper_log)
    except BaseException:
        destroy_network(slot)
        raise


def start_shaper(slot: Slot, link: LinkSpec, log: Path) -> ProcRef:
    argv = ["ip", "netns", "exec", slot.wan_netns, sys.executable, "-m", "deployer.sim.shaper", "wh", "wb",
            "--down", link.down.spec(), "--up", link.up.spec()]
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True,
                                cwd="/", env=python_module_env())
    ref = ProcRef.of(proc.pid)
    # frames sent before its sockets are bound are lost (a lost SYN costs a 1 s retransmit)
    deadline = time.monotonic() + 10
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            terminate(ref)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise DeployerError(f"link shaper for {slot.netns} did not start: {tail[0]} (log: {log})")
        time.sleep(0.02)
    return ref


def _offloads_off(ns: str | None, dev: str, gro: bool = False) -> None:
    """Frames go through userspace: no checksum offload, no segmentation offload."""
    features = ["tx", "off", "tso", "off", "gso", "off", "sg", "off"] + (["gro", "off"] if gro else [])
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["ethtool", "-K", dev, *features]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise DeployerError(f"ethtool -K {dev} failed: {res.stderr.strip()} (is the ethtool package installed?)")


def kill_slot_processes(slot: Slot, timeout: float = 5.0) -> bool:
    """SIGKILL every process in the slot's namespaces (a board whose start was cut off: its unshare,
    qemu sshd, shaper). True when none is left; a namespace only goes once its processes have."""
    names = netns_names()
    spaces = [ns for ns in (slot.netns, slot.wan_netns) if ns in names]
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for ns in spaces for p in ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def destroy_network(slot: Slot) -> None:
    """Remove the namespaces and host veth of `slot`; missing pieces are fine (idempotent)."""
    names = netns_names()
    for ns in (slot.netns, slot.wan_netns):
        if ns in names:
            ip("netns", "del", ns, check=False)
    if Path(f"/sys/class/net/{slot.host_if}").exists():
        ip("link", "del", slot.host_if, check=False)


def network_exists(slot: Slot) -> bool:
    names = netns_names()
    return slot.netns in names or slot.wan_netns in names or Path(f"/sys/class/net/{slot.host_if}").exists()
