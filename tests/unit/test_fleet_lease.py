"""The lease of fleet.sh's locked session (same semantics as deployer.remote.lock) and its gc on a
board without awk, run for real with the host's POSIX shells."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.test_fleet_board import SHELLS, _argv, make_release


def _lock_free(root: Path) -> bool:
    return subprocess.run(["flock", "-n", str(root / ".deployer.lock"), "true"], check=False).returncode == 0


def _wait_free(root: Path, limit: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if _lock_free(root):
            return time.monotonic() - t0
        time.sleep(0.1)
    return -1.0


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock(1)")
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("how", ["argument", "command"])
def test_a_silent_host_loses_the_lock_after_the_lease_a_talking_one_keeps_it(shell, how, tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    lease = 3       # with 2 s it failed once on a host other jobs loaded: the session went 2 s without a beat
    extra = [str(lease)] if how == "argument" else []
    proc = subprocess.Popen(_argv(shell, "session", str(root), "0", '{"purpose": "deploy"}', *extra),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        if how == "command":
            proc.stdin.write(f"lease {lease}\n")
            proc.stdin.flush()
        for _ in range(10):                 # 5 s of heartbeats: longer than the lease, still held
            time.sleep(0.5)
            proc.stdin.write("beat\n")
            proc.stdin.flush()
        assert not _lock_free(root) and proc.poll() is None
        proc.stdin.write("state r-1\n")     # still answering
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "current -"
        # silence (stdin stays open, as on a dead link): the board ends the session and frees the lock
        waited = _wait_free(root, 10)
        assert 0 < waited <= lease * 2 + 2, waited
        assert proc.wait(5) != 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("shell", SHELLS)
def test_without_lease_a_silent_host_keeps_the_lock(shell, tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    proc = subprocess.Popen(_argv(shell, "session", str(root), "0", '{"purpose": "deploy"}'),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        time.sleep(3)
        assert not _lock_free(root) and proc.poll() is None
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert _lock_free(root)


@pytest.mark.parametrize("shell", [s for s in SHELLS if s != "busybox"])
def test_gc_keeps_previous_releases_on_a_board_without_awk(shell, tmp_path, monkeypatch):
    """Debian's awk is an alternatives link that unpacked images can lack: gc must not read a
    missing keep list as "keep nothing"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sha256sum", "cut", "chmod", "sync", "mv", "rm", "mkdir", "ln", "cp", "readlink", "date", "df",
                 "stat", "ls", "wc", "tr", "sed", "tail", "flock", "head", "du", "cat", "sleep", shell):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    assert not (bin_dir / "awk").exists()
    monkeypatch.setenv("PATH", str(bin_dir))
    root = tmp_path / "store"
    for i in range(1, 6):
        out = make_release(shell, root, f"m-{i}", f"payload {i}".encode())
        assert out[-1].startswith("ok releases="), out
    assert sorted(os.listdir(root / "releases")) == ["m-3", "m-4", "m-5"]     # `gc 2` + current


def _session_members(sid: int) -> list[str]:
    """Command lines of the live processes in session `sid` (zombies excluded)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()        # after "(comm)": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(cmd)
    return out


@pytest.mark.parametrize("shell", SHELLS)
def test_a_session_with_a_lease_leaves_no_process_on_the_board(shell, tmp_path):
    """Ending the session killed the lease watcher's shell but not the `sleep` it was waiting on:
    every deploy/status left a `sleep 20` running on each board after the command had ended."""
    root = tmp_path / "store"
    root.mkdir()
    proc = subprocess.Popen(_argv(shell, "session", str(root), "0", '{"purpose": "deploy"}', "60"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        time.sleep(0.3)                      # the watcher is in its first `sleep 20`
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(5) == 0
        deadline = time.monotonic() + 2
        while _session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _session_members(proc.pid) == []
    finally:
        proc.kill()
        proc.wait()
