"""`deployer run` when the board's sshd closes the runner's channel without an exit status (the
case deployer.fleet.health tolerates too): the run is whole if the runner's stats line had arrived,
else it is one RemoteError naming the board and how far it got. The stream is scripted: an sshd
that drops the status on demand cannot be had."""

from __future__ import annotations

import datetime as _dt
import json

import pytest

from deployer.errors import RemoteError
from deployer.remote.session import Session
from deployer.ssh.connect import ClosedWithoutStatus

BOARD = {"type": "board", "facts": {"machine": "aarch64"}, "options": {"threads": 1}}
ITERS = [{"type": "iter", "i": i, "ms": 10.0 + i} for i in range(3)]
STATS = {"type": "stats", "count": 3}


class _Stream:
    def __init__(self, lines: list[dict]) -> None:
        self.lines, self.rc, self.stderr = lines, None, ""

    def __iter__(self):
        yield from (json.dumps(ln) for ln in self.lines)
        raise ClosedWithoutStatus("board 'pi': `runner.py` ended without an exit status or signal")


class _Conn:
    alive = True


def _session() -> Session:
    s = Session.__new__(Session)
    s.name, s.conn, s.on_event = "pi", _Conn(), None
    return s


def _collect(lines: list[dict]):
    s = _session()
    return s._collect(s._guard(_Stream(lines)), _dt.datetime.now(_dt.timezone.utc), {"kind": "python"}, {})


def test_a_close_after_the_stats_line_keeps_the_run():
    result = _collect([BOARD, *ITERS, STATS])
    assert result.samples_ms == [10.0, 11.0, 12.0] and result.stats["count"] == 3


def test_a_close_before_the_stats_line_is_one_error_saying_so():
    with pytest.raises(RemoteError) as err:
        _collect([BOARD, *ITERS[:2]])
    msg = err.value.message
    assert msg.startswith("pi: the runner stopped after 2 iteration(s) without results")
    assert "ended without an exit status" in msg


def test_a_dead_link_is_still_a_lost_connection():
    s = _session()
    s.conn.alive = False
    with pytest.raises(RemoteError, match="connection lost during the run"):
        s._collect(s._guard(_Stream([BOARD, *ITERS, STATS])), _dt.datetime.now(_dt.timezone.utc), {}, {})
