"""Where the simulator keeps things, in one place so the CLI, the library and the test fixtures agree.

Sysroots are a cache shared by every simulator instance on the machine; the state dir (client key,
board overlays, state.json) belongs to one instance, so tests can run their own boards next to a
user's without touching them.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("DEPLOYER_CACHE") or Path.home() / ".cache" / "deployer").expanduser()


def sysroots_dir() -> Path:
    return cache_dir() / "sysroots"


def default_state_dir() -> Path:
    """DEPLOYER_SIM_DIR, else $DEPLOYER_CACHE/sim: one simulator instance (key, overlays, state.json)."""
    env = os.environ.get("DEPLOYER_SIM_DIR")
    return Path(env).expanduser() if env else cache_dir() / "sim"


# Machine-wide lock: board slots (netns names, 10.200.N.0/24 subnets) are shared by all instances.
GLOBAL_LOCK = Path("/run/deployer-sim.lock")


def python_module_env() -> dict[str, str]:
    """Environment for `python -m deployer.sim.<helper>` children: they must import this very package
    even when it is not installed (run from a checkout) and they start with cwd=/."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env
