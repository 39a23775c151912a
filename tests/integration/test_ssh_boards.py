"""Streams and transfers on an emulated ARM board (its own aarch64 sshd and shell under qemu-user)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from deployer.ssh import transfer
from deployer.ssh.connect import connect
from deployer.targets import load_targets

pytestmark = [pytest.mark.boards, pytest.mark.slow]


def test_stream_close_kills_the_process_group_on_an_arm_board(sim_boards) -> None:
    board = load_targets(sim_boards.targets).board(sim_boards.pi4)
    with connect(board) as c:
        with c.stream(["sh", "-c", "sleep 3201 & echo started; sleep 3202"]) as s:
            assert next(iter(s)) == "started"
            assert s.pgid and s.pgid > 1
            assert group_size(c, s.pgid) == 3          # sh + two sleeps
        assert group_size(c, s.pgid) == 0


def group_size(c, pgid: int) -> int:
    """Live (non-zombie) processes of a process group on the board."""
    out = c.run(["ps", "-eo", "pgid=,stat="], check=True).stdout
    return sum(1 for line in out.splitlines() if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z"))


def test_upload_to_an_arm_board_is_verified_there_and_skipped_next_time(sim_boards, tmp_path: Path) -> None:
    board = load_targets(sim_boards.targets).board(sim_boards.armhf)
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(1_500_000))
    with connect(board) as c:
        dst = c.remote_path("test-xfer", "m.bin")
        first = transfer.upload(c, src, dst)
        again = transfer.upload(c, src, dst)
        on_board = c.run(["sha256sum", dst], check=True).stdout.split()[0]
        c.run(["rm", "-rf", c.remote_path("test-xfer")])
    assert not first.skipped and again.skipped
    assert on_board == hashlib.sha256(src.read_bytes()).hexdigest()
