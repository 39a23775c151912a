"""targets/sim.yaml and targets/sim_known_hosts for the running emulated boards.

Regenerated from the state on every change (the simulator owns these two files), so strict
host-key checking works against exactly the keys the boards made. With no boards left, both files
are removed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deployer.errors import DeployerError
from deployer.fsutil import write_text
from deployer.sim.state import BoardState

TARGETS_NAME = "sim.yaml"
KNOWN_HOSTS_NAME = "sim_known_hosts"
HEADER = ("# Written by `deployer sim up`: emulated ARM boards on this machine.\n"
          "# `deployer sim down` removes them; do not edit (it is regenerated).\n")


def check_ours(targets_dir: Path) -> None:
    """sim up rewrites and sim down deletes sim.yaml: one the user wrote (no header of ours) was
    silently replaced by the emulated boards' list, then removed."""
    targets = targets_dir / TARGETS_NAME
    try:
        with open(targets, "rb") as fh:
            head = fh.read(len(HEADER))
    except FileNotFoundError:
        return
    except OSError as err:
        raise DeployerError(f"{targets}: cannot read it ({err.strerror})") from None
    if head != HEADER.encode():
        raise DeployerError(f"{targets} was not written by deployer sim up, which would replace it",
                            hint="rename it, or give sim up another --targets-dir")


def write_targets(targets_dir: Path, client_key: Path, boards: list[BoardState]) -> Path:
    targets = targets_dir / TARGETS_NAME
    known = targets_dir / KNOWN_HOSTS_NAME
    if not boards:
        if targets_dir.is_dir():    # a folder that is gone or a file holds nothing of ours to remove
            for f in (targets, known):
                f.unlink(missing_ok=True)
        return targets
    doc = {
        "defaults": {"user": "pi", "key": str(client_key.resolve()), "known_hosts": KNOWN_HOSTS_NAME,
                     "python": "/usr/bin/python3"},
        "boards": {
            b.name: {"host": b.address, "port": 22, "tags": ["sim", b.arch], "timeout": 30,
                     "description": _describe(b),
                     # no Python on a minimal board: only the static native runtime runs there
                     **({"runtime": "native"} if getattr(b, "image", "standard") == "minimal" else {}),
                     **({"user": "dsim"} if b.arch == "host" else {})}   # light boards: deployer.sim.hostboard
            for b in sorted(boards, key=_order)
        },
    }
    write_text(known, "".join(known_hosts_line(b) for b in sorted(boards, key=_order)))
    write_text(targets, HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    return targets


def known_hosts_line(board: BoardState) -> str:
    keytype, key = board.host_key.split()[:2]
    return f"{board.address} {keytype} {key}\n"


def _describe(b: BoardState) -> str:
    link = f", link {b.link['spec']}" if b.link else ""
    image = ", no Python" if getattr(b, "image", "standard") == "minimal" else ""
    if b.arch == "host":
        return f"light board: host userland and sshd in a network namespace{link}"
    return f"emulated {b.arch} {b.model} (qemu-user {b.qemu_cpu}{link}{image})"


def _order(b: BoardState) -> int:
    return int(b.name.rsplit("-", 1)[-1])
