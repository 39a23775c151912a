"""Streams and transfers on an emulated ARM board (its own aarch64 sshd and shell under qemu-user)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from deployer.errors import RemoteError
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
    t = int(time.time()) - 600
    os.utime(src, (t, t))                       # not written in the same second as the push
    with connect(board) as c:
        dst = c.remote_path("test-xfer", "m.bin")
        first = transfer.upload(c, src, dst)
        again = transfer.upload(c, src, dst)
        full = transfer.upload(c, src, dst, checksum=True)
        c.run(["touch", dst], check=True)
        touched = transfer.upload(c, src, dst)
        on_board = c.run(["sha256sum", dst], check=True).stdout.split()[0]
        c.run(["rm", "-rf", c.remote_path("test-xfer")])
    assert not first.skipped and again.skipped
    assert [r.checked_by for r in (first, again, full, touched)] == ["upload", "manifest", "sha256", "sha256"]
    assert on_board == hashlib.sha256(src.read_bytes()).hexdigest()


def test_dropped_connection_mid_stream_raises_on_an_arm_board(sim_boards) -> None:
    board = load_targets(sim_boards.targets).board(sim_boards.pi4)
    with connect(board) as c:
        s = c.stream(["sh", "-c", "echo ready; exec sleep 3204"], check=False)
        with pytest.raises(RemoteError) as e:
            for line in s:
                assert line == "ready"
                assert kill_board_sessions(sim_boards, board.name) > 0
    msg = str(e.value)
    assert board.name in msg and "connection lost" in msg and "sleep 3204" in msg and s.rc is None


def kill_board_sessions(sim_boards, name: str) -> int:
    """SIGKILL the sshd processes below the board's listener: its live connections drop."""
    from deployer.sim.state import load_state

    listener = load_state(sim_boards.state_dir).board(name).init.pid
    children: dict[int, list[int]] = {}
    comm: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        try:
            st = (d / "stat").read_text() if d.name.isdigit() else ""
        except OSError:
            continue
        if st:
            comm[int(d.name)] = st[st.index("(") + 1: st.rindex(")")]
            children.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d.name))
    todo, killed = list(children.get(listener, [])), 0
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if comm.get(pid, "").startswith("sshd"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
