"""deployer.ssh.transfer against a real sshd on loopback: the 'board' filesystem is this machine's, so
every check reads the uploaded file straight from disk (independent of our SFTP/hash code)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from deployer.errors import DeployerError, RemoteError
from deployer.ssh import manifest, transfer
from deployer.ssh.connect import connect

pytestmark = pytest.mark.sshd


def as_board_user(*paths: Path) -> None:
    """Things the test plants on the 'board' must belong to the login user, as on a real board."""
    for p in paths:
        shutil.chown(p, "dpltest", "dpltest")


def listing(folder: Path) -> list[str]:
    """The folder's files apart from deployer's upload manifest."""
    return sorted(p.name for p in folder.iterdir() if p.name != manifest.MANIFEST_NAME)


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def loop(sshd):
    return sshd.board("loop")


@pytest.fixture
def rdir(sshd, request) -> Path:
    """A fresh remote folder per test (on the loopback 'board', i.e. this disk)."""
    d = Path(sshd.remote_scratch) / "xfer" / request.node.name
    return d


def test_upload_creates_folders_verifies_and_keeps_the_mode(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "tool.sh"
    src.write_bytes(b"#!/bin/sh\necho hi\n" + os.urandom(300_000))
    src.chmod(0o750)
    seen: list[tuple[int, int]] = []
    with connect(loop) as c:
        r = transfer.upload(c, src, str(rdir / "deep" / "er" / "tool.sh"), lambda p, d, t: seen.append((d, t)))
    dst = rdir / "deep" / "er" / "tool.sh"
    assert sha(dst) == sha(src) == r.sha256 and r.size == src.stat().st_size
    assert (r.skipped, r.sent, r.resumed_from) == (False, r.size, 0)
    assert dst.stat().st_mode & 0o777 == 0o750 and dst.owner() == "dpltest"
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (r.size, r.size)
    assert listing(dst.parent) == ["tool.sh"]     # no temp files left


def test_unchanged_files_are_skipped_changed_ones_resent(loop, rdir: Path, tmp_path: Path) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"m{i}.bin"
        f.write_bytes(os.urandom(50_000 + i))
        files.append((f, str(rdir / f.name)))
    with connect(loop) as c:
        first = transfer.upload_many(c, files)
        again = transfer.upload_many(c, files)
        files[1][0].write_bytes(os.urandom(50_001))      # same size, new bytes
        third = transfer.upload_many(c, files)
    assert [r.skipped for r in first] == [False] * 3
    assert [r.skipped for r in again] == [True] * 3 and sum(r.sent for r in again) == 0
    assert [r.skipped for r in third] == [True, False, True]
    assert all(sha(rdir / f.name) == sha(f) for f, _ in files)


def test_remote_edit_is_detected_by_hash_not_size(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"A" * 4096)
    with connect(loop) as c:
        transfer.upload(c, src, str(rdir / "a.bin"))
        (rdir / "a.bin").write_bytes(b"B" * 4096)        # same size and name, different bytes on the board
        r = transfer.upload(c, src, str(rdir / "a.bin"))
        assert not r.skipped and sha(rdir / "a.bin") == sha(src)
        assert transfer.remote_sha256(c, [str(rdir / "a.bin"), str(rdir / "nope")]) == {
            str(rdir / "a.bin"): sha(src), str(rdir / "nope"): None}


def test_cut_off_upload_keeps_old_file_and_retry_resumes(sshd, loop, rdir: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(os.urandom(1_000_000))
    new.write_bytes(os.urandom(24_000_000))
    dst = rdir / "model.bin"
    with connect(loop) as c:
        transfer.upload(c, old, str(dst))
    killed = []

    def cut(remote: str, done: int, total: int) -> None:
        if done > total // 2 and not killed:
            killed.append(done)
            assert sshd.server.kill_sessions() > 0        # the link dies mid-transfer

    c = connect(loop)
    with pytest.raises(RemoteError) as e:
        transfer.upload(c, new, str(dst), cut)
    c.close()
    msg = str(e.value)
    assert "board 'loop'" in msg and "connection lost" in msg and "model.bin" in msg and "resume" in msg
    assert sha(dst) == sha(old)                              # the real name still holds the old file
    parts = [p for p in rdir.iterdir() if p.name.startswith(".model.bin.part-")]
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < new.stat().st_size

    with connect(loop) as c:
        r = transfer.upload(c, new, str(dst))
    assert sha(dst) == sha(new) and not r.skipped
    assert r.resumed_from > 0 and r.resumed_from + r.sent == r.size
    assert listing(rdir) == ["model.bin"]


def test_ctrl_c_mid_upload_stays_an_interrupt(loop, rdir: Path, tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM) mid-upload can cut an SSH packet in half, which ends the session; closing
    the remote file then failed and that error replaced the interrupt: 'connection lost', exit 3,
    and `run`/`push` on a group went on to the next board."""
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(2_000_000))
    c = connect(loop)

    def interrupt(remote: str, done: int, total: int) -> None:
        if done > 0:
            c.transport.sock.sendall(b"\0" * 9)   # a packet cut short by the signal: the board's sshd hangs up
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            transfer.upload(c, src, str(rdir / "m.bin"), interrupt)
    finally:
        c.close()


