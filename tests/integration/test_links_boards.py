"""A dead link to an emulated ARM board (its userspace link shaper frozen with SIGSTOP: frames stop
in both directions, nothing tells either end) fails within the board's stall_timeout with the bytes
the board acknowledged, and the re-run resumes from what arrived."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import signal
import time
from pathlib import Path

import pytest

from deployer.errors import RemoteError
from deployer.sim.state import load_state
from deployer.ssh import transfer
from deployer.ssh.connect import connect
from deployer.targets import load_targets

pytestmark = [pytest.mark.boards, pytest.mark.slow]


def test_frozen_link_to_an_emulated_board_fails_in_time_and_the_rerun_resumes(sim_boards, tmp_path: Path) -> None:
    inv = load_targets(sim_boards.targets)
    root = f"links-{secrets.token_hex(3)}"
    board = dataclasses.replace(inv.board(sim_boards.shaped), keepalive=0.5, stall_timeout=4.0, runtime_dir=root)
    shaper = load_state(sim_boards.state_dir).board(sim_boards.shaped).shaper
    assert shaper is not None and shaper.alive()
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(3_000_000))           # ~1.5 s on the board's 20 Mbit/s link
    remote = f"{root}/models/m.bin"
    frozen: list[float] = []

    def cut(path: str, done: int, total: int) -> None:
        if done > total // 3 and not frozen:
            shaper.signal(signal.SIGSTOP)
            frozen.append(time.monotonic())

    c = connect(board)
    try:
        with pytest.raises(RemoteError) as e:
            transfer.upload(c, src, remote, cut)
        took = time.monotonic() - frozen[0]
    finally:
        shaper.signal(signal.SIGCONT)
        c.close()
    msg = str(e.value)
    assert took < 4.0 + 5, f"took {took:.1f} s"
    assert "no answer from the board" in msg and f"board '{sim_boards.shaped}'" in msg
    acked = int(re.search(r"\((\d+) of 3000000 bytes", msg).group(1))
    assert 0 < acked < 3_000_000
    with connect(board) as c:
        r = transfer.upload(c, src, remote)
        assert r.resumed_from >= acked and r.sent == r.size - r.resumed_from
        assert transfer.remote_sha256(c, [remote])[remote] == hashlib.sha256(src.read_bytes()).hexdigest()
        left = c.run(["ls", "-A", "--", f"{root}/models"]).stdout.split()
        c.run(["rm", "-rf", "--", root])
    assert left == ["m.bin"] or sorted(left) == [".deployer-manifest.json", "m.bin"]
