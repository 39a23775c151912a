"""Userspace link shaper: delay, jitter, loss and rate between two interfaces (this kernel has no netem).

Runs in its own network namespace holding the middle ends of two veth pairs and copies every
Ethernet frame from one to the other through an AF_PACKET socket, so it shapes ARP, TCP and
everything else exactly like a netem qdisc on each side would. Per direction: drop with
probability `loss`, queue at most `limit` frames, serialise at `rate` (a frame leaves when the
previous one has finished "transmitting"), then hold it for `delay` +- `jitter`.

Offloads must be off on all four veth ends (see deployer.sim.net), otherwise userspace sees 64 KB
GSO frames and partial checksums.

usage: python -m deployer.sim.shaper HOST_IF BOARD_IF --down SPEC --up SPEC [--seed N]
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from deployer.sim.linkspec import Shape, parse_shape

ETH_P_ALL = 0x0003
MAX_FRAME = 65535
READY = "shaper ready"


@dataclass
class Direction:
    """One way through the shaper: frames read from `src` leave through `dst`."""

    src: socket.socket
    dst: socket.socket
    shape: Shape
    busy_until: float = 0.0      # when the emulated wire finishes the last accepted frame
    queued: int = 0
    forwarded: int = 0
    dropped: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def admit(self, frame: bytes, now: float) -> float | None:
        """Departure time for `frame`, or None when the link drops it."""
        s = self.shape
        if s.loss and self.rng.random() * 100.0 < s.loss:
            return None
        if self.queued >= s.limit:
            return None
        t = now
        if s.rate:
            self.busy_until = max(now, self.busy_until) + len(frame) * 8 / (s.rate * 1e6)
            t = self.busy_until
        delay = s.delay + (self.rng.uniform(-s.jitter, s.jitter) if s.jitter else 0.0)
        return t + max(0.0, delay) / 1000.0


def open_raw(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def run(host_if: str, board_if: str, down: Shape, up: Shape, seed: int | None = None) -> None:
    a, b = open_raw(host_if), open_raw(board_if)
    print(READY, flush=True)  # deployer.sim.net waits for this before the board's first packet
    rng = random.Random(seed)
    dirs = {a.fileno(): Direction(a, b, down, rng=rng), b.fileno(): Direction(b, a, up, rng=rng)}
    pending: list[tuple[float, int, Direction, bytes]] = []
    seq = 0
    while True:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, d, frame = heapq.heappop(pending)
            d.queued -= 1
            try:
                d.dst.send(frame)
                d.forwarded += 1
            except OSError:
                d.dropped += 1
        timeout = max(0.0, pending[0][0] - now) if pending else 1.0
        ready, _, _ = select.select([a, b], [], [], timeout)
        for sock in ready:
            d = dirs[sock.fileno()]
            for _ in range(256):
                try:
                    frame, addr = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:  # our own transmission on this interface
                    continue
                when = d.admit(frame, time.monotonic())
                if when is None:
                    d.dropped += 1
                    continue
                seq += 1
                d.queued += 1
                heapq.heappush(pending, (when, seq, d, frame))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m deployer.sim.shaper")
    ap.add_argument("host_if")
    ap.add_argument("board_if")
    ap.add_argument("--down", default="", help="host -> board, e.g. delay=50,rate=10,loss=1")
    ap.add_argument("--up", default="", help="board -> host")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(args.host_if, args.board_if, parse_shape(args.down), parse_shape(args.up), args.seed)


if __name__ == "__main__":
    main()
