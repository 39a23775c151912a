"""Dead links, cut links, full disks, concurrent use and hostile targets files, against a real sshd.

The loopback 'board' is this machine, so every check reads the board's files straight from disk.
A dead link is made by SIGSTOP-ing the sshd processes serving the connection (the kernel still
acks TCP, so only deployer's own keepalive watchdog can notice); a cut link by SIGKILL-ing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from deployer.errors import DeployerError, RemoteError
from deployer.remote import runtime as rt
from deployer.remote.lock import BoardBusy, board_lock
from deployer.remote.session import BoardFailure, RunOptions, run_boards
from deployer.ssh import manifest, transfer
from deployer.ssh.connect import connect
from deployer.targets import load_targets
from tests.fixtures.runner import require_cached_wheels, tiny_models  # noqa: F401  (fixture)
from tests.fixtures.sshd import TEST_USER, free_port, start_sshd

pytestmark = pytest.mark.sshd

DEPLOYER = [str(Path(sys.executable).with_name("deployer"))]
STALL = 3.0          # stall_timeout of the test boards: a dead link must fail within this (+ slack)


def deployer(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})


def sha(p: Path | bytes) -> str:
    return hashlib.sha256(p if isinstance(p, bytes) else Path(p).read_bytes()).hexdigest()


def board_files(folder: Path) -> list[str]:
    """Everything in a board folder, temp files included, minus the upload manifest."""
    return sorted(p.name for p in folder.iterdir() if p.name != manifest.MANIFEST_NAME) if folder.exists() else []


def write_targets(sshd, path: Path, root: str, extra_boards: str = "") -> Path:
    path.write_text(
        "defaults:\n"
        f"  user: {sshd.user}\n  key: {sshd.client_key}\n  known_hosts: {sshd.known_hosts}\n"
        f"  timeout: 3\n  retries: 0\n  keepalive: 0.5\n  stall_timeout: {STALL}\n"
        "boards:\n"
        f"  loop:\n    host: 127.0.0.1\n    port: {sshd.server.port}\n    runtime_dir: {root}\n"
        f"  loop2:\n    host: 127.0.0.1\n    port: {sshd.server.port}\n    runtime_dir: {root}\n"
        + extra_boards
    )
    return path


@pytest.fixture
def env(sshd, tmp_path: Path):
    """(inventory, targets file, the board's deploy root on this disk) with short deadlines."""
    root = Path(sshd.remote_scratch) / f"links-{secrets.token_hex(3)}"
    targets = write_targets(sshd, tmp_path / "targets.yaml", str(root))
    yield load_targets(targets), targets, root
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def frozen(server):
    """SIGSTOP the sshd processes serving the current connections: the board stops answering
    while TCP stays up. Afterwards they are continued and killed (the link is gone for good)."""
    pids = server.session_pids()
    assert pids, "no live session to freeze"
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
                os.kill(p, signal.SIGKILL)


def as_board_user(*paths: Path) -> None:
    for p in paths:
        shutil.chown(p, TEST_USER, TEST_USER)


# --- the board lock --------------------------------------------------------------------------------

def test_lock_refuses_naming_the_holder_then_waits_for_it(env) -> None:
    inv, _, root = env
    board = inv.board("loop")
    with connect(board) as c1, connect(board) as c2, connect(board) as c3:
        with board_lock(c1, purpose="push") as held:
            assert held.path.endswith("/.deployer.lock") and Path(held.path).is_file()
            t0 = time.monotonic()
            with pytest.raises(BoardBusy) as e:
                with board_lock(c2, wait=0):
                    pass
            assert time.monotonic() - t0 < 3
            msg = str(e.value)
            assert "\n" not in msg and "board 'loop'" in msg and "busy" in msg
            assert f"push by {os.environ.get('USER') or 'root'}" in msg or "push by " in msg
            assert f"pid {os.getpid()}" in msg and e.value.exit_code == 3 and e.value.holder.purpose == "push"
            got: list = []
            waiter = threading.Thread(target=lambda: got.append(_take(c3, wait=10)))
            waiter.start()
            time.sleep(1.0)
        waiter.join(15)
    assert got and got[0] >= 0.8          # it waited for the first holder, then got the lock


def _take(conn, wait: float) -> float:
    with board_lock(conn, wait=wait, purpose="second") as held:
        return held.waited


def test_lock_is_freed_when_the_holders_session_dies_or_goes_silent(sshd, env) -> None:
    inv, _, _ = env
    board = inv.board("loop")
    c1 = connect(board)
    with board_lock(c1, purpose="push"):
        sshd.server.kill_sessions()                          # the controller's link is cut
        with connect(board) as c2:
            t0 = time.monotonic()
            with board_lock(c2, wait=10):
                assert time.monotonic() - t0 < 5
    c1.close()
    c1 = connect(board)
    with contextlib.ExitStack() as stack:
        stack.enter_context(board_lock(c1, purpose="push", lease=2))
        stack.enter_context(frozen(sshd.server))             # the holder's link hangs: no heartbeats
        with connect(board) as c2:
            t0 = time.monotonic()
            with board_lock(c2, wait=15) as held:
                assert held.waited < 8                       # freed by the 2 s lease, not by TCP (minutes)
    with contextlib.suppress(Exception):
        c1.close()


def test_stale_temp_files_are_swept_under_the_lock_live_ones_kept(env) -> None:
    inv, _, root = env
    models = root / "models"
    models.mkdir(parents=True)
    old_part = models / ".m.bin.part-0123456789abcdef-otherhost-1-aaaaaa"
    young_part = models / ".m.bin.part-0123456789abcdef-otherhost-2-bbbbbb"
    old_unpack = root / "runtime" / ".ncnn-1.0-cp311.tmp-4242"
    old_unpack.mkdir(parents=True)
    (old_unpack / "lib.so").write_bytes(b"x" * 1000)
    old_part.write_bytes(b"dead")
    young_part.write_bytes(b"live")
    past = time.time() - 2 * 3600
    for p in (old_part, old_unpack):
        os.utime(p, (past, past))
    as_board_user(root, models, root / "runtime", old_unpack, old_unpack / "lib.so", old_part, young_part)
    with connect(inv.board("loop")) as c, board_lock(c) as held:
        assert held.swept == 2
    assert board_files(models) == [young_part.name] and board_files(root / "runtime") == []


# --- dead and cut links -----------------------------------------------------------------------------

def test_dead_link_push_fails_within_the_deadline_with_the_true_byte_count(sshd, env, tmp_path: Path) -> None:
    inv, _, root = env
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40_000_000))
    dst = root / "models" / "big.bin"
    t_dead: list[float] = []
    stack = contextlib.ExitStack()

    def die(remote: str, done: int, total: int) -> None:
        if done > total // 5 and not t_dead:
            stack.enter_context(frozen(sshd.server))
            t_dead.append(time.monotonic())

    c = connect(inv.board("loop"))
    with stack, pytest.raises(RemoteError) as e:
        transfer.upload(c, src, str(dst), die)
    took = time.monotonic() - t_dead[0]
    c.close()
    msg = str(e.value)
    assert took < STALL + 4, f"hung {took:.1f} s"
    assert "connection lost while uploading" in msg and "no answer from the board" in msg and "\n" not in msg
    acked = int(re.search(r"\((\d+) of 40000000 bytes", msg).group(1))
    part = next(p for p in dst.parent.iterdir() if p.name.startswith(".big.bin.part-"))
    on_board = part.stat().st_size
    assert 0 < acked <= on_board < src.stat().st_size                 # the board has at least what it acked
    assert not dst.exists()                                           # never a partial file under the final name
    with connect(inv.board("loop")) as c:                             # the re-run sends only what is missing
        r = transfer.upload(c, src, str(dst))
    assert sha(dst) == sha(src)
    assert r.resumed_from == on_board and r.sent == r.size - on_board
    assert board_files(dst.parent) == ["big.bin"]


