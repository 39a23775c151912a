"""Where the simulator keeps things, in one place so the CLI, the library and the test fixtures agree.

Sysroots are a cache shared by every simulator instance on the machine; the state dir (client key,
board overlays, state.json) belongs to one instance, so tests can run their own boards next to a
user's without touching them.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from deployer.fsutil import cache_dir  # noqa: F401 - the sim's paths hang off the one cache


def sysroots_dir() -> Path:
    return cache_dir() / "sysroots"


def default_state_dir(targets_dir: Path | None = None) -> Path:
    """DEPLOYER_SIM_DIR, else the instance of a targets folder (./targets unless given):
    $DEPLOYER_CACHE/sim/<folder>-<hash of its absolute path>. Two checkouts are two instances, so
    `sim down` in one never stops the other's boards (`sim down --all` does, on purpose)."""
    env = os.environ.get("DEPLOYER_SIM_DIR")
    if env:
        return Path(env).expanduser()
    folder = (targets_dir or Path("targets")).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.parent.name or "root")[:32]
    return cache_dir() / "sim" / f"{label}-{digest}"


def legacy_state_dir() -> Path:
    """The single machine-wide instance of deployer before instances were per targets folder."""
    return cache_dir() / "sim"


def instances_dir() -> Path:
    """Machine-wide list of instances that have boards up (one file per state dir), for `sim down --all`.
    /run is emptied at boot, like the boards themselves. DEPLOYER_SIM_REGISTRY moves it (tests use a
    private one so their `--all` cannot reach anyone else's boards)."""
    return Path(os.environ.get("DEPLOYER_SIM_REGISTRY") or "/run/deployer-sim/instances")


# Machine-wide lock: board slots (netns names, 10.200.N.0/24 subnets) are shared by all instances.
GLOBAL_LOCK = Path("/run/deployer-sim.lock")


def python_module_env() -> dict[str, str]:
    """Environment for `python -m deployer.sim.<helper>` children: they must import this very package
    even when it is not installed (run from a checkout) and they start with cwd=/."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env