def test_corrupt_partial_file_is_not_resumed(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(2_000_000))
    rdir.mkdir(parents=True)
    digest = sha(src)
    part = rdir / f".m.bin.part-{digest[:16]}-deadhost-1-abcdef"
    part.write_bytes(b"\0" * 500_000)                        # same name scheme, wrong bytes
    as_board_user(rdir, part)
    with connect(loop) as c:
        r = transfer.upload(c, src, str(rdir / "m.bin"))
    assert r.resumed_from == 0 and r.sent == r.size and sha(rdir / "m.bin") == digest


def test_other_processes_temp_files_are_left_alone(loop, rdir: Path, tmp_path: Path) -> None:
    """An upload never deletes a temp file it did not create: it may be another push's live file
    (the stale sweep under the board lock removes old ones: tests/integration/test_links.py)."""
    rdir.mkdir(parents=True)
    other = rdir / ".m.bin.part-0123456789abcdef-otherhost-4242-abcdef"
    other.write_bytes(b"another push, still writing")
    as_board_user(rdir, other)
    src = tmp_path / "m.bin"
    src.write_bytes(b"x" * 1000)
    with connect(loop) as c:
        transfer.upload(c, src, str(rdir / "m.bin"))
    assert listing(rdir) == [other.name, "m.bin"]
    assert other.read_bytes() == b"another push, still writing"


