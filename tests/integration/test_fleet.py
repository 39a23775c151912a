"""Fleet releases against a real OpenSSH sshd (loopback): deploy, health gate, no-op, delta, rollback,
GC, the board lock, changed host keys, hostile names, disk full, and the CLI's JSON.

Several "boards" share the one loopback sshd: each has its own runtime_dir, which is all a
board's release store is, so a group of boards costs no extra servers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.fleet import service
from deployer.fleet.executor import ExecutorSpec
from deployer.fleet.health import HealthPolicy
from deployer.fleet.ops import DeployOptions, deploy_board, list_board, rollback_board
from deployer.fleet.release import build_release
from deployer.targets import load_targets
from tests.fixtures.fleet import current, cut_trials, model_dir, store, whole
from tests.fixtures.runner import build_tiny_models

pytestmark = pytest.mark.sshd
LOCAL = ExecutorSpec("local")


# ------------------------------------------------------------------------------------------ helpers

def fleet_targets(env, folder: Path, count: int, *, prefix: str = "b", extra: str = "") -> Path:
    """A targets file of `count` boards on the loopback sshd, each with its own deploy folder."""
    folder.mkdir(parents=True, exist_ok=True)
    server = env.server
    shutil.copy(env.known_hosts, folder / "known_hosts")
    lines = ["defaults:", f"  user: {env.user}", f"  key: {env.client_key}", "  known_hosts: known_hosts",
             "  timeout: 5", "  retries: 0", "  python: python3", "boards:"]
    for i in range(1, count + 1):
        lines.append(f"  {prefix}{i}: {{host: 127.0.0.1, port: {server.port}, "
                     f"runtime_dir: {env.remote_scratch}/{folder.name}-{prefix}{i}}}")
    lines += ["groups:", f"  fleet: [{', '.join(f'{prefix}{i}' for i in range(1, count + 1))}]", extra]
    path = folder / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_whole(board, release_id: str) -> None:
    assert whole(board, release_id) is None, whole(board, release_id)


def opts(**kw) -> DeployOptions:
    health = kw.pop("health", None) or HealthPolicy()
    return DeployOptions(health=health, **{"lock_wait": 5, "deadline": 120, **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("fleet_tiny"), size=32)


@pytest.fixture()
def fleet(sshd, tmp_path, request):
    """(inventory, targets path) for 4 fresh boards on the loopback sshd."""
    path = fleet_targets(sshd, tmp_path / "targets", 4, prefix=f"t{abs(hash(request.node.name)) % 10**6}-")
    inv = load_targets(path)
    yield inv, path
    for b in inv.boards.values():
        shutil.rmtree(b.runtime_dir, ignore_errors=True)


def _boards(inv):
    return [inv.boards[n] for n in sorted(inv.boards)]


# ------------------------------------------------------------------------------------------ tests

def test_deploy_health_gate_noop_and_delta(fleet, tiny, tmp_path):
    inv, _ = fleet
    board = _boards(inv)[0]
    r1 = build_release(model_dir(tmp_path, tiny, 0), workdir=tmp_path / "w1")
    res = deploy_board(board, r1, opts())
    assert res.ok, res.error
    assert res.action == "deployed" and res.release == r1.id and res.previous is None
    assert res.health["ok"] and res.health["gate"] == "identical" and res.health["identical"] is True
    assert current(board) == r1.id
    assert_whole(board, r1.id)
    assert res.sent_bytes == sum(size for _, _, size in r1.blobs())

    again = deploy_board(board, r1, opts())
    assert again.ok and again.action == "unchanged" and again.sent_bytes == 0 and again.release == r1.id

    # a new release that changes only the table: only the table, the manifest and nothing else travels
    r2 = build_release(model_dir(tmp_path, tiny, 1), workdir=tmp_path / "w2")
    old = {s for s, _, _ in r1.blobs()}
    new_bytes = sum(size for sha, _, size in r2.blobs() if sha not in old)
    res2 = deploy_board(board, r2, opts())
    assert res2.ok and res2.previous == r1.id and current(board) == r2.id
    assert res2.sent_bytes == new_bytes
    assert new_bytes < r2.size / 2
    # files are stored once: the unchanged .bin is one inode shared by both releases
    a = store(board) / "releases" / r1.id / "tiny_int8.bin"
    b = store(board) / "releases" / r2.id / "tiny_int8.bin"
    assert a.stat().st_ino == b.stat().st_ino

    listing = list_board(board, opts())
    rel = {r["id"]: r for r in listing.extra["releases"]}
    assert set(rel) == {r1.id, r2.id} and rel[r2.id]["current"] and not rel[r1.id]["current"]
    assert rel[r2.id]["health"]["ok"] is True and rel[r2.id]["model"] == "tiny_int8"

    back = rollback_board(board, None, opts())
    assert back.ok and back.action == "rolled-back" and back.release == r1.id and current(board) == r1.id
    assert_whole(board, r1.id)


def test_release_temp_folder_is_removed_when_done_or_failed(tiny, tmp_path, monkeypatch):
    """build_release's own temporary folder goes on close() and when building fails midway (a
    host reference run that fails or is interrupted); a folder the caller gave is the caller's."""
    import tempfile

    from deployer.fleet import release as rel_mod

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    d = model_dir(tmp_path, tiny, 40)
    with build_release(d) as rel:
        assert rel.workdir is not None and (rel.workdir / "manifest.json").is_file()
    assert not rel.workdir.exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rel_mod, "host_reference", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_release(d)
    assert not list(tmp_path.glob("deployer-release-*"))
    given = tmp_path / "given"
    with pytest.raises(KeyboardInterrupt):
        build_release(d, workdir=given)
    assert given.is_dir()


