"""The simulator's state file: which boards it started, with which processes, so any later process
(`sim status`, `sim down`, test fixtures) can find and stop exactly those.

One JSON file per state dir, written atomically; every change happens under a machine-wide lock
because board slots (namespace names, subnets) are shared by all state dirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from deployer.errors import DeployerError
from deployer.fsutil import read_input_text, write_text
from deployer.sim.paths import GLOBAL_LOCK
from deployer.sim.procs import ProcRef

STATE_FILE = "state.json"
VERSION = 1


@dataclass
class BoardState:
    name: str
    arch: str
    slot: int
    address: str
    qemu_cpu: str
    model: str
    hostname: str
    board_dir: str
    sysroot: str
    host_key: str                 # "ssh-ed25519 AAAA..." as the board generated it
    unshare: ProcRef              # the process we started (unshare, parent of the board's PID 1)
    init: ProcRef                 # the board's PID 1 (its sshd) as seen from the host
    link: dict | None = None      # LinkSpec.to_json() when shaped
    shaper: ProcRef | None = None
    started: str = ""
    up_seconds: float = 0.0
    image: str = "standard"       # deployer.sim.minimal: "minimal" = no Python on the board

    @classmethod
    def from_json(cls, d: dict) -> "BoardState":
        d = dict(d)
        for k in ("unshare", "init", "shaper"):
            if d.get(k) is not None:
                d[k] = ProcRef(**d[k])
        return cls(**d)


@dataclass
class Claim:
    """A board being started: written before its namespaces exist, so a `sim up` killed mid-start
    (SIGKILL, a lost terminal) leaves a record the next `sim up`/`sim down` clears from, instead of
    a namespace, veth and board processes no state file names."""

    name: str
    slot: int
    board_dir: str


@dataclass
class SimState:
    targets_dir: str | None = None
    boards: list[BoardState] = field(default_factory=list)
    starting: list[Claim] = field(default_factory=list)

    def board(self, name: str) -> BoardState | None:
        return next((b for b in self.boards if b.name == name), None)


def load_state(state_dir: Path) -> SimState:
    path = state_dir / STATE_FILE
    if not path.exists():
        return SimState()
    # regular files only (a FIFO here hung `sim status`); a JSON list or string was an AttributeError
    text = read_input_text(path, "simulator state file", limit=64 << 20)
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if not isinstance(data.get("targets_dir"), (str, type(None))):
            raise ValueError("targets_dir is not a path")
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
        return SimState(data.get("targets_dir"), [BoardState.from_json(b) for b in data.get("boards", [])],
                        [Claim(**c) for c in data.get("starting", [])])
    except (ValueError, TypeError, KeyError) as err:
        raise DeployerError(f"{path}: unreadable simulator state ({err}); stop leftover boards with "
                            f"'ip netns list' / 'ip netns del dsim-N' and delete the file") from None


def save_state(state_dir: Path, state: SimState) -> None:
    data = {"version": VERSION, "targets_dir": state.targets_dir, "boards": [asdict(b) for b in state.boards],
            "starting": [asdict(c) for c in state.starting]}
    write_text(state_dir / STATE_FILE, json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def locked() -> Iterator[None]:
    GLOBAL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(GLOBAL_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