def test_cuts_at_random_points_never_leave_a_mix_and_the_rerun_sends_only_what_is_missing(sshd, env,
                                                                                          tmp_path: Path) -> None:
    import random

    inv, _, root = env
    board = inv.board("loop")
    rng = random.Random(6)
    old = [tmp_path / "old.param", tmp_path / "old.bin"]
    new = [tmp_path / "new.param", tmp_path / "new.bin"]
    for p, n in zip(old + new, (3_000, 6_000_000, 3_100, 8_000_000)):
        p.write_bytes(os.urandom(n))
    finals = [str(root / "models" / "m.param"), str(root / "models" / "m.bin")]
    with connect(board) as c, board_lock(c):
        transfer.upload_many(c, list(zip(old, finals)))
    best = 0
    for _ in range(3):
        at = rng.uniform(0.1, 0.9) * 8_000_000
        cut: list[int] = []

        def kill(remote: str, done: int, total: int) -> None:
            if remote.endswith(".bin") and done >= at and not cut:
                cut.append(done)
                sshd.server.kill_sessions()

        c = connect(board)
        with pytest.raises(RemoteError, match="connection lost"):
            with board_lock(c, wait=10):
                transfer.upload_many(c, list(zip(new, finals)), kill)
        c.close()
        # the board serves the whole old pair, never a mix or a partial file under a final name
        assert [sha(Path(f)) for f in finals] == [sha(p) for p in old]
        parts = [p for p in (root / "models").iterdir() if ".part-" in p.name and p.name.startswith(".m.bin")]
        assert len(parts) == 1                    # one partial, re-claimed by every retry
        best = max(best, parts[0].stat().st_size)
    with connect(board) as c, board_lock(c, wait=10):
        results = transfer.upload_many(c, list(zip(new, finals)))
    assert [sha(Path(f)) for f in finals] == [sha(p) for p in new]
    big = results[1]
    assert big.resumed_from == best and big.sent == big.size - best
    assert board_files(root / "models") == ["m.bin", "m.param"]