def test_keep_n_and_garbage_collection(fleet, tiny, tmp_path):
    inv, _ = fleet
    board = _boards(inv)[1]
    ids = []
    for v in range(5):
        rel = build_release(model_dir(tmp_path, tiny, 10 + v), workdir=tmp_path / f"w{v}", health=False)
        res = deploy_board(board, rel, opts(keep=2))
        assert res.ok, res.error
        ids.append(rel.id)
    on_board = sorted(p.name for p in (store(board) / "releases").iterdir())
    assert on_board == sorted(ids[-3:])          # current + 2 previous
    assert current(board) == ids[-1]
    referenced = set()
    for rid in on_board:
        for f in (store(board) / "releases" / rid).iterdir():
            referenced.add(f.stat().st_ino)
    blobs = list((store(board) / "blobs").iterdir())
    assert {b.stat().st_ino for b in blobs} == referenced          # no unreferenced blob left
    assert not list((store(board) / "incoming").iterdir())
    res = rollback_board(board, ids[0], opts())                    # collected: refused clearly
    assert not res.ok and "not on the board" in res.error and current(board) == ids[-1]


def test_health_failure_keeps_the_old_release(fleet, tiny, tmp_path):
    inv, _ = fleet
    board = _boards(inv)[2]
    good = build_release(model_dir(tmp_path, tiny, 20), workdir=tmp_path / "g")
    assert deploy_board(board, good, opts()).ok
    slow = build_release(model_dir(tmp_path, tiny, 21), workdir=tmp_path / "s")
    res = deploy_board(board, slow, opts(health=HealthPolicy(max_latency_ms=1e-6)))
    assert not res.ok and res.exit_code == 1 and res.stage == "health"
    assert "over the budget" in res.error and f"{good.id} stays current" in res.error
    assert current(board) == good.id and res.release == good.id
    assert_whole(board, good.id)
    # the failed release stays stored (a re-run need not upload it again) with its health note
    note = json.loads((store(board) / "state" / f"health-{slow.id}.json").read_text())
    assert note["ok"] is False


def test_corrupted_board_copy_fails_health_bit_identity(fleet, tiny, tmp_path):
    """The gate really compares outputs: a reference that does not match the board fails it."""
    inv, _ = fleet
    board = _boards(inv)[3]
    rel = build_release(model_dir(tmp_path, tiny, 30), workdir=tmp_path / "c")
    import base64
    import struct

    values = list(struct.unpack(f"<{len(base64.b64decode(rel.expected['data'])) // 4}f",
                                base64.b64decode(rel.expected["data"])))
    values[0] += 1e-3
    rel.expected = dict(rel.expected, data=base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode())
    res = deploy_board(board, rel, opts())
    assert not res.ok and res.health["gate"] == "identical" and res.health["identical"] is False
    assert current(board) is None


