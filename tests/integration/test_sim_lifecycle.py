"""`deployer sim up/status/down` as a user runs them, in a private state dir: after `down` the
processes, namespaces, veths, shaper, overlay and targets entries must really be gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
    first = json.loads(deployer(env, "sim", "up", "--link", "delay=5", "--targets-dir", str(targets), "--json").stdout)
    assert first["added"] == ["sim-1"] and first["already_up"] == []
    again = json.loads(deployer(env, "sim", "up", "--link", "delay=5", "--json").stdout)
    assert again["added"] == [] and again["already_up"] == ["sim-1"]

    state = json.loads((tmp / "state/state.json").read_text())
    (board,) = state["boards"]
    slot = Slot(board["slot"])
    procs = [ProcRef(**board[k]) for k in ("unshare", "init", "shaper")]
    assert all(p.alive() for p in procs)
    assert {slot.netns, slot.wan_netns} <= netns_names()
    assert (targets / "sim.yaml").exists() and (targets / "sim_known_hosts").read_text().startswith(board["address"])

    status = json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"]
    assert [(b["name"], b["state"], b["sshd"], b["link"]) for b in status] == [("sim-1", "up", True, "delay=5")]

    down = json.loads(deployer(env, "sim", "down", "--json").stdout)
    assert down["stopped"] == ["sim-1"]
    assert not any(p.alive() for p in procs)
    assert not {slot.netns, slot.wan_netns} & netns_names()
    assert not Path(f"/sys/class/net/{slot.host_if}").exists()
    assert not Path(board["board_dir"]).exists()
    assert not (targets / "sim.yaml").exists() and not (targets / "sim_known_hosts").exists()
    assert json.loads(deployer(env, "sim", "status", "--json").stdout)["boards"] == []


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