@pytest.fixture
def loopback_wheel():
    minor = int(os.popen("python3 -c 'import sys;print(sys.version_info[1])'").read())
    require_cached_wheels("x86_64", python=(3, minor))


def test_group_run_goes_on_past_a_board_that_dies_mid_run(sshd, env, tiny_models, loopback_wheel,
                                                           tmp_path: Path) -> None:
    inv, _, _ = env
    boards = [inv.board("loop"), inv.board("loop2")]
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, iterations=400, warmup=0,
                      threads=1, fp16=False)
    stack = contextlib.ExitStack()
    when: list[float] = []

    def events(ev: dict) -> None:
        if ev["board"] == "loop" and ev.get("type") == "iter" and not when:
            stack.enter_context(frozen(sshd.server))          # 'loop' vanishes in the middle of its run
            when.append(time.monotonic())

    with stack:
        found = run_boards(boards, opts, inventory=inv, on_event=events, results_dir=tmp_path / "results")
    dead, alive = found
    assert isinstance(dead, BoardFailure) and dead.board == "loop" and dead.error.exit_code == 3
    assert "no answer from the board" in str(dead.error)
    assert not isinstance(alive, BoardFailure) and alive.board == "loop2" and len(alive.samples_ms) == 400
    assert (tmp_path / "results" / "loop2").is_dir() and not (tmp_path / "results" / "loop").exists()


def test_group_push_reports_an_unreachable_board_and_pushes_the_rest(sshd, env, tiny_models, loopback_wheel,
                                                                    tmp_path: Path) -> None:
    _, targets, root = env
    frozen_server = start_sshd(tmp_path / "srv", "frozen", "127.0.0.1", free_port(), sshd.authorized_keys)
    os.kill(frozen_server.pid, signal.SIGSTOP)                  # accepts TCP (backlog), never says hello
    try:
        with open(targets, "a") as fh:
            fh.write(f"  gone:\n    host: 127.0.0.1\n    port: {frozen_server.port}\n    runtime_dir: {root}\n"
                     "groups:\n  all3: [gone, loop]\n")
        t0 = time.monotonic()
        p = deployer("push", "all3", "--targets", str(targets), "--param", str(tiny_models.int8_param),
                     "--bin", str(tiny_models.int8_bin), "--json")
        took = time.monotonic() - t0
    finally:
        os.kill(frozen_server.pid, signal.SIGCONT)
        frozen_server.stop()
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)                      # several boards: {"ok", "boards": [...]}, like run
    out = {b["board"]: b for b in doc["boards"]}
    assert doc["ok"] is False and list(out) == ["gone", "loop"]
    assert out["gone"]["ok"] is False and "board 'gone'" in out["gone"]["error"] and out["gone"]["exit_code"] == 3
    assert out["loop"]["ok"] is True and sha(root / "models" / tiny_models.int8_bin.name) == sha(tiny_models.int8_bin)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "gone" in errors[0] and "Traceback" not in p.stderr
    assert took < 60


