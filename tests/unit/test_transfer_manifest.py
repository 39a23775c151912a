"""The upload manifest's format and its quick-check rule (pure logic; the SFTP side is tested
against a real sshd in tests/integration/test_transfer.py)."""

from __future__ import annotations

import json
import stat

import paramiko

from deployer.ssh import manifest
from deployer.ssh.manifest import BoardState, Entry, FolderManifest

SHA = "ab" * 32


def attrs(size: int, mtime: int, mode: int = stat.S_IFREG | 0o644) -> paramiko.SFTPAttributes:
    a = paramiko.SFTPAttributes()
    a.st_size, a.st_mtime, a.st_mode = size, mtime, mode
    return a


def test_round_trip_and_self_check() -> None:
    entries = {"m.bin": Entry(10, 1_700_000_000, SHA), "m.param": Entry(3, 1_700_000_001, "cd" * 32)}
    data = manifest.encode(entries)
    assert manifest.decode(data) == entries
    doc = json.loads(data)
    doc["files"]["m.bin"][0] = 11                         # edited without recomputing the check
    assert manifest.decode(json.dumps(doc).encode()) is None
    assert manifest.decode(data[:-20]) is None            # truncated
    assert manifest.decode(b"") is None and manifest.decode(b"[1, 2]") is None


def test_entries_of_the_wrong_shape_are_refused_even_with_a_valid_check() -> None:
    for bad in ([10, 5, "xyz"], [10, -5, SHA], [10.5, 5, SHA], [10, 5], [True, 5, SHA], "x"):
        files = {"m.bin": bad}
        doc = {"format": 1, "files": files, "check": manifest._digest(files)}
        assert manifest.decode(json.dumps(doc).encode()) is None, bad
    files = {"m.bin": [10, 5, SHA]}
    doc = {"format": 2, "files": files, "check": manifest._digest(files)}
    assert manifest.decode(json.dumps(doc).encode()) is None


def test_quick_check_rule() -> None:
    man = FolderManifest("models/.deployer-manifest.json", {"m.bin": Entry(10, 100, SHA)}, written=101)

    def unchanged(st, written=101, size=10, sha=SHA, remote="models/m.bin") -> bool:
        man.written = written
        return BoardState({"models": man}, {remote: st}).unchanged(remote, size, sha)

    assert unchanged(attrs(10, 100))
    assert not unchanged(attrs(10, 100), written=100)      # racy: modified in the manifest's second
    assert not unchanged(attrs(10, 100), written=None)     # no usable manifest
    assert not unchanged(attrs(10, 99))                    # touched
    assert not unchanged(attrs(11, 100), size=11)          # size changed on both sides
    assert not unchanged(attrs(10, 100), sha="cd" * 32)    # the local file changed
    assert not unchanged(None)                             # missing on the board
    assert not unchanged(attrs(10, 100, stat.S_IFDIR | 0o755))
    assert not unchanged(attrs(10, 100), remote="other/m.bin")   # another folder's manifest knows nothing
