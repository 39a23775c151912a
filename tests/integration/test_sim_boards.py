"""The emulated boards seen the way deployer sees them: over real SSH with strict host-key checking."""

from __future__ import annotations

import socket
import time

import paramiko
import pytest
import yaml

from deployer.sim.manager import sim_status

pytestmark = [pytest.mark.boards, pytest.mark.slow]


def connect(sim, name: str, known_hosts=None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or sim.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sim.address(name), username="pi", key_filename=str(sim.key), timeout=30,
                   allow_agent=False, look_for_keys=False)
    return client


def run(client: paramiko.SSHClient, cmd: str) -> str:
    _, stdout, stderr = client.exec_command(cmd, timeout=60)
    out = stdout.read().decode()
    rc = stdout.channel.recv_exit_status()
    assert rc == 0, f"{cmd!r} exited {rc}: {stderr.read().decode()}"
    return out


def test_targets_file_lists_the_boards_with_their_tags(sim_boards):
    doc = yaml.safe_load(sim_boards.targets.read_text())
    assert doc["defaults"]["user"] == "pi"
    assert doc["defaults"]["known_hosts"] == "sim_known_hosts"
    tags = {name: b["tags"] for name, b in doc["boards"].items()}
    assert tags == {sim_boards.pi4: ["sim", "arm64"], sim_boards.armhf: ["sim", "armhf"],
                    sim_boards.shaped: ["sim", "arm64"]}
    for name in sim_boards.all:
        assert doc["boards"][name]["host"] == sim_boards.address(name)


def test_targets_file_loads_with_deployer_targets(sim_boards):
    targets = pytest.importorskip("deployer.targets")
    inv = targets.load_targets([sim_boards.targets])
    (board,) = inv.resolve(sim_boards.pi4)
    assert board.host == sim_boards.address(sim_boards.pi4)
    assert board.user == "pi"
    assert "arm64" in board.tags


def test_pi4_board_is_an_aarch64_cortex_a72_pi(sim_boards):
    with connect(sim_boards, sim_boards.pi4) as c:
        out = run(c, "uname -m; dpkg --print-architecture; echo $QEMU_CPU; "
                     "python3 -c 'import platform; print(platform.machine())'; "
                     "cat /sys/firmware/devicetree/base/model | tr -d '\\0'; echo; "
                     "grep -c ^processor /proc/cpuinfo; grep -m1 'CPU part' /proc/cpuinfo; grep ^Model /proc/cpuinfo; "
                     "ps -e -o pid=,comm= | head -1; whoami").split("\n")
    assert out[0] == "aarch64"
    assert out[1] == "arm64"
    assert out[2] == "cortex-a72"
    assert out[3] == "aarch64"
    assert out[4] == "Raspberry Pi 4 Model B Rev 1.4"
    assert out[5] == "4"
    assert out[6].endswith("0xd08")  # Cortex-A72
    assert "Raspberry Pi 4" in out[7]
    assert out[8].split() == ["1", "sshd"]  # the board's own sshd is PID 1 of its pid namespace
    assert out[9] == "pi"


def test_armhf_board_reports_a_32bit_arm_userland(sim_boards):
    with connect(sim_boards, sim_boards.armhf) as c:
        out = run(c, "dpkg --print-architecture; getconf LONG_BIT; echo $QEMU_CPU; "
                     "python3 -c 'import platform, struct; print(platform.machine(), struct.calcsize(\"P\") * 8)'; "
                     "od -An -tx1 -N5 /usr/bin/python3").split("\n")
    assert out[0] == "armhf"
    assert out[1] == "32"
    assert out[2] == "cortex-a15"
    assert out[3] == "armv7l 32"
    assert out[4].split()[:5] == ["7f", "45", "4c", "46", "01"]  # ELFCLASS32