# --- concurrency -----------------------------------------------------------------------------------

def test_two_pushes_at_once_both_succeed_and_the_board_ends_consistent(env, tiny_models, loopback_wheel) -> None:
    _, targets, root = env
    args = ["push", "loop", "--targets", str(targets), "--param", str(tiny_models.int8_param),
            "--bin", str(tiny_models.int8_bin), "--json"]
    procs = [subprocess.Popen([*DEPLOYER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    for f in (tiny_models.int8_param, tiny_models.int8_bin):
        assert sha(root / "models" / f.name) == sha(f)
    assert board_files(root / "models") == sorted([tiny_models.int8_param.name, tiny_models.int8_bin.name])
    assert not [p for p in root.rglob(".*") if ".part-" in p.name or ".tmp-" in p.name]


def test_a_push_to_a_locked_board_is_refused_naming_the_holder_or_waits(env, tiny_models, loopback_wheel) -> None:
    inv, targets, root = env
    args = ["push", "loop", "--targets", str(targets), "--param", str(tiny_models.int8_param),
            "--bin", str(tiny_models.int8_bin)]
    with connect(inv.board("loop")) as c:
        with board_lock(c, purpose="deploy"):
            p = deployer(*args, "--lock-wait", "0")
            assert p.returncode == 3 and "Traceback" not in p.stderr
            err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
            assert len(err) == 1 and "busy" in err[0] and "deploy by" in err[0] and f"pid {os.getpid()}" in err[0]
            assert not (root / "models").exists() or board_files(root / "models") == []
            later = subprocess.Popen([*DEPLOYER, *args, "--lock-wait", "60"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            said: list[str] = []
            reader = threading.Thread(target=lambda: said.extend(later.stderr), daemon=True)
            reader.start()
            deadline = time.monotonic() + 40
            while not any("waiting for the board lock" in ln for ln in said) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert later.poll() is None                        # still waiting for us
    assert later.wait(60) == 0, "".join(said)
    reader.join(10)
    waiting = next(ln for ln in said if "waiting for the board lock" in ln)
    assert waiting.startswith("loop: waiting for the board lock held by deploy by") and f"pid {os.getpid()}" in waiting
    assert sha(root / "models" / tiny_models.int8_bin.name) == sha(tiny_models.int8_bin)


def test_parallel_runs_on_one_board_all_succeed(env, tiny_models, loopback_wheel, tmp_path: Path) -> None:
    inv, _, _ = env
    board = inv.board("loop")
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, iterations=5, warmup=1, threads=1,
                      fp16=False)
    results: list = []
    errors: list = []

    def one() -> None:
        try:
            results.extend(run_boards([board], opts, inventory=inv, results_dir=tmp_path / "results"))
        except DeployerError as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, [str(e) for e in errors]
    assert len(results) == 6 and all(len(r.samples_ms) == 5 for r in results)


# --- full disk -------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(sshd):
    """A 1 MB tmpfs owned by the board user: the board's deploy folder on a full-ish disk."""
    mnt = Path(sshd.remote_scratch) / f"small-{secrets.token_hex(3)}"
    mnt.mkdir()
    import pwd

    pw = pwd.getpwnam(TEST_USER)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,uid={pw.pw_uid},gid={pw.pw_gid},mode=0755",
                        "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


def test_full_disk_is_refused_before_sending_and_nothing_is_left(sshd, env, small_disk: Path, tmp_path: Path) -> None:
    inv, _, _ = env
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(3_000_000))
    with connect(inv.board("loop")) as c:
        t0 = time.monotonic()
        with pytest.raises(RemoteError) as e:
            transfer.upload(c, src, str(small_disk / "models" / "m.bin"))
    msg = str(e.value)
    assert re.search(r"board has 1\.0 MB free in .*/models, needs 3\.0 MB", msg) and e.value.exit_code == 3
    assert board_files(small_disk / "models") == [] and time.monotonic() - t0 < 10


def test_disk_filling_up_during_upload_says_so_and_removes_the_partial(sshd, env, small_disk: Path,
                                                                       tmp_path: Path) -> None:
    inv, _, _ = env
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(700_000))
    filler = small_disk / "filler"

    def fill(remote: str, done: int, total: int) -> None:      # something else on the board eats the space
        if not filler.exists():
            filler.write_bytes(b"\0" * 600_000)

    with connect(inv.board("loop")) as c:
        with pytest.raises(RemoteError) as e:
            transfer.upload(c, src, str(small_disk / "m.bin"), fill)
        filler.unlink()
        msg = str(e.value)
        assert "ran out of disk space" in msg and "partial file was removed" in msg and "\n" not in msg
        assert board_files(small_disk) == []                    # the disk is not left full
        r = transfer.upload(c, src, str(small_disk / "m.bin"))  # a retry after freeing space works
    assert sha(small_disk / "m.bin") == sha(src) and r.resumed_from == 0


def test_failed_runtime_unpack_on_a_full_disk_leaves_no_temp_folder(sshd, env, small_disk: Path,
                                                                    tmp_path: Path) -> None:
    inv, _, _ = env
    wheel_path = tmp_path / "ncnn-9.9-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ncnn/big.so", b"\0" * 4_000_000)            # 4 MB unpacked, a few kB packed
    wheel = rt.Wheel.parse(wheel_path)
    board = inv.board("loop")
    with connect(board) as c:
        with pytest.raises(RemoteError) as e:
            rt.ensure_runtime(c, wheel, runtime_dir=str(small_disk), python="python3", board=board.where,
                              upload=transfer.upload)
    msg = str(e.value)
    assert "cannot unpack" in msg and "MB free" in msg and "nothing was left behind" in msg
    assert board_files(small_disk / "runtime") == [] if (small_disk / "runtime").exists() else True


# --- hostile or odd targets ------------------------------------------------------------------------

def test_runtime_dir_that_looks_like_an_option_is_refused_and_runs_nothing(sshd, tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    marker = Path(f"/home/{TEST_USER}/x")
    marker.unlink(missing_ok=True)
    write_targets(sshd, evil, "\"-cimport os;os.system('id > x')#\"")
    with pytest.raises(DeployerError, match="runtime_dir"):
        load_targets(evil)
    p = deployer("probe", "loop", "--targets", str(evil))
    assert p.returncode == 2 and "runtime_dir" in p.stderr and "Traceback" not in p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.strip()]) == 1
    assert not marker.exists()


