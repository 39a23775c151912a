"""probe() on real boards: the loopback sshd (facts must equal this host's, read independently here)
and emulated arm64/armhf boards (facts must be the emulated userland's, not the x86 kernel's)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.remote.probe import probe
from deployer.ssh.connect import connect
from deployer.targets import load_targets


def host_python(python: str, code: str) -> str:
    """Ask the loopback board's python (a file on this host) directly, without SSH."""
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.sshd
def test_probe_on_loopback_reports_this_hosts_facts(sshd, tmp_path: Path) -> None:
    # A runtime folder of its own: other tests provision the shared loopback board's folder.
    base = sshd.board("loop")
    rt = Path(base.runtime_dir).parent / f"probe-{os.getpid()}-{tmp_path.name}"
    board = dataclasses.replace(base, runtime_dir=str(rt))
    (rt / "models" / "sub").mkdir(parents=True, exist_ok=True)
    payload = os.urandom(10_000)
    (rt / "models" / "sub" / "m.bin").write_bytes(payload)
    (rt / "runtime" / "ncnn-9.9-test").mkdir(parents=True, exist_ok=True)
    (rt / "runtime" / "ncnn-9.9-test" / ".deployer-sha256").write_text("abc123\n")
    for p in [rt, *rt.rglob("*")]:
        shutil.chown(p, "dpltest", "dpltest")
    with connect(board) as c:
        f = probe(c)
    dpkg = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert f.arch == dpkg and f.pointer_bits == 64 and f.machine == os.uname().machine
    assert Path(f.python_path).is_file()
    assert f.python == host_python(f.python_path, "import platform; print(platform.python_version())")
    assert f.soabi == host_python(f.python_path, "import sysconfig; print(sysconfig.get_config_var('SOABI'))")
    assert f.glibc == os.confstr("CS_GNU_LIBC_VERSION").split()[1]
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert f.cores == cpuinfo.count("processor\t:") and f.cores >= 1
    model = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")]
    if model:
        assert f.cpu_model == model[0]
    memtotal = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
    assert f.mem_total == memtotal * 1024
    assert f.hostname == os.uname().nodename and f.runtime_dir == str(rt)
    assert abs(f.disk_free - shutil.disk_usage(rt).free) < 200 * 1024 * 1024
    assert f.models == {"sub/m.bin": {"sha256": hashlib.sha256(payload).hexdigest(), "size": 10_000}}
    assert f.runtimes == {"ncnn-9.9-test": "abc123"}
    assert f.to_dict()["manylinux_tags"][0].startswith("manylinux_2_")


@pytest.mark.sshd
def test_probe_without_the_named_python_falls_back_to_sh(sshd) -> None:
    """A board whose python is missing (Buildroot, `sim up --image minimal`) is still probed, from POSIX sh,
    and says it has no Python, so the native runtime is chosen for it - in one SSH exec, as with Python."""
    board = dataclasses.replace(sshd.board("loop"), python="/usr/bin/python9")
    with connect(board) as c:
        opened = []
        real_open = c.transport.open_session
        c.transport.open_session = lambda *a, **k: opened.append(1) or real_open(*a, **k)
        facts = probe(c)
        c.transport.open_session = real_open
    assert len(opened) == 1
    with connect(sshd.board("loop")) as c:
        with_python = probe(c)
    assert not facts.python and with_python.python
    assert (facts.arch, facts.machine, facts.cores) == (with_python.arch, with_python.machine, with_python.cores)


@pytest.mark.boards
@pytest.mark.slow
def test_probe_emulated_arm64_and_armhf_boards(sim_boards) -> None:
    inv = load_targets(sim_boards.targets)
    facts = {}
    for name in (sim_boards.pi4, sim_boards.armhf):
        with connect(inv.board(name)) as c:
            facts[name] = probe(c)
    pi4, armhf = facts[sim_boards.pi4], facts[sim_boards.armhf]
    assert (pi4.arch, pi4.wheel_arch, pi4.pointer_bits) == ("arm64", "aarch64", 64)
    assert pi4.cpu_model == "Cortex-A72" and pi4.dt_model and "Raspberry Pi 4" in pi4.dt_model
    assert pi4.soabi and "aarch64" in pi4.soabi
    assert (armhf.arch, armhf.wheel_arch, armhf.pointer_bits) == ("armhf", "armv7l", 32)
    assert armhf.soabi and "arm-linux-gnueabihf" in armhf.soabi
    for f in (pi4, armhf):
        assert f.glibc_tuple and f.glibc_tuple >= (2, 28) and f.python.startswith("3.")
        assert f.cores >= 1 and f.mem_total and f.disk_free > 0


@pytest.mark.boards
@pytest.mark.slow
def test_proxyjump_through_one_emulated_board_to_another(sim_boards, tmp_path: Path) -> None:
    """sim-2 reached through sim-1 (both ARM sshds under qemu): each hop host-key checked."""
    text = sim_boards.targets.read_text()
    inv = load_targets(sim_boards.targets)
    via = dataclasses.replace(inv.board(sim_boards.armhf), jump=[inv.board(sim_boards.pi4)])
    with connect(via) as c:
        client_ip = c.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.split()[0]
        assert client_ip == sim_boards.address(sim_boards.pi4)      # the connection came from the first board
        assert [h.hostname for h in c.hops] == [sim_boards.address(sim_boards.pi4), sim_boards.address(sim_boards.armhf)]
    assert text == sim_boards.targets.read_text()