def test_bad_paths_and_permissions_give_one_line_errors(loop, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(b"x")
    with connect(loop) as c:
        with pytest.raises(DeployerError, match="escapes its folder|contains '..'"):
            transfer.upload(c, src, "models/../../etc/m.bin")
        with pytest.raises(DeployerError, match="not found"):
            transfer.upload(c, tmp_path / "missing.bin", "x.bin")
        with pytest.raises(DeployerError, match="reserved"):
            transfer.upload(c, src, f"models/{manifest.MANIFEST_NAME}")
        with pytest.raises(DeployerError) as e:
            transfer.upload(c, src, "/root/deployer-test.bin")      # the login user cannot write there
        assert "board 'loop'" in str(e.value) and "\n" not in str(e.value)


def test_download_round_trip(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "r.bin"
    src.write_bytes(os.urandom(3_000_000))
    with connect(loop) as c:
        transfer.upload(c, src, str(rdir / "r.bin"))
        got = transfer.download(c, str(rdir / "r.bin"), tmp_path / "back" / "r.bin")
    assert got == sha(src) == sha(tmp_path / "back" / "r.bin")


def test_board_without_python_uses_sh_and_sha256sum(loop, rdir: Path, tmp_path: Path) -> None:
    import dataclasses

    no_py = dataclasses.replace(loop, python="/nonexistent/python3")
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(700_000))
    with connect(no_py) as c:
        first = transfer.upload(c, src, str(rdir / "m.bin"))
        again = transfer.upload(c, src, str(rdir / "m.bin"))
    assert not first.skipped and again.skipped and sha(rdir / "m.bin") == sha(src)
    assert listing(rdir) == ["m.bin"]


def test_progress_reports_every_file_to_its_full_size(loop, rdir: Path, tmp_path: Path) -> None:
    files = []
    for name in ("a.param", "b.bin"):
        (tmp_path / name).write_bytes(os.urandom(200_000))
        files.append((tmp_path / name, str(rdir / name)))
    seen: dict[str, tuple[int, int]] = {}
    with connect(loop) as c:
        transfer.upload_many(c, files, lambda remote, done, total: seen.__setitem__(remote, (done, total)))
    assert seen == {str(rdir / "a.param"): (200_000, 200_000), str(rdir / "b.bin"): (200_000, 200_000)}


# --- the manifest quick check (size + mtime against what deployer recorded) -------------------------

def backdate(path: Path, seconds: int = 1000) -> int:
    """Set a board file's mtime into the past (as a restore or `touch -d` would); returns it."""
    t = int(path.stat().st_mtime) - seconds
    os.utime(path, (t, t))
    return t


def no_remote_commands(c, monkeypatch) -> list:
    """Record every remote command the connection starts (the quick check must start none)."""
    started: list = []
    for name in ("run", "stream"):
        real = getattr(c, name)
        monkeypatch.setattr(c, name, lambda argv, *a, _real=real, **k: (started.append(argv), _real(argv, *a, **k))[1])
    return started


def test_repush_of_unchanged_files_runs_no_remote_command(loop, rdir: Path, tmp_path: Path, monkeypatch) -> None:
    files = []
    for name in ("m.param", "m.bin"):
        (tmp_path / name).write_bytes(os.urandom(100_000))
        backdate(tmp_path / name)              # edited a while ago, as models usually are
        files.append((tmp_path / name, str(rdir / name)))
    with connect(loop) as c:
        first = transfer.upload_many(c, files)
        started = no_remote_commands(c, monkeypatch)
        second = transfer.upload_many(c, files)
    assert [r.checked_by for r in first] == ["upload", "upload"]
    assert [(r.skipped, r.checked_by, r.sent) for r in second] == [(True, "manifest", 0)] * 2
    assert started == []
    for f, r in files:                         # the board's copy carries the local mtime (like scp -p)
        assert int(Path(r).stat().st_mtime) == int(f.stat().st_mtime)
    entries = manifest.decode((rdir / manifest.MANIFEST_NAME).read_bytes())
    assert entries == {Path(r).name: manifest.Entry(f.stat().st_size, int(f.stat().st_mtime), sha(f))
                       for f, r in files}


def test_file_written_in_the_manifests_second_is_rehashed_once(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(100_000))       # local mtime = now: the manifest is written in the same second
    with connect(loop) as c:
        transfer.upload(c, src, str(rdir / "m.bin"))
        man_mtime = int((rdir / manifest.MANIFEST_NAME).stat().st_mtime)
        r = transfer.upload(c, src, str(rdir / "m.bin"))
    if int(src.stat().st_mtime) >= man_mtime:
        assert (r.skipped, r.checked_by) == (True, "sha256")
    else:                                      # the clock ticked over between writing and recording
        assert (r.skipped, r.checked_by) == (True, "manifest")


def test_touched_file_is_rehashed_not_resent(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(200_000))
    dst = rdir / "m.bin"
    with connect(loop) as c:
        transfer.upload(c, src, str(dst))
        backdate(dst)
        transfer.upload(c, src, str(dst))             # recorded with the old mtime
        os.utime(dst)                                 # `touch`: new mtime, same bytes
        touched = transfer.upload(c, src, str(dst))
        again = transfer.upload(c, src, str(dst))
    assert (touched.skipped, touched.checked_by, touched.sent) == (True, "sha256", 0)
    # the touch happened in the manifest's second or later: trusted only after the next record
    assert again.skipped and again.checked_by in ("manifest", "sha256")
    assert sha(dst) == sha(src)


def test_same_size_edit_with_mtime_put_back_needs_checksum(loop, rdir: Path, tmp_path: Path) -> None:
    """The documented trade-off (rsync's quick check), and checksum=True catching it."""
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(100_000))
    dst = rdir / "m.bin"
    with connect(loop) as c:
        transfer.upload(c, src, str(dst))
        t = backdate(dst)
        transfer.upload(c, src, str(dst))
        dst.write_bytes(os.urandom(100_000))          # edited on the board: same size ...
        os.utime(dst, (t, t))                         # ... and the mtime put back
        quick = transfer.upload(c, src, str(dst))
        assert (quick.skipped, quick.checked_by) == (True, "manifest") and sha(dst) != sha(src)
        full = transfer.upload(c, src, str(dst), checksum=True)
    assert (full.skipped, full.checked_by, full.sent) == (False, "upload", 100_000) and sha(dst) == sha(src)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "edited entry", "not ours"])
