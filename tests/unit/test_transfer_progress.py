"""Upload progress follows the board's acknowledgements as they arrive."""

from __future__ import annotations

import io

from paramiko.sftp import CMD_STATUS

from deployer.ssh import transfer


class _Channel:
    def __init__(self, sftp: "_Sftp") -> None:
        self.sftp = sftp

    def recv_ready(self) -> bool:
        return bool(self.sftp.answered)


class _Sftp:
    """Answers every write at once, in order, as OpenSSH's sftp-server does on a fast board."""

    def __init__(self) -> None:
        self.sock = _Channel(self)
        self.answered: list[int] = []
        self.log: list[tuple[str, int]] = []
        self.next = 0

    def _async_request(self, fileobj, t, *args) -> int:
        self.next += 1
        self.log.append(("sent", self.next))
        self.answered.append(self.next)
        return self.next

    def _read_response(self, num: int):
        assert self.answered.pop(0) == num
        return CMD_STATUS, None


def test_acknowledged_bytes_are_reported_while_the_file_is_still_being_sent() -> None:
    """Acks were read only once DEPTH (32 x 128 KiB) writes were in flight: a 6 MB push over a
    2 Mbit/s link read "0 B/6.0 MB (0%)" for 20 s while the board already had most of the file."""
    sftp = _Sftp()
    acked: list[int] = []
    chunks = 10           # fewer than DEPTH: before, every ack came after the last write
    data = io.BytesIO(b"x" * (transfer.CHUNK * chunks))

    def on_ack(n: int) -> None:
        acked.append(n)
        sftp.log.append(("acked", len(acked)))

    assert transfer.pipelined_write(sftp, b"h", data, 0, on_ack) == transfer.CHUNK * chunks
    assert sum(acked) == transfer.CHUNK * chunks
    first_ack = sftp.log.index(("acked", 1))
    last_sent = sftp.log.index(("sent", chunks))
    assert first_ack < last_sent
