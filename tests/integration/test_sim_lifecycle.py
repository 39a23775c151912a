"""`deployer sim up/status/down` as a user runs them, in a private state dir: after `down` the
processes, namespaces, veths, shaper, overlay and targets entries must really be gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from deployer.sim.net import Slot, netns_names
from deployer.sim.procs import ProcRef
from tests.fixtures.boards import board_skip_reason

DEPLOYER = [sys.executable, "-c", "from deployer.cli import main; main()"]


def deployer(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert res.returncode == 0, f"deployer {' '.join(args)} -> {res.returncode}: {res.stderr}"
    return res


@pytest.fixture
def sim_env(tmp_path):
    reason = board_skip_reason()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, DEPLOYER_SIM_DIR=str(tmp_path / "state"))
    yield env, tmp_path
    deployer(env, "sim", "down", check=False)  # never leave boards behind when an assert failed


@pytest.mark.boards
@pytest.mark.slow
def test_up_status_down_leaves_nothing_behind(sim_env):
    env, tmp = sim_env
    targets = tmp / "targets"
    link = "down:rate=2 up:delay=5,rate=50"
    first = json.loads(deployer(env, "sim", "up", "--link", link, "--targets-dir", str(targets), "--json").stdout)
    assert first["added"] == ["sim-1"] and first["already_up"] == []
    again = json.loads(deployer(env, "sim", "up", "--link", link, "--json").stdout)
    assert again["added"] == [] and again["already_up"] == ["sim-1"]

    state = json.loads((tmp / "state/state.json").read_text())
    (board,) = state["boards"]
    slot = Slot(board["slot"])
    procs = [ProcRef(**board[k]) for k in ("unshare", "init", "shaper")]
    assert all(p.alive() for p in procs)
    assert {slot.netns, slot.wan_netns} <= netns_names()
    # the board's overlay and proc/sys/dev mounts live in its own mount namespace, never on the host
    assert board["board_dir"] not in Path("/proc/self/mountinfo").read_text()
    board_mounts = Path(f"/proc/{board['init']['pid']}/mountinfo").read_text()
    assert f"upperdir={board['board_dir']}/upper" in board_mounts.splitlines()[0]  # its / is the overlay
    assert (targets / "sim.yaml").exists() and (targets / "sim_known_hosts").read_text().startswith(board["address"])

    status = json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"]
    assert [(b["name"], b["state"], b["sshd"], b["link"]) for b in status] == [
        ("sim-1", "up", True, "down:rate=2 up:delay=5,rate=50")]
    push, pull, stray = _exercise(board["address"], tmp / "state/client_ed25519", targets / "sim_known_hosts")
    # 500 KB: >= 2 s at 2 Mbit/s host -> board; 0.08 s (+ starting `head` under emulation) at 50 back
    assert push > 1.9 and pull < push / 2, (push, pull)

    down = json.loads(deployer(env, "sim", "down", "--json").stdout)
    assert down["stopped"] == ["sim-1"]
    assert not any(p.alive() for p in procs)
    assert not any(p.alive() for p in stray)  # a detached process on the board died with its pid namespace
    assert not {slot.netns, slot.wan_netns} & netns_names()
    assert not Path(f"/sys/class/net/{slot.host_if}").exists()
    assert not Path(board["board_dir"]).exists()
    assert not (targets / "sim.yaml").exists() and not (targets / "sim_known_hosts").exists()
    assert json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"] == []


def _exercise(address: str, key: Path, known_hosts: Path, size: int = 500_000) -> tuple[float, float, list[ProcRef]]:
    """Time a push and a pull over the shaped link; leave a detached process running on the board."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username="pi", key_filename=str(key), allow_agent=False, look_for_keys=False, timeout=30)
    with client:
        chan = client.get_transport().open_session()
        chan.exec_command("cat > /dev/null; echo done")
        t = time.perf_counter()
        chan.sendall(b"\0" * size)
        chan.shutdown_write()
        assert chan.recv(8).strip() == b"done"
        push = time.perf_counter() - t
        chan = client.get_transport().open_session()
        chan.exec_command(f"head -c {size} /dev/zero")
        t, got = time.perf_counter(), 0
        while chunk := chan.recv(65536):
            got += len(chunk)
        pull = time.perf_counter() - t
        assert got == size
        _, out, _ = client.exec_command("setsid nohup sleep 4242.17 >/dev/null 2>&1 < /dev/null & echo started")
        assert out.read().strip() == b"started"
    stray = []
    deadline = time.monotonic() + 10
    while not stray and time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if b"sleep\x004242.17" in (proc / "cmdline").read_bytes():
                    stray.append(ProcRef.of(int(proc.name)))
            except OSError:
                pass
        time.sleep(0.1)
    assert stray and all(p.alive() for p in stray)
    return push, pull, stray


