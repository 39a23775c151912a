"""Which simulator instances on this machine have boards up, so `sim down --all` can find them.

An instance is a state dir (client key, board overlays, state.json): by default one per targets
folder, or DEPLOYER_SIM_DIR; test fixtures and benchmarks use private ones. Board slots (netns
names, 10.200.N.0/24) are machine-wide, but which instance owns a board is only known to that
instance's state.json, so each instance registers its state dir here while it has boards and
removes itself when its last board stops. Callers hold the machine-wide lock (state.locked()).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deployer.fsutil import write_text
from deployer.sim.paths import instances_dir, legacy_state_dir
from deployer.sim.state import STATE_FILE


def _entry(state_dir: Path) -> Path:
    return instances_dir() / hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def register(state_dir: Path) -> None:
    instances_dir().mkdir(parents=True, exist_ok=True)
    write_text(_entry(state_dir), json.dumps({"state_dir": str(state_dir.resolve())}) + "\n")


def unregister(state_dir: Path) -> None:
    _entry(state_dir).unlink(missing_ok=True)


def registered() -> list[Path]:
    """Every instance that may have boards: the registered ones plus the pre-instance default."""
    found: list[Path] = []
    registry = instances_dir()
    if registry.is_dir():
        for entry in sorted(registry.iterdir()):
            try:
                path = Path(json.loads(entry.read_text())["state_dir"])
            except (OSError, ValueError, KeyError, TypeError):
                entry.unlink(missing_ok=True)  # unreadable: nothing can be found through it
                continue
            if (path / STATE_FILE).is_file():
                found.append(path)
            else:
                entry.unlink(missing_ok=True)  # the state dir is gone: so are its boards' records
    legacy = legacy_state_dir().resolve()
    if (legacy / STATE_FILE).is_file() and legacy not in found:
        found.append(legacy)
    return found
