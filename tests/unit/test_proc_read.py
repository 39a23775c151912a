"""deployer.ssh.connect._Proc.read against paramiko's transport thread delivering a command's last
messages (output, exit status, EOF, close) while the reader is between two observations. A
scripted channel makes the interleaving deterministic: each attribute read can "deliver" the next
messages, as the transport thread may at any moment."""

from __future__ import annotations

import os
import threading

import pytest

from deployer.ssh.connect import ClosedWithoutStatus, _Proc

_READY = os.pipe()              # select() on a channel: a pipe that is always readable is enough here
os.write(_READY[1], b"x")


class _Chan:
    """Delivers the remaining messages the first time `deliver_on` ("closed" or "eof") is read."""

    def __init__(self, deliver_on: str, data: bytes = b"", status: int | None = 0) -> None:
        self.deliver_on, self.data, self.status = deliver_on, data, status
        self.buf = b""
        self.exit_status, self.status_event = -1, threading.Event()
        self._eof = self._closed = False
        self.delivered = False

    def _deliver(self, attr: str) -> None:
        if attr == self.deliver_on and not self.delivered:
            self.delivered = True
            self.buf += self.data
            if self.status is not None:
                self.exit_status = self.status
            self.status_event.set()                 # paramiko sets it on close too
            self._eof = self._closed = True

    @property
    def closed(self) -> bool:
        self._deliver("closed")
        return self._closed

    @property
    def eof_received(self) -> bool:
        self._deliver("eof")
        return self._eof

    def recv_ready(self) -> bool:
        return bool(self.buf)

    def recv_stderr_ready(self) -> bool:
        return False

    def recv(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_exit_status(self) -> int:
        return self.exit_status

    def fileno(self) -> int:
        return _READY[0]

    def close(self) -> None:
        pass


class _Transport:
    def is_active(self) -> bool:
        return True


class _Conn:
    transport = _Transport()

    class board:
        where = "board 'b'"

    def lost(self, wait: float = 0.0) -> bool:
        return False


def _read(chan: _Chan) -> tuple[bytes, int | None]:
    proc = _Proc(_Conn(), ["runner"], chan)
    out = b"".join(proc.read(None))
    return out, proc.rc


def test_status_and_close_arriving_together_is_an_exit_not_a_lost_status():
    """The status, EOF and close land between two of the reader's observations: it is an exit
    (before the fix the stale status read made this 'ended without an exit status')."""
    out, rc = _read(_Chan("closed", data=b"last line\n"))
    assert out == b"last line\n" and rc == 0


def test_output_arriving_with_the_close_is_read_not_dropped():
    out, rc = _read(_Chan("closed", data=b"x" * 100_000, status=3))
    assert out == b"x" * 100_000 and rc == 3


def test_a_close_with_no_status_at_all_is_still_reported():
    with pytest.raises(ClosedWithoutStatus, match="ended without an exit status"):
        _read(_Chan("closed", status=None))