@pytest.mark.boards
@pytest.mark.slow
def test_a_crashed_board_shows_down_and_up_replaces_it(sim_env):
    env, tmp = sim_env
    deployer(env, "sim", "up", "--targets-dir", str(tmp / "targets"), "--json")
    board = json.loads((tmp / "state/state.json").read_text())["boards"][0]
    init = ProcRef(**board["init"])
    os.kill(init.pid, signal.SIGKILL)  # the board's PID 1 dies: the whole board goes with it
    assert init.wait_gone(5)
    status = json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"]
    assert [(b["name"], b["state"], b["sshd"]) for b in status] == [("sim-1", "down", False)]
    again = json.loads(deployer(env, "sim", "up", "--json").stdout)
    assert again["added"] == ["sim-1"]
    status = json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"]
    assert [(b["name"], b["state"]) for b in status] == [("sim-1", "up")]


@pytest.mark.boards
def test_down_of_an_unknown_board_is_one_line(sim_env):
    env, _ = sim_env
    res = deployer(env, "sim", "down", "sim-9", check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: sim down: no emulated board named sim-9 (running: none)"]


@pytest.mark.boards
def test_a_board_that_cannot_start_says_why_and_leaves_nothing(tmp_path):
    reason = board_skip_reason()
    if reason:
        pytest.skip(reason)
    from deployer.errors import DeployerError
    from deployer.sim.linkspec import parse_link
    from deployer.sim.manager import _start_one
    from deployer.sim.net import free_slot, network_exists
    from deployer.sim.profiles import PROFILES
    from deployer.sim.state import locked

    with locked():
        slot = free_slot()
        with pytest.raises(DeployerError) as err:
            _start_one("sim-1", slot, tmp_path, PROFILES["arm64"], parse_link("delay=1"),
                       tmp_path / "no-such-sysroot", "ssh-ed25519 AAAA test")
    assert str(err.value).startswith("board sim-1: its sshd exited during start (")
    assert "mount overlay" in str(err.value)
    assert "mount overlay" in (tmp_path / "logs/sim-1.log").read_text()  # the log it names survives
    assert not network_exists(slot)
    assert not (tmp_path / "boards/sim-1").exists()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if str(tmp_path).encode() in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.boards
@pytest.mark.slow
@pytest.mark.parametrize("then", ["down", "up"])
def test_sim_up_killed_mid_start_leaves_nothing_the_next_command_cannot_clear(sim_env, then):
    """SIGKILL of `sim up` while a board was starting left its netns, veth and board processes with no
    state file naming them: `sim down` did not stop them and every later `up` skipped the slot."""
    env, tmp = sim_env
    proc = subprocess.Popen([*DEPLOYER, "sim", "up", "--link", "delay=1", "--targets-dir", str(tmp / "targets")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_file, log = tmp / "state/state.json", tmp / "state/logs/sim-1.log"
    deadline = time.monotonic() + 120
    while not log.exists():       # the board's sshd is starting: namespaces and veths exist
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (claim,) = json.loads(state_file.read_text())["starting"]
    slot = Slot(claim["slot"])
    assert slot.netns in netns_names()           # what was left behind

    if then == "down":
        assert deployer(env, "sim", "down", "--json").returncode == 0
    else:
        assert json.loads(deployer(env, "sim", "up", "--link", "delay=1", "--json").stdout)["added"] == ["sim-1"]
        assert json.loads(state_file.read_text())["starting"] == []
        deployer(env, "sim", "down")
    assert not {slot.netns, slot.wan_netns} & netns_names()
    assert not Path(f"/sys/class/net/{slot.host_if}").exists()
    assert not (tmp / "state/boards/sim-1").exists()
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(tmp).encode() in _read(p)]
    assert json.loads(state_file.read_text())["starting"] == []


@pytest.mark.boards
def test_many_boards_are_one_progress_phase(tmp_path):
    """A phase per board drew a bar (off a terminal: lines) per board: 200 for `--arch host --count 200`."""
    reason = board_skip_reason()
    if reason:
        pytest.skip(reason)
    from deployer.sim.manager import sim_down, sim_up

    calls: list[tuple[str, int, int]] = []
    state = tmp_path / "state"
    try:
        up = sim_up(arch="host", count=3, targets_dir=tmp_path / "targets", state_dir=state,
                    progress=lambda *c: calls.append(c))
        assert [b.name for b in up.added] == ["sim-1", "sim-2", "sim-3"]
        assert {c[0] for c in calls} == {"starting host boards"} and calls[-1][1:] == (3, 3)
        calls.clear()
        assert sim_down(state_dir=state, progress=lambda *c: calls.append(c)) == ["sim-1", "sim-2", "sim-3"]
        assert {c[0] for c in calls} == {"stopping boards"} and calls[-1][1:] == (3, 3)
    finally:
        sim_down(state_dir=state)