def test_two_deploys_at_once(fleet, tiny, tmp_path):
    inv, _ = fleet
    board = _boards(inv)[0]
    a = build_release(model_dir(tmp_path, tiny, 40, table_bytes=2_000_000), workdir=tmp_path / "a", health=False)
    b = build_release(model_dir(tmp_path, tiny, 41, table_bytes=2_000_000), workdir=tmp_path / "b", health=False)
    out = {}

    def go(rel):
        out[rel.id] = deploy_board(board, rel, opts(lock_wait=0))

    threads = [threading.Thread(target=go, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = list(out.values())
    winners = [r for r in results if r.ok]
    losers = [r for r in results if not r.ok]
    assert len(winners) >= 1
    for r in losers:
        assert "another deploy holds the board lock" in r.error and "pid" in r.error
    assert current(board) in (a.id, b.id)
    assert_whole(board, current(board))
    # with waiting allowed, the second deploy runs after the first
    c = build_release(model_dir(tmp_path, tiny, 42), workdir=tmp_path / "c", health=False)
    d = build_release(model_dir(tmp_path, tiny, 43), workdir=tmp_path / "d", health=False)
    out.clear()
    threads = [threading.Thread(target=lambda r=r: out.__setitem__(r.id, deploy_board(board, r, opts(lock_wait=60))))
               for r in (c, d)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in out.values()), [r.error for r in out.values()]
    assert current(board) in (c.id, d.id)
    assert_whole(board, current(board))


def test_changed_host_key_is_refused_and_nothing_sent(sshd, tiny, tmp_path):
    path = fleet_targets(sshd, tmp_path / "targets", 1, prefix="hk")
    kh = path.parent / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    kh.write_text(f"[127.0.0.1]:{sshd.server.port} {other[0]} {other[1]}\n")
    board = load_targets(path).boards["hk1"]
    rel = build_release(model_dir(tmp_path, tiny, 50), workdir=tmp_path / "w", health=False)
    res = deploy_board(board, rel, opts())
    assert not res.ok and res.stage == "connect" and res.exit_code == 2
    assert "changed" in res.error.lower() and "ssh-keygen" in res.error
    assert not store(board).exists()


def test_hostile_names_are_refused(sshd, tiny, tmp_path):
    for bad in ("a b.table", "x;rm -rf ~.json", "$(touch pwned).param", "`id`.bin", "-rf.param"):
        d = model_dir(tmp_path, tiny, 60)
        (d / "tiny_int8.table").rename(d / "tiny_int8.tablex")
        target = d / ("tiny_int8.table" if bad.endswith(".table") else "tiny_int8.json")
        target.write_text("x")
        hostile = d.parent / "hostile"
        shutil.rmtree(hostile, ignore_errors=True)
        shutil.copytree(d, hostile)
        stem = bad.rsplit(".", 1)[0]
        for f in ("param", "bin"):
            (hostile / f"tiny_int8.{f}").rename(hostile / f"{stem}_int8.{f}")
        with pytest.raises(DeployerError) as err:
            build_release(hostile, workdir=tmp_path / "hw", health=False)
        assert "may only use" in str(err.value) or "several models" in str(err.value) or "no .bin" in str(err.value)
        shutil.rmtree(d)
    inv = load_targets(fleet_targets(sshd, tmp_path / "t2", 1, prefix="hn"))
    board = inv.boards["hn1"]
    for rid in ("../../etc", "x; touch /tmp/pwned", "$(id)", "`id`", "-rf", ".hidden"):
        res = rollback_board(board, rid, opts())
        assert not res.ok and res.exit_code == 2 and "release id" in res.error
    # hostile targets never reach a shell: refused by the CLI with exit 2 and one line
    d = model_dir(tmp_path, tiny, 61)
    for target in ("$(touch /tmp/pwned)@host", "pi@host;touch /tmp/pwned", "pi@`id`", "pi@-oProxyCommand=x"):
        proc = subprocess.run([sys.executable, "-m", "deployer.cli", "deploy", target, "--model", str(d),
                               "--targets", str(tmp_path / "t2" / "fleet.yaml"), "--no-health", "--json"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "bad board address" in json.loads(proc.stdout)["error"], proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not Path("/tmp/pwned").exists()


def test_disk_full_is_clear_and_leaves_the_old_release(sshd, tiny, tmp_path):
    path = fleet_targets(sshd, tmp_path / "targets", 1, prefix="df")
    board = load_targets(path).boards["df1"]
    root = store(board)
    root.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs", str(root)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        small = build_release(model_dir(tmp_path, tiny, 70), workdir=tmp_path / "s", health=False)
        assert deploy_board(board, small, opts()).ok
        big = build_release(model_dir(tmp_path, tiny, 71, table_bytes=6_000_000), workdir=tmp_path / "b", health=False)
        res = deploy_board(board, big, opts())
        assert not res.ok and res.exit_code == 3 and "disk space" in res.error and res.sent_bytes == 0
        assert current(board) == small.id
        assert_whole(board, small.id)
        assert not list((root / "incoming").iterdir()) and not (root / "releases" / big.id).exists()
        # free-space check passed but the disk fills during the upload (another writer): clear error,
        # the partial file removed, nothing switched
        st = os.statvfs(root)
        (root / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 700_000))
        mid = build_release(model_dir(tmp_path, tiny, 72, table_bytes=1_500_000), workdir=tmp_path / "m", health=False)
        from deployer.fleet import ops as fleet_ops

        old_margin = fleet_ops.FREE_MARGIN
        fleet_ops.FREE_MARGIN = -10**9      # skip the pre-check: exercise the ENOSPC path itself
        try:
            res = deploy_board(board, mid, opts())
        finally:
            fleet_ops.FREE_MARGIN = old_margin
        assert not res.ok and res.exit_code == 3 and "disk" in res.error.lower(), res.error
        assert current(board) == small.id
        assert_whole(board, small.id)
        assert not list((root / "incoming").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(root)])


@pytest.mark.parametrize("persist", ["0", "30"], ids=["in-process", "controller"])
def test_cli_deploy_releases_status_rollback_json(fleet, tiny, tmp_path, persist):
    """The whole CLI flow, run in the CLI process and through the persistent controller (which
    must reuse the connections the earlier commands opened, and answer the same)."""
    from deployer.fleet import controller

    inv, path = fleet
    d0 = model_dir(tmp_path, tiny, 80)
    d1 = model_dir(tmp_path, tiny, 81)
    cli = [sys.executable, "-m", "deployer.cli"]
    tmp = tmp_path / "tmp"     # the system temp folder of these commands (and their controller)
    tmp.mkdir()
    env = {**os.environ, "DEPLOYER_PERSIST": persist, "TMPDIR": str(tmp)}

    def run(*args, code=0):
        proc = subprocess.run([*cli, *args, "--targets", str(path), "--json"], capture_output=True, text=True,
                              cwd=tmp_path, env=env)
        assert proc.returncode == code, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    try:
        _cli_flow(run, inv, d0, d1)
        # every deploy/rollout builds its release (manifest, health reference) in a temporary
        # folder: none may be left behind (they piled up in /tmp, one per command)
        run("rollout", "fleet", "--model", str(d1), "--plan")
        assert not list(tmp.glob("deployer-release-*"))
        if persist != "0":
            st = run("status", "fleet")
            assert {b["connection"] for b in st["boards"]} == {"reused"}
            assert controller.socket_path(tmp_path).exists()
    finally:
        controller.stop(controller.socket_path(tmp_path))
    assert not controller.socket_path(tmp_path).exists()


def test_controller_goes_away_after_persist_seconds_idle(fleet, tiny, tmp_path):
    """--persist N: the controller closes its connections and exits N s after its last command, and
    leaves no socket behind; a command after that starts a new one."""
    import time

    from deployer.fleet import controller

    inv, path = fleet
    env = {**os.environ, "DEPLOYER_PERSIST": "2"}
    argv = [sys.executable, "-m", "deployer.cli", "status", "fleet", "--targets", str(path), "--json"]
    sock = controller.socket_path(tmp_path, env)
    try:
        first = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert first.returncode == 0 and sock.exists(), first.stderr
        assert {b["connection"] for b in json.loads(first.stdout)["boards"]} == {"new"}
        end = time.monotonic() + 15
        while sock.exists() and time.monotonic() < end:
            time.sleep(0.2)
        assert not sock.exists()
        again = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert {b["connection"] for b in json.loads(again.stdout)["boards"]} == {"new"}
    finally:
        controller.stop(sock)


def _cli_flow(run, inv, d0, d1):

    plan = run("deploy", "fleet", "--model", str(d0), "--plan")
    assert plan["plan"]["boards"] == sorted(inv.boards) and not (store(_boards(inv)[0])).exists()
    doc = run("deploy", "fleet", "--model", str(d0))
    assert doc["ok"] and len(doc["boards"]) == 4
    rid0 = doc["release"]
    for b in doc["boards"]:
        assert {"board", "ok", "release"} <= set(b) and b["ok"] and b["release"] == rid0
    rid1 = run("deploy", "fleet", "--model", str(d1), "--no-health")["release"]
    rel = run("releases", "fleet")
    assert all({r["id"] for r in b["releases"]} == {rid0, rid1} for b in rel["boards"])
    st = run("status", "fleet", "--expect", rid1)
    assert all(b["release"] == rid1 and b["drift"] is False and b["reachable"] for b in st["boards"])
    back = run("rollback", "fleet")
    assert all(b["ok"] and b["release"] == rid0 for b in back["boards"])
    st = run("status", "fleet", "--expect", rid1)
    assert st["summary"]["drift"] == 4
    bad = run("rollback", "fleet", "--to", "no-such-release", code=2)
    assert not bad["ok"] and all(b["release"] == rid0 for b in bad["boards"])


@pytest.mark.slow
def test_link_cut_at_random_points_leaves_whole_releases(fleet, tiny, tmp_path, sshd):
    """24 cuts (the sshd kills every live session) at random points of a deploy - a random stage,
    a random byte of the upload, a random delay into the stage: the board always serves a whole old
    or a whole new release, and the re-run completes sending only what is not on the board yet."""
    inv, _ = fleet
    trials = cut_trials(_boards(inv)[3], sshd.server.kill_sessions, tiny, tmp_path, 24, seed=7, opts=opts)
    for t in trials:
        assert t.fired, t
        assert t.served in ("old", "new") and t.broken is None, t
        assert t.rerun_ok and t.rerun_broken is None, t
        assert t.resent == t.expected, t
    assert sum(not t.first_ok for t in trials) >= 20, trials



def test_rollout_waves_budget_stop_rollback_and_resume(sshd, tiny, tmp_path):
    """10 boards, 2 of them unreachable: waves run in order, the rollout stops once failures pass the
    budget, names the failed boards, `rollback --rollout` undoes the switched ones, and after the
    boards are fixed `--resume` finishes only what is left."""
    from tests.fixtures.sshd import free_port

    path = fleet_targets(sshd, tmp_path / "targets", 10, prefix="ro")
    text = path.read_text()
    dead = free_port()
    for name in ("ro4", "ro7"):
        text = text.replace(f"  {name}: {{host: 127.0.0.1, port: {sshd.server.port},",
                            f"  {name}: {{host: 127.0.0.1, port: {dead},")
    path.write_text(text)
    inv = load_targets(path)
    boards = [inv.boards[f"ro{i}"] for i in range(1, 11)]
    state_dir = tmp_path / "rollouts"
    try:
        base = build_release(model_dir(tmp_path, tiny, 300), workdir=tmp_path / "b", health=False)
        first = service.deploy(boards, base, opts(), executor=LOCAL, max_parallel=10)
        assert {r.board for r in first.results if not r.ok} == {"ro4", "ro7"}
        new = build_release(model_dir(tmp_path, tiny, 301), workdir=tmp_path / "n")
        events = []
        plan, report = service.rollout("fleet", boards, new, opts(), waves="1,30%,100%", max_failures="1",
                                       max_parallel=2, bake="0", executor=LOCAL, state_dir=state_dir,
                                       on_event=events.append)
        assert [len(w) for w in plan.waves] == [1, 2, 7] and plan.budget == 1
        assert [e["wave"] for e in events if e.get("type") == "wave"] == [1, 2, 3]
        doc = report.to_json()
        assert doc["stopped"] is True and not doc["ok"] and report.exit_code == 3
        assert {f["board"] for f in doc["failed"]} == {"ro4", "ro7"}
        assert all("cannot connect" in f["error"] for f in doc["failed"])
        assert doc["not_started"], doc
        switched = [r.board for r in report.results if r.ok]
        assert {"ro1", "ro2", "ro3"} <= set(switched)
        for b in boards:
            want = new.id if b.name in switched else (None if b.name in ("ro4", "ro7") else base.id)
            assert (current(b) if b.name not in ("ro4", "ro7") else None) == want, b.name
        # every board object carries board, ok, release
        assert all({"board", "ok", "release"} <= set(x) for x in doc["boards"])

        back = service.rollback(boards, None, opts(), executor=LOCAL, max_parallel=4, state_dir=state_dir,
                                group="fleet", use_rollout=True)
        assert sorted(r.board for r in back.results) == sorted(switched) and back.ok
        assert all(current(inv.boards[n]) == base.id for n in switched)

        # fix the two boards, roll out again: everyone ends on the new release; then --resume is a no-op
        path.write_text(path.read_text().replace(f"port: {dead},", f"port: {sshd.server.port},"))
        boards = [load_targets(path).boards[f"ro{i}"] for i in range(1, 11)]
        _, report = service.rollout("fleet", boards, new, opts(), waves="1,100%", max_failures="0",
                                    max_parallel=4, bake="0.2s", executor=LOCAL, state_dir=state_dir)
        assert report.ok, report.to_json()["failed"]
        assert all(current(b) == new.id for b in boards)
        plan, report = service.rollout("fleet", boards, new, opts(), waves="1,100%", max_failures="0",
                                       max_parallel=4, bake="0", executor=LOCAL, state_dir=state_dir, resume=True)
        assert plan.waves == [] and sorted(plan.skipped) == sorted(b.name for b in boards)
        assert report.ok and all(r.action == "done-earlier" for r in report.results)
        st = service.status(boards, opts(), executor=LOCAL, max_parallel=10, group="fleet", state_dir=state_dir)
        assert st.ok, [r.error for r in st.results if not r.ok]
        assert st.extra["expected"] == new.id and st.extra["summary"]["drift"] == 0
        assert all(r.extra["last_health"]["ok"] for r in st.results)
    finally:
        for b in boards:
            shutil.rmtree(b.runtime_dir, ignore_errors=True)


def test_a_second_rollout_to_the_same_group_stops_naming_the_first(sshd, tiny, tmp_path):
    """Two rollouts to one group at once each rewrote rollouts/<group>.json from their own view (the
    last to save erased the other's switched boards); the second now stops before touching a board,
    as does a `rollback --rollout` of a rollout still running (it read a record still growing)."""
    path = fleet_targets(sshd, tmp_path / "targets", 1, prefix="two")
    boards = [load_targets(path).boards["two1"]]
    state_dir = tmp_path / "rollouts"
    try:
        rel = build_release(model_dir(tmp_path, tiny, 310), workdir=tmp_path / "r", health=False)
        second: list[object] = []

        def roll(group: str, on_event=None):
            return service.rollout(group, boards, rel, opts(), waves="100%", max_failures="0", max_parallel=1,
                                   bake="0", executor=LOCAL, state_dir=state_dir, on_event=on_event)

        def during_the_first(event):   # another rollout to the same group, and a rollback of it, meanwhile
            if event.get("type") == "wave" and not second:
                for call in (lambda: roll("fleet"),
                             lambda: service.rollback(boards, None, opts(), executor=LOCAL, max_parallel=1,
                                                      state_dir=state_dir, group="fleet", use_rollout=True)):
                    try:
                        second.append(call())
                    except DeployerError as err:
                        second.append(err)

        _, first = roll("fleet", during_the_first)
        assert first.ok
        for err in second:
            assert isinstance(err, DeployerError) and "another rollout to group fleet is running" in str(err)
            assert f"pid {os.getpid()}" in str(err)
        assert roll("fleet")[1].ok    # and once the first has ended, the next one runs
    finally:
        shutil.rmtree(boards[0].runtime_dir, ignore_errors=True)


def test_dask_executor_local_cluster(sshd, tiny, tmp_path):
    """The same per-board operations through Dask: a LocalCluster's Client.get_executor()."""
    distributed = pytest.importorskip("distributed")
    from deployer.fleet.executor import parse_executor

    path = fleet_targets(sshd, tmp_path / "targets", 3, prefix="dk")
    boards = list(load_targets(path).boards.values())
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False, protocol="tcp://",
                                       host="127.0.0.1", dashboard_address=None)
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    try:
        spec = parse_executor("dask://" + cluster.scheduler_address.replace("tcp://", ""))
        rel = build_release(model_dir(tmp_path, tiny, 400), workdir=tmp_path / "w")
        report = service.deploy(boards, rel, opts(), executor=spec, max_parallel=3)
        assert report.ok, [r.error for r in report.results]
        assert all(current(b) == rel.id for b in boards)
        st = service.status(boards, opts(), executor=spec, max_parallel=3, expect=rel.id)
        assert st.extra["summary"] == {"boards": 3, "reachable": 3, "drift": 0, "releases": {rel.id: 3}}
    finally:
        cluster.close()
        for b in boards:
            shutil.rmtree(b.runtime_dir, ignore_errors=True)


def test_a_failed_canary_switches_nothing_and_status_expects_nothing_from_it(sshd, tiny, tmp_path):
    """The walkthrough: a canary failing its latency budget, then status. No board switched, so there is
    no undo to suggest, the failed check is named, and the refused release is not what the boards are
    expected to serve (every board used to be called drifting from it)."""
    path = fleet_targets(sshd, tmp_path / "targets", 3, prefix="can")
    boards = [load_targets(path).boards[f"can{i}"] for i in range(1, 4)]
    state_dir = tmp_path / "rollouts"
    try:
        base = build_release(model_dir(tmp_path, tiny, 320), workdir=tmp_path / "b", health=False)
        assert service.deploy(boards, base, opts(), executor=LOCAL, max_parallel=3).ok
        new = build_release(model_dir(tmp_path, tiny, 321), workdir=tmp_path / "n")
        slow = opts(health=HealthPolicy(max_latency_ms=1e-6))
        _, report = service.rollout("fleet", boards, new, slow, waves="1,50%", max_failures="0", max_parallel=2,
                                    bake="0", executor=LOCAL, state_dir=state_dir)
        doc = report.to_json()
        assert doc["stopped"] and doc["switched"] == [] and doc["last_wave_added"] and doc["waves"] == [1, 1, 1]
        canary = doc["boards"][0]
        assert canary["health"]["failed"] == "latency<=1e-06ms" and canary["error"].startswith("can1: health")
        assert not canary["error"].startswith("can1: can1:")
        with pytest.raises(DeployerError, match="switched no board"):
            service.rollback(boards, None, opts(), executor=LOCAL, max_parallel=3, state_dir=state_dir,
                             group="fleet", use_rollout=True)
        st = service.status(boards, opts(), executor=LOCAL, max_parallel=3, group="fleet", state_dir=state_dir)
        assert st.extra["expected"] is None and st.extra["last_rollout"]["status"] == "stopped"
        assert st.extra["summary"]["drift"] == 0 and all(r.release == base.id for r in st.results)
    finally:
        for b in boards:
            shutil.rmtree(b.runtime_dir, ignore_errors=True)
