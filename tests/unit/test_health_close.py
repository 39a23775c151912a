"""deployer.fleet.health when the board's sshd closes the runner's channel without an exit status:
the run counts when the runner's last line (`stats`) had arrived, else the check runs once more.
The connection here is a scripted stand-in: an sshd that drops the status on demand cannot be had."""

from __future__ import annotations

import json

import pytest

from deployer.fleet.health import HealthPolicy, _run_whole
from deployer.ssh.connect import ClosedWithoutStatus

BOARD = {"type": "board", "facts": {}}
OUTPUT = {"type": "output", "blob": "out0", "shape": [1], "data": ""}
STATS = {"type": "stats", "median_ms": 1.0}


class _Stream:
    def __init__(self, lines: list[dict], closes: bool) -> None:
        self.lines, self.closes, self.stderr = lines, closes, "warn\n"

    def __enter__(self) -> "_Stream":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __iter__(self):
        yield from (json.dumps(ln) for ln in self.lines)
        if self.closes:
            raise ClosedWithoutStatus("board 'b': `runner` ended without an exit status")


class _Conn:
    def __init__(self, *runs: tuple[list[dict], bool]) -> None:
        self.runs, self.calls = list(runs), 0

    def stream(self, argv, **kw) -> _Stream:
        self.calls += 1
        return _Stream(*self.runs.pop(0))


def test_a_close_after_the_stats_line_keeps_the_whole_run():
    conn = _Conn(([BOARD, OUTPUT, STATS], True))
    lines, stderr = _run_whole(conn, ["runner"], HealthPolicy())
    assert [ln["type"] for ln in lines] == ["board", "output", "stats"] and stderr == "warn\n" and conn.calls == 1


def test_a_close_before_the_stats_line_runs_the_check_once_more():
    conn = _Conn(([BOARD], True), ([BOARD, OUTPUT, STATS], False))
    lines, _ = _run_whole(conn, ["runner"], HealthPolicy())
    assert [ln["type"] for ln in lines] == ["board", "output", "stats"] and conn.calls == 2


def test_a_second_odd_close_is_the_error():
    conn = _Conn(([BOARD], True), ([BOARD], True))
    with pytest.raises(ClosedWithoutStatus, match="ended without an exit status"):
        _run_whole(conn, ["runner"], HealthPolicy())
    assert conn.calls == 2
