"""`sim down` stops only its own instance's boards; `sim down --all` stops every instance's.

Two instances as two checkouts make them: no DEPLOYER_SIM_DIR, two targets folders, so the default
instance of each folder is used. `--all` is pointed at a private registry (DEPLOYER_SIM_REGISTRY),
so it can only ever reach this test's boards, never a user's or another test session's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.sim.net import Slot, netns_names
from deployer.sim.paths import default_state_dir
from deployer.sim.procs import ProcRef
from tests.fixtures.boards import board_skip_reason
from tests.fixtures.tiers import unavailable

DEPLOYER = [sys.executable, "-c", "from deployer.cli import main; main()"]


def deployer(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert res.returncode == 0, f"deployer {' '.join(args)} -> {res.returncode}: {res.stderr}"
    return res


def _board(state_dir: Path) -> dict:
    (board,) = json.loads((state_dir / "state.json").read_text())["boards"]
    return board


def _alive(board: dict) -> bool:
    return all(ProcRef(**board[k]).alive() for k in ("unshare", "init")) and Slot(board["slot"]).netns in netns_names()


@pytest.mark.boards
@pytest.mark.slow
def test_sim_down_is_scoped_to_its_instance(tmp_path: Path, monkeypatch) -> None:
    reason = board_skip_reason()
    if reason:
        unavailable(reason)
    monkeypatch.delenv("DEPLOYER_SIM_DIR", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYER_SIM_DIR"}
    env["DEPLOYER_SIM_REGISTRY"] = str(tmp_path / "registry")
    a, b = tmp_path / "checkout-a" / "targets", tmp_path / "checkout-b" / "targets"
    state_a, state_b = default_state_dir(a), default_state_dir(b)
    assert state_a != state_b
    try:
        up_a = json.loads(deployer(env, "sim", "up", "--targets-dir", str(a), "--json").stdout)
        up_b = json.loads(deployer(env, "sim", "up", "--targets-dir", str(b), "--json").stdout)
        assert up_a["added"] == up_b["added"] == ["sim-1"]  # each instance names its own boards
        board_a, board_b = _board(state_a), _board(state_b)
        assert board_a["address"] != board_b["address"] and _alive(board_a) and _alive(board_b)
        assert len(list((tmp_path / "registry").iterdir())) == 2

        # status and down without --targets-dir, from inside checkout-a: only a's board
        cwd_a = dict(env)
        res = subprocess.run([*DEPLOYER, "sim", "status", "--json"], capture_output=True, text=True, env=cwd_a,
                             cwd=a.parent, timeout=120)
        assert [x["address"] for x in json.loads(res.stdout)["boards"]] == [board_a["address"]]
        res = subprocess.run([*DEPLOYER, "sim", "down", "--json"], capture_output=True, text=True, env=cwd_a,
                             cwd=a.parent, timeout=300)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["stopped"] == ["sim-1"]
        assert not _alive(board_a) and not (a / "sim.yaml").exists()
        assert _alive(board_b) and (b / "sim.yaml").exists()  # the other checkout's board is untouched
        status_b = json.loads(deployer(env, "sim", "status", "--targets-dir", str(b), "--json").stdout)["boards"]
        assert [(x["name"], x["state"]) for x in status_b] == [("sim-1", "up")]

        # a second `down` in a: nothing of a's left, and it says so instead of reaching for b's board
        again = deployer(env, "sim", "down", "--targets-dir", str(a))
        assert again.stderr.strip() == ("no emulated boards were running in this instance "
                                        "(sim down --all stops every instance's)")
        assert _alive(board_b)

        everything = json.loads(deployer(env, "sim", "down", "--all", "--json").stdout)
        assert everything["stopped"] == ["sim-1"] and list(everything["instances"]) == [str(state_b)]
        assert not _alive(board_b) and not (b / "sim.yaml").exists()
        assert list((tmp_path / "registry").iterdir()) == []

        bad = deployer(env, "sim", "down", "--all", "sim-1", check=False)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: sim down --all")
    finally:
        deployer(env, "sim", "down", "--all", check=False)
        for d in (state_a, state_b):
            shutil.rmtree(d, ignore_errors=True)
