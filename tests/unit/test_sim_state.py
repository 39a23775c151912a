"""State file, targets file, process identity and board profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from deployer.errors import DeployerError
from deployer.sim.linkspec import parse_link
from deployer.sim.procs import ProcRef, terminate
from deployer.sim.profiles import PROFILES
from deployer.sim.state import BoardState, SimState, load_state, save_state
from deployer.sim.targetsfile import write_targets


def _board(name: str, slot: int, arch: str = "arm64", link: str | None = None) -> BoardState:
    return BoardState(
        name=name, arch=arch, slot=slot, address=f"10.200.{slot}.2", qemu_cpu=PROFILES[arch].qemu_cpu,
        model=PROFILES[arch].model, hostname=f"raspberrypi-{name}", board_dir=f"/x/{name}", sysroot="/s",
        host_key=f"ssh-ed25519 AAAAkey{slot}", unshare=ProcRef(100 + slot, 5), init=ProcRef(200 + slot, 6),
        link=parse_link(link).to_json() if link else None, shaper=ProcRef(300, 7) if link else None)


def test_state_round_trips(tmp_path):
    state = SimState(str(tmp_path / "targets"), [_board("sim-1", 1), _board("sim-2", 4, "armhf", "delay=5")])
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert load_state(tmp_path / "nowhere") == SimState()


def test_a_corrupt_state_file_is_one_line(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"version": 99, "boards": []}))
    with pytest.raises(DeployerError) as err:
        load_state(tmp_path)
    assert "state.json: unreadable simulator state (version 99" in str(err.value)
    for text in ("[]", "null", '"x"', '{"version": 1, "targets_dir": 5}'):     # were exit 4
        (tmp_path / "state.json").write_text(text)
        with pytest.raises(DeployerError, match="unreadable simulator state .(not a JSON object|targets_dir)"):
            load_state(tmp_path)
    (tmp_path / "state.json").unlink()
    os.mkfifo(tmp_path / "state.json")      # was read forever: `sim status` hung
    with pytest.raises(DeployerError, match="FIFO"):
        load_state(tmp_path)


def test_targets_file_and_known_hosts(tmp_path):
    key = tmp_path / "client_ed25519"
    boards = [_board("sim-10", 3), _board("sim-2", 2, "armhf", "down:delay=5 up:rate=1")]
    path = write_targets(tmp_path / "t", key, boards)
    doc = yaml.safe_load(path.read_text())
    assert doc["defaults"] == {"user": "pi", "key": str(key), "known_hosts": "sim_known_hosts",
                               "python": "/usr/bin/python3"}
    assert list(doc["boards"]) == ["sim-2", "sim-10"]  # numeric order
    assert doc["boards"]["sim-2"]["host"] == "10.200.2.2"
    assert doc["boards"]["sim-2"]["tags"] == ["sim", "armhf"]
    assert "down:delay=5 up:rate=1" in doc["boards"]["sim-2"]["description"]
    assert (tmp_path / "t/sim_known_hosts").read_text() == (
        "10.200.2.2 ssh-ed25519 AAAAkey2\n10.200.3.2 ssh-ed25519 AAAAkey3\n")
    write_targets(tmp_path / "t", key, [])
    assert list((tmp_path / "t").iterdir()) == []


def test_targets_file_passes_deployer_targets_validation(tmp_path):
    targets = pytest.importorskip("deployer.targets")
    path = write_targets(tmp_path, tmp_path / "k", [_board("sim-1", 1), _board("sim-2", 2, "armhf")])
    inv = targets.load_targets([path])
    (b,) = inv.resolve("sim-2")
    assert (b.host, b.port, b.user) == ("10.200.2.2", 22, "pi")


def test_procref_tells_a_recycled_pid_from_ours():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ref = ProcRef.of(proc.pid)
    assert ref.alive()
    assert not ProcRef(proc.pid, ref.start + 1).alive()  # same pid, different start time: not ours
    assert ProcRef.of(os.getpid()).alive()
    assert terminate(ref)
    proc.wait()
    assert not ref.alive()


def test_procref_counts_a_zombie_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = ProcRef.of(proc.pid)
    assert ref.wait_gone(10)  # exited but not yet reaped
    proc.wait()


@pytest.mark.parametrize("arch, part, arch_line", [("arm64", "0xd08", "CPU architecture: 8"),
                                                   ("armhf", "0xc0f", "CPU architecture: 7")])
def test_cpuinfo_looks_like_the_board(arch, part, arch_line):
    text = PROFILES[arch].cpuinfo(serial=5)
    assert text.count("processor\t:") == 4
    assert text.count(f"CPU part\t: {part}") == 4
    assert arch_line in text
    assert "Model\t\t: Raspberry Pi 4 Model B Rev 1.4" in text
    assert "Serial\t\t: 1000000000000005" in text


def test_targets_dir_stays_where_the_running_boards_are_listed(tmp_path):
    from deployer.sim.manager import _free_name, _targets_dir

    running = SimState(str(tmp_path / "a"), [_board("sim-1", 1), _board("sim-3", 3)])
    assert _targets_dir(running, None) == tmp_path / "a"
    assert _targets_dir(running, tmp_path / "a") == tmp_path / "a"
    with pytest.raises(DeployerError, match=r"--targets-dir .*/b: the running emulated boards are listed in .*/a/sim.yaml"):
        _targets_dir(running, tmp_path / "b")
    assert _targets_dir(SimState(str(tmp_path / "a"), []), tmp_path / "b") == tmp_path / "b"
    assert _free_name(running) == "sim-2"


def test_a_targets_dir_that_is_a_file_is_refused_before_boards_start(tmp_path):
    """sim up --targets-dir FILE started the boards, then failed writing sim.yaml; sim down failed too.
    A sim.yaml the user wrote was replaced by the boards' list (and deleted by sim down)."""
    from deployer.sim.manager import _targets_dir

    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(DeployerError, match="afile: is a file, not a folder"):
        _targets_dir(SimState(), afile)
    with pytest.raises(DeployerError, match="afile/sub: cannot use it as a folder"):
        _targets_dir(SimState(), afile / "sub")
    write_targets(afile, tmp_path / "key", [])     # sim down with the last board gone: nothing to remove
    assert afile.is_file()
    own = tmp_path / "own"
    own.mkdir()
    (own / "sim.yaml").write_text("boards:\n  mine: {host: 10.0.0.1}\n")   # the user's, not ours: kept
    with pytest.raises(DeployerError, match="own/sim.yaml was not written by deployer sim up"):
        _targets_dir(SimState(), own)
    write_targets(own, tmp_path / "key", [_board("sim-1", 1)])
    assert _targets_dir(SimState(), own) == own                       # ours: sim up may rewrite it
    from deployer.sim.manager import sim_up

    with pytest.raises(DeployerError, match="afile: is a file"):      # before the state dir or its key is made
        sim_up(arch="host", state_dir=tmp_path / "state", targets_dir=afile)
    assert not (tmp_path / "state").exists()


def test_minimal_image_is_refused_for_light_boards(tmp_path):
    """A light board ran the host's userland with Python anyway, but sim.yaml said runtime: native (no
    x86_64 build): every run on it failed."""
    from deployer.sim.manager import sim_up

    with pytest.raises(DeployerError, match="--image minimal is for emulated boards"):
        sim_up(arch="host", image="minimal", state_dir=tmp_path / "state", targets_dir=tmp_path / "t")
    assert not (tmp_path / "state").exists() and not (tmp_path / "t").exists()