def test_damaged_manifest_falls_back_to_hashing(loop, rdir: Path, tmp_path: Path, damage: str) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(100_000))
    dst, man = rdir / "m.bin", rdir / manifest.MANIFEST_NAME
    with connect(loop) as c:
        transfer.upload(c, src, str(dst))
        backdate(dst)
        transfer.upload(c, src, str(dst))
        # the board's file changes (same size), and the manifest is damaged
        dst.write_bytes(os.urandom(100_000))
        t = backdate(dst, 500)
        text = man.read_text()
        recorded = str(manifest.decode(text.encode())["m.bin"].mtime)
        assert text.count(recorded) == 1
        damaged = {
            "garbage": "\0\1 not json",
            "truncated": text[: len(text) // 2],
            # someone makes the entry vouch for the new stat without knowing the self-check
            "edited entry": text.replace(recorded, str(t)),
            "not ours": json.dumps({"format": 1, "files": {"m.bin": [100_000, int(t), sha(src)]}, "check": "0" * 64}),
        }[damage]
        assert damaged != text
        man.write_text(damaged)
        as_board_user(man)
        r = transfer.upload(c, src, str(dst))
    assert (r.skipped, r.checked_by) == (False, "upload") and sha(dst) == sha(src)
    assert manifest.decode(man.read_bytes())["m.bin"].sha256 == sha(src)      # rewritten, intact


def test_manifest_in_an_unwritable_folder_is_only_a_missed_shortcut(loop, rdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(10_000))
    dst = rdir / "m.bin"
    with connect(loop) as c:
        transfer.upload(c, src, str(dst))
        (rdir / manifest.MANIFEST_NAME).unlink()
        rdir.chmod(0o555)                             # files stay writable, the folder not
        try:
            r = transfer.upload(c, src, str(dst))
        finally:
            rdir.chmod(0o755)
    assert (r.skipped, r.checked_by) == (True, "sha256")
    assert listing(rdir) == ["m.bin"]


def test_big_folder_manifest_is_read_in_full(loop, rdir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(manifest, "_READ_MAX", 2048)      # so a few dozen entries need a second pass
    files = []
    for i in range(60):
        f = tmp_path / f"f{i:03d}.txt"
        f.write_bytes(b"%d" % i)
        backdate(f)
        files.append((f, str(rdir / f.name)))
    with connect(loop) as c:
        transfer.upload_many(c, files)
        again = transfer.upload_many(c, files)
    assert (rdir / manifest.MANIFEST_NAME).stat().st_size > 2 * 2048
    assert {r.checked_by for r in again} == {"manifest"}
