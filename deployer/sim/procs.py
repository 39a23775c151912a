"""Processes the simulator started, identified by pid AND start time so a recycled pid is never killed."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcRef:
    pid: int
    start: int  # /proc/<pid>/stat field 22 (clock ticks since boot)

    @classmethod
    def of(cls, pid: int) -> "ProcRef":
        return cls(pid, start_time(pid) or 0)

    def alive(self) -> bool:
        """Running (zombies count as gone) and still the process we started."""
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.start

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[19]) if stat else None


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], starttime is [19])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def terminate(ref: ProcRef, grace: float = 2.0) -> bool:
    """TERM, wait, KILL. True when the process is gone."""
    ref.signal(signal.SIGTERM)
    if not ref.wait_gone(grace):
        ref.signal(signal.SIGKILL)
    return ref.wait_gone(2.0)