def test_adhoc_target_works_without_a_targets_file(sshd, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.client_key, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "known_hosts").write_text(sshd.server.host_key_line())
    p = deployer("probe", f"{TEST_USER}@127.0.0.1:{sshd.server.port}", "--json", cwd=tmp_path,
                 env={"HOME": str(home), "DEPLOYER_SSH_CONFIG": ""})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["wheel_arch"] == "x86_64"
    bad = deployer("probe", "-x@127.0.0.1", cwd=tmp_path, env={"HOME": str(home)})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_adhoc_run_keeps_its_results(sshd, tiny_models, loopback_wheel, tmp_path: Path) -> None:
    """`deployer run user@host:port` used to run the whole benchmark, then fail on the board name."""
    from deployer.remote.runtime import cache_dir

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.client_key, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "known_hosts").write_text(sshd.server.host_key_line())
    target = f"{TEST_USER}@127.0.0.1:{sshd.server.port}"
    try:
        p = deployer("run", target, "--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin),
                     "-n", "2", "--warmup", "0", "--json", cwd=tmp_path,
                     env={"HOME": str(home), "DEPLOYER_SSH_CONFIG": "", "DEPLOYER_CACHE": str(cache_dir().parent)})
    finally:
        shutil.rmtree(f"/home/{TEST_USER}/.deployer", ignore_errors=True)   # the default runtime_dir
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    saved = tmp_path / out["saved_to"]
    assert out["board"] == target and saved.parent.name == f"{TEST_USER}@127.0.0.1_{sshd.server.port}"
    assert json.loads(saved.read_text())["count"] == 2


def test_files_keep_the_users_umask_on_host_and_board(env, tmp_path: Path) -> None:
    inv, _, root = env
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from deployer import fsutil; "
            "fsutil.write_text(sys.argv[1], 'x')")
    for umask, want in (("022", 0o644), ("027", 0o640)):
        f = tmp_path / f"f{umask}"
        subprocess.run([sys.executable, "-c", code, str(f), umask], check=True)
        assert f.stat().st_mode & 0o777 == want
    with connect(inv.board("loop")) as c:
        transfer.upload(c, tmp_path / "f022", str(root / "f"))
    assert (root / "f").stat().st_mode & 0o777 == 0o644
