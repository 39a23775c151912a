"""The board-side helper scripts (deployer/remote/board/), run here with the local python3 and sh
exactly as a board runs them (`python3 -c CODE args` / `sh -c CODE sh args`)."""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from deployer.remote import board

SCRIPTS = sorted(p.name for p in Path(board.__file__).parent.iterdir() if p.suffix in (".py", ".sh")
                 and p.name != "__init__.py")


def py(name: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", board.script(name), *args], capture_output=True, text=True,
                          timeout=30, **kw)


def sh(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", code, "sh", *args], capture_output=True, text=True, timeout=30, **kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_is_valid_python_or_posix_sh(name: str, tmp_path: Path) -> None:
    path = Path(board.__file__).parent / name
    if name.endswith(".py"):
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    else:
        assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    assert board.script(name) == path.read_text()


def _holder(purpose: str) -> str:
    return json.dumps({"purpose": purpose, "host": "h", "user": "u", "pid": 1, "command": "c", "since": "t"})


def test_lock_py_refuses_a_second_holder_naming_the_first_and_frees_on_stdin_eof(tmp_path: Path) -> None:
    lock = tmp_path / "d" / ".deployer.lock"
    first = subprocess.Popen([sys.executable, "-c", board.script("lock.py"), str(lock), "0", "30", _holder("push"),
                              "3600"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().split() == ["locked", "0"]
        second = py("lock.py", str(lock), "0", "30", _holder("run"), "3600", stdin=subprocess.DEVNULL)
        assert second.returncode == 75
        word, _, who = second.stdout.strip().partition(" ")
        assert word == "busy" and json.loads(who)["purpose"] == "push" and json.loads(who)["board_pid"] == first.pid
    finally:
        first.stdin.close()                       # the SSH channel closes
        assert first.wait(10) == 0
    assert lock.read_text() == ""                 # released: no stale holder left to report
    again = py("lock.py", str(lock), "0", "30", _holder("run"), "3600", stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and again.stdout.split()[0] == "locked"


def test_lock_py_waits_for_the_holder_and_expires_a_silent_one(tmp_path: Path) -> None:
    lock = tmp_path / ".deployer.lock"
    r, w = os.pipe()                              # stdin kept open but silent: a frozen controller
    first = subprocess.Popen([sys.executable, "-c", board.script("lock.py"), str(lock), "0", "1.5", _holder("push"),
                              "3600"], stdin=r, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().startswith("locked")
        t0 = time.monotonic()
        second = py("lock.py", str(lock), "10", "1", _holder("run"), "3600", stdin=r)   # a waiting caller stays
        waited = time.monotonic() - t0
        lines = second.stdout.splitlines()
        assert lines[0].startswith("waiting ") and json.loads(lines[0][8:])["purpose"] == "push"
        assert lines[-1].startswith("locked") and 0.5 < waited < 6
        assert first.wait(5) == 0                 # the lease ran out
    finally:
        os.close(w)
        os.close(r)


def test_lock_sweeps_old_temp_files_only(tmp_path: Path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    old = [d / ".m.bin.part-0123456789abcdef-h-1-aa", d / ".ncnn-1.tmp-77"]
    young = d / ".m.bin.part-0123456789abcdef-h-2-bb"
    keep = d / "m.bin"
    old[0].write_bytes(b"x")
    old[1].mkdir()
    (old[1] / "f").write_bytes(b"y")
    young.write_bytes(b"z")
    keep.write_bytes(b"m")
    past = time.time() - 7200
    for p in old + [keep]:
        os.utime(p, (past, past))
    res = py("lock.py", str(tmp_path / ".lock"), "0", "30", _holder("push"), "3600", str(d), str(tmp_path / "nope"),
             stdin=subprocess.DEVNULL)
    assert res.stdout.split()[:2] == ["locked", "2"]
    assert sorted(p.name for p in d.iterdir()) == sorted([young.name, keep.name])


def lock_sh(*args: str) -> list[str]:
    """lock.sh as deployer.remote.lock starts it (flock(1) first, lock.py without it)."""
    return ["sh", "-c", board.script("lock.sh"), "sh", board.script("lock.py"), sys.executable, *args]


@pytest.mark.skipif(not shutil.which("flock") or not shutil.which("timeout"), reason="needs flock(1), timeout(1)")
def test_lock_sh_busy_wait_lease_and_sweep(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    d = tmp_path / "models"
    d.mkdir()
    stale = d / ".m.bin.part-0123456789abcdef-h-1-aa"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    first = subprocess.Popen(lock_sh(str(lock), "0", "1.5", _holder("push"), "3600", str(d)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().split() == ["locked", "1"] and not stale.exists()
        holder = json.loads(lock.read_text())
        assert holder["purpose"] == "push" and isinstance(holder["board_pid"], int)
        busy = subprocess.run(lock_sh(str(lock), "0", "30", _holder("run"), "3600"), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=10)
        assert busy.returncode == 75 and json.loads(busy.stdout.strip()[5:])["purpose"] == "push"
        for _ in range(4):                         # heartbeats keep the 1.5 s lease alive
            first.stdin.write(".")
            first.stdin.flush()
            time.sleep(0.5)
        assert first.poll() is None
        t0 = time.monotonic()                      # then silence: the lease runs out, a waiter gets in
        r, w = os.pipe()
        try:
            waiter = subprocess.run(lock_sh(str(lock), "10", "0.2", _holder("run"), "3600"), capture_output=True,
                                    text=True, stdin=r, timeout=20)
        finally:
            os.close(w)
            os.close(r)
        lines = waiter.stdout.splitlines()
        assert lines[0].startswith("waiting ") and lines[-1].startswith("locked") and time.monotonic() - t0 < 6
        assert first.wait(5) == 0
    finally:
        if first.poll() is None:
            first.kill()


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock(1)")
def test_lock_sh_is_released_on_stdin_eof(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    first = subprocess.Popen(lock_sh(str(lock), "0", "30", _holder("push"), "3600"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("locked")
    first.stdin.close()
    assert first.wait(5) == 0 and lock.read_text() == ""
    again = subprocess.run(lock_sh(str(lock), "0", "30", _holder("run"), "3600"), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=10)
    assert again.stdout.startswith("locked")


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock(1)")
def test_lock_sh_names_a_runtime_folder_that_is_a_file(tmp_path: Path) -> None:
    """sh ended at the failed `exec 9>>` (rc 2, no answer): 'the lock helper ended without an answer'."""
    (tmp_path / ".deployer").write_text("x")
    res = subprocess.run(lock_sh(str(tmp_path / ".deployer" / ".lock"), "0", "30", _holder("push"), "3600"),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
    assert res.returncode == 1 and res.stdout.startswith("error ") and ".deployer is not a folder" in res.stdout


@pytest.mark.parametrize("python", [sys.executable, "/nonexistent/python3"])
def test_state_reports_target_sha_best_partial_and_free_space(tmp_path: Path, python: str) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.bin").write_bytes(b"old")
    small, big = d / ".a.bin.part-1111111111111111-h-1-aa", d / ".a.bin.part-1111111111111111-h-2-bb"
    small.write_bytes(b"12")
    big.write_bytes(b"12345")
    (d / ".a.bin.part-2222222222222222-h-3-cc").write_bytes(b"other content, larger than both")
    res = sh(board.script("state.sh"), board.script("state.py"), python,
             str(d / "a.bin"), str(d / ".a.bin.part-1111111111111111-"),
             str(tmp_path / "new" / "b.bin"), str(tmp_path / "new" / ".b.bin.part-3333333333333333-"))
    a, b = [ln.split("\t") for ln in res.stdout.splitlines()]
    assert a[:4] == [sha(b"old"), big.name, "5", sha(b"12345")]
    assert b[:4] == ["-", "-", "-", "-"] and (tmp_path / "new").is_dir()
    free = shutil.disk_usage(tmp_path).free
    assert abs(int(a[4]) - free) < 64 << 20 and a[5] == b[5] == str(os.stat(d).st_dev)


def test_follow_and_verify_check_sha_and_set_the_mode(tmp_path: Path) -> None:
    t = tmp_path / ".x.part-1"
    t.write_bytes(b"hello")
    res = py("follow.py", str(t), "5", sha(b"hello"), "640", str(t), "5", sha(b"other"), "600",
             input="0\n1\n")
    assert res.stdout.split("\n")[:2] == ["ok", f"bad {sha(b'hello')}"] and t.stat().st_mode & 0o777 == 0o640
    res = sh(board.script("verify.sh"), "604", str(t), sha(b"hello"), "600", str(t), sha(b"no"))
    assert res.stdout.splitlines() == ["ok", f"bad {sha(b'hello')}"] and t.stat().st_mode & 0o777 == 0o604


def test_unpack_is_atomic_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("ncnn/__init__.py", "x = 1\n")
    dest = tmp_path / "runtime" / "ncnn-1"
    res = py("unpack.py", str(wheel), str(dest), "abc")
    assert res.stdout.strip() == "unpacked" and (dest / ".deployer-sha256").read_text() == "abc\n"
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    res = py("unpack.py", str(broken), str(dest), "def")
    assert res.returncode == 1 and res.stdout.startswith("error ")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ncnn-1"]      # no .tmp-/.old- left
    assert (dest / ".deployer-sha256").read_text() == "abc\n"                # the old runtime stays


def test_kill_sh_refuses_anything_but_numbers() -> None:
    res = sh(board.script("kill.sh"), "1;id", "2", "3")
    assert res.returncode == 2 and "numbers only" in res.stderr