def test_board_runs_python_subprocess_shell_and_sftp(sim_boards):
    with connect(sim_boards, sim_boards.pi4) as c:
        assert run(c, "python3 -c 'import subprocess; print(subprocess.run(\"echo $((6*7))\", shell=True, "
                      "capture_output=True, text=True).stdout.strip())'").strip() == "42"
        sftp = c.open_sftp()
        payload = bytes(range(256)) * 64
        with sftp.open("/home/pi/sftp-check.bin", "wb") as fh:
            fh.write(payload)
        assert run(c, "sha256sum /home/pi/sftp-check.bin").split()[0] == __import__("hashlib").sha256(payload).hexdigest()
        sftp.remove("/home/pi/sftp-check.bin")


def test_strict_host_key_checking_rejects_a_wrong_key(sim_boards, tmp_path):
    other = sim_boards.address(sim_boards.armhf)
    target = sim_boards.address(sim_boards.pi4)
    lines = sim_boards.known_hosts.read_text().splitlines()
    key_of_other = next(ln.split(" ", 1)[1] for ln in lines if ln.startswith(other + " "))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{target} {key_of_other}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sim_boards, sim_boards.pi4, known_hosts=wrong)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        connect(sim_boards, sim_boards.pi4, known_hosts=empty)


def test_boards_reach_each_other_for_proxyjump(sim_boards):
    target = sim_boards.address(sim_boards.armhf)
    with connect(sim_boards, sim_boards.pi4) as c:
        banner = run(c, f"python3 -c 'import socket; s = socket.create_connection((\"{target}\", 22), 10); "
                        f"print(s.recv(64).decode().strip())'")
        assert banner.startswith("SSH-2.0-OpenSSH")
        # and a real jump: direct-tcpip through the pi4 board's sshd to the armhf board's
        chan = c.get_transport().open_channel("direct-tcpip", (target, 22), ("127.0.0.1", 0))
        client = paramiko.SSHClient()
        client.load_host_keys(str(sim_boards.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(target, username="pi", key_filename=str(sim_boards.key), sock=chan, timeout=30,
                       allow_agent=False, look_for_keys=False)
        with client:
            out = run(client, "dpkg --print-architecture; echo $SSH_CONNECTION").split("\n")
        assert out[0] == "armhf"
        assert out[1].split()[0] == sim_boards.address(sim_boards.pi4)


def _tcp_connect_ms(address: str, tries: int = 5) -> float:
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        with socket.create_connection((address, 22), timeout=10):
            best = min(best, (time.perf_counter() - t) * 1000)
    return best


def test_shaped_link_adds_delay_and_limits_rate(sim_boards):
    plain = _tcp_connect_ms(sim_boards.address(sim_boards.pi4))
    shaped = _tcp_connect_ms(sim_boards.address(sim_boards.shaped))
    # a TCP handshake is one round trip: 20 ms each way on the shaped link
    assert plain < 15, plain
    assert 38 <= shaped < 150, shaped

    size = 2_000_000
    with connect(sim_boards, sim_boards.shaped) as c:
        chan = c.get_transport().open_session()
        chan.exec_command("cat > /dev/null; echo done")
        t = time.perf_counter()
        chan.sendall(b"\0" * size)
        chan.shutdown_write()
        assert chan.recv(16).strip() == b"done"
        seconds = time.perf_counter() - t
        assert chan.recv_exit_status() == 0
    mbit = size * 8 / seconds / 1e6
    assert mbit < 20 * 1.1, f"{mbit:.1f} Mbit/s through a 20 Mbit/s link"
    assert mbit > 5, f"{mbit:.1f} Mbit/s: the shaper is far slower than its rate"


def test_status_reports_every_board_up_and_answering(sim_boards):
    status = {b.name: b for b in sim_status(sim_boards.state_dir)}
    assert set(status) == set(sim_boards.all)
    for name, b in status.items():
        assert (b.state, b.sshd, b.address) == ("up", True, sim_boards.address(name))
    assert status[sim_boards.shaped].link == "delay=20,rate=20"
    assert status[sim_boards.armhf].cpu == "cortex-a15"
