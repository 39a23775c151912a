"""deployer.ssh.connect against real OpenSSH sshds: host keys, ssh_config, ProxyJump, agent, retries, exec, streams."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployer.errors import DeployerError, RemoteError
from deployer.ssh import connect as connect_mod
from deployer.ssh.connect import connect
from deployer.ssh.hostkeys import ChangedHostKey, UnknownHostKey
from deployer.targets import load_targets

pytestmark = pytest.mark.sshd


def openssh_fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def remote_alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


@pytest.fixture
def loop(sshd):
    return sshd.board("loop")


def test_run_quotes_every_word(loop) -> None:
    tricky = ["a b", "$HOME", "'q'", "; touch /tmp/pwned-deployer", "*", "line\nbreak"]
    with connect(loop) as c:
        res = c.run(["printf", "%s|", *tricky])
    assert res.rc == 0 and res.stdout == "|".join(tricky) + "|"
    assert not Path("/tmp/pwned-deployer").exists()


def test_run_returns_rc_and_stderr_and_check_raises_naming_board(loop) -> None:
    with connect(loop) as c:
        res = c.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
        assert (res.rc, res.stdout, res.stderr) == (7, "out\n", "err\n")
        with pytest.raises(RemoteError) as e:
            c.run(["sh", "-c", "echo boom >&2; exit 3"], check=True)
        assert "board 'loop'" in str(e.value) and "exited with 3" in str(e.value) and "boom" in str(e.value)
        res = c.run(["cat"], stdin=b"piped input")
        assert res.stdout == "piped input"


def test_unknown_host_is_refused_by_default_and_accept_new_saves_it(sshd, loop, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    board = dataclasses.replace(loop, known_hosts=kh)
    server = sshd.server
    with pytest.raises(UnknownHostKey) as e:
        connect(board)
    msg = str(e.value)
    assert "board 'loop'" in msg and openssh_fingerprint(server.host_key_pub) in msg and "--accept-new" in msg
    with connect(board, accept_new=True) as c:
        assert c.run(["true"]).rc == 0
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{server.port}", "-f", str(kh)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and server.host_key_pub.read_text().split()[1] in found.stdout
    with connect(board) as c:      # pinned now: strict check passes without --accept-new
        assert c.alive


def test_changed_host_key_is_refused_with_both_fingerprints(sshd, loop, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    kh = tmp_path / "kh"
    kh.write_text(sshd.server.host_key_line().split()[0] + " " + " ".join(
        (tmp_path / "impostor.pub").read_text().split()[:2]) + "\n")
    board = dataclasses.replace(loop, known_hosts=kh)
    for accept in (False, True):
        with pytest.raises(ChangedHostKey) as e:
            connect(board, accept_new=accept)
        msg = str(e.value)
        assert openssh_fingerprint(tmp_path / "impostor.pub") in msg
        assert openssh_fingerprint(sshd.server.host_key_pub) in msg
        assert f"{kh}:1" in msg and "board 'loop'" in msg


def test_hashed_known_hosts_from_ssh_keygen(sshd, loop, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text(sshd.server.host_key_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    with connect(dataclasses.replace(loop, known_hosts=kh)) as c:
        assert c.run(["true"]).ok


def test_ssh_config_alias_supplies_hostname_port_user_and_identity(sshd, tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host kitchen-pi\n  HostName 127.0.0.1\n  Port {sshd.server.port}\n  User {sshd.user}\n"
                   f"  IdentityFile {sshd.client_key}\n")
    monkeypatch.setenv("DEPLOYER_SSH_CONFIG", str(cfg))
    kh = tmp_path / "kh"
    kh.write_text(sshd.server.host_key_line())
    (tmp_path / "t.yaml").write_text(f"boards:\n  kitchen: {{host: kitchen-pi, known_hosts: {kh}}}\n")
    board = load_targets(tmp_path / "t.yaml").board("kitchen")
    with connect(board) as c:
        assert c.run(["id", "-un"]).stdout.strip() == sshd.user
        assert c.hops[-1].address == f"{sshd.user}@127.0.0.1:{sshd.server.port}"


def test_agent_keys_are_used_when_no_key_file_is_set(sshd, loop, tmp_path: Path, monkeypatch) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("DEPLOYER_SSH_CONFIG", "")
        board = dataclasses.replace(loop, key=None)
        with pytest.raises(DeployerError, match="authentication failed"):
            connect(board)                 # empty agent, no key file: refused, one clear line
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       capture_output=True)
        with connect(board) as c:
            assert c.run(["true"]).ok
    finally:
        agent.terminate()
        agent.wait()


def test_wrong_key_is_not_retried(sshd, loop, tmp_path: Path, monkeypatch) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "wrong")], check=True)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    retries: list = []
    with pytest.raises(DeployerError) as e:
        connect(dataclasses.replace(loop, key=tmp_path / "wrong", retries=3), on_retry=lambda *a: retries.append(a))
    assert "authentication failed" in str(e.value) and "board 'loop'" in str(e.value) and retries == []
    with pytest.raises(DeployerError, match="key file .* not found"):
        connect(dataclasses.replace(loop, key=tmp_path / "missing"))


def test_refused_connections_retry_with_exponential_backoff(loop, monkeypatch) -> None:
    monkeypatch.setattr(connect_mod, "BACKOFF_BASE", 0.05)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens here
    delays: list[float] = []
    with pytest.raises(RemoteError) as e:
        connect(dataclasses.replace(loop, port=port, retries=3), on_retry=lambda n, d, why: delays.append(d))
    assert delays == [0.05, 0.1, 0.2]
    assert "board 'loop'" in str(e.value) and "gave up after 4 attempts" in str(e.value)


def test_banner_errors_are_retried(loop, monkeypatch) -> None:
    """A port that accepts and hangs up (overloaded sshd, flaky NAT) -> "Error reading SSH protocol banner"."""
    monkeypatch.setattr(connect_mod, "BACKOFF_BASE", 0.05)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    accepted = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(RemoteError) as e:
            connect(dataclasses.replace(loop, port=srv.getsockname()[1], retries=2))
        assert len(accepted) == 3 and "handshake" in str(e.value)
    finally:
        srv.close()


def test_stream_yields_lines_as_they_arrive(loop) -> None:
    with connect(loop) as c:
        t0 = time.monotonic()
        seen = []
        with c.stream(["sh", "-c", "echo one; sleep 1; echo two; echo three"]) as s:
            for line in s:
                seen.append((line, time.monotonic() - t0))
        assert [x for x, _ in seen] == ["one", "two", "three"] and s.rc == 0
        assert seen[0][1] < 0.9 <= seen[1][1]   # the first line came before the command finished


def test_closing_a_stream_kills_the_remote_process_group(loop) -> None:
    with connect(loop) as c:
        with c.stream(["sh", "-c", "sleep 3107 & echo started; sleep 3108; wait"]) as s:
            assert next(iter(s)) == "started"
            assert remote_alive("sleep 310[7]") and remote_alive("sleep 310[8]")
        deadline = time.monotonic() + 5
        while (remote_alive("sleep 310[7]") or remote_alive("sleep 310[8]")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not remote_alive("sleep 310[7]") and not remote_alive("sleep 310[8]")


def test_ctrl_c_while_streaming_kills_the_remote_process(loop) -> None:
    with connect(loop) as c:
        with pytest.raises(KeyboardInterrupt):
            with c.stream(["sh", "-c", "echo go; exec sleep 3109"]) as s:
                for _ in s:
                    raise KeyboardInterrupt
        assert not remote_alive("sleep 310[9]")


def test_dropped_connection_mid_stream_is_a_clear_error(sshd, loop) -> None:
    with connect(loop) as c:
        with pytest.raises(RemoteError) as e:
            with c.stream(["sh", "-c", "echo ready; exec sleep 3110"]) as s:
                for line in s:
                    assert line == "ready"
                    assert sshd.server.kill_sessions() > 0
        msg = str(e.value)
        assert "board 'loop'" in msg and "connection lost" in msg and "sleep 3110" in msg


def test_run_timeout_kills_the_command(loop) -> None:
    with connect(loop) as c:
        with pytest.raises(RemoteError, match="timed out"):
            c.run(["sleep", "3111"], timeout=0.5)
        time.sleep(0.3)
        assert not remote_alive("sleep 311[1]")


def test_remote_names_with_dotdot_are_refused(loop) -> None:
    with connect(loop) as c:
        assert c.remote_path("models", "m.param") == f"{loop.runtime_dir}/models/m.param"
        for bad in ("../etc/passwd", "models/../../x", "/etc/passwd"):
            with pytest.raises(DeployerError, match="escapes"):
                c.remote_path(bad)


def test_proxyjump_through_bastion_to_a_host_only_it_can_reach(sshd_pair) -> None:
    inner = sshd_pair.board("inner")
    with connect(inner) as c:
        # the inner sshd sees the connection coming from inside the namespace, via the bastion
        assert c.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout.split()[2:] == ["127.0.0.1", "2222"]
        assert [h.port for h in c.hops] == [22, 2222]
    direct = dataclasses.replace(inner, jump=[], retries=0, timeout=2)
    with pytest.raises(DeployerError):
        connect(direct).close()       # without the jump the inner host is not reachable (or not the same host)


def test_three_hop_chain_and_every_hop_is_host_key_checked(sshd_pair, tmp_path: Path) -> None:
    with connect(sshd_pair.board("inner3")) as c:
        assert c.run(["true"]).ok and len(c.hops) == 3
    bastion_line = sshd_pair.servers["bastion"].host_key_line()
    (tmp_path / "t").mkdir()
    kh = tmp_path / "t" / "kh"
    kh.write_text("".join(l for l in sshd_pair.known_hosts.read_text().splitlines(True) if l != bastion_line))
    text = sshd_pair.targets.read_text().replace("known_hosts: known_hosts", f"known_hosts: {kh}")
    text = text.replace("key: ../client_key", f"key: {sshd_pair.client_key}")
    (tmp_path / "t" / "t.yaml").write_text(text)
    board = load_targets(tmp_path / "t" / "t.yaml").board("inner3")
    with pytest.raises(UnknownHostKey) as e:
        connect(board)
    assert "bastion" in str(e.value) and sshd_pair.servers["bastion"].host in str(e.value)


def test_proxyjump_from_ssh_config(sshd_pair, tmp_path: Path, monkeypatch) -> None:
    bastion = sshd_pair.servers["bastion"]
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host inner-alias\n  HostName 127.0.0.1\n  Port 2222\n  ProxyJump {sshd_pair.user}@{bastion.host}:22\n"
                   f"Host {bastion.host}\n  IdentityFile {sshd_pair.client_key}\n")
    monkeypatch.setenv("DEPLOYER_SSH_CONFIG", str(cfg))
    (tmp_path / "t.yaml").write_text(
        f"boards:\n  in: {{host: inner-alias, user: {sshd_pair.user}, key: {sshd_pair.client_key}, "
        f"known_hosts: {sshd_pair.known_hosts}}}\n")
    with connect(load_targets(tmp_path / "t.yaml").board("in")) as c:
        assert [h.hostname for h in c.hops] == [bastion.host, "127.0.0.1"]
        assert c.run(["true"]).ok


def test_dropped_connection_mid_stream_raises_even_without_check(sshd, loop) -> None:
    """check=False (how the runner session streams) must not turn a dead link into a quiet end."""
    with connect(loop) as c:
        s = c.stream(["sh", "-c", "echo ready; exec sleep 3112"], check=False)
        with pytest.raises(RemoteError) as e:
            for line in s:
                assert line == "ready"
                assert sshd.server.kill_sessions() > 0
        assert "board 'loop'" in str(e.value) and "connection lost" in str(e.value) and "\n" not in str(e.value)
        assert s.rc is None
        with pytest.raises(RemoteError, match="connection lost"):
            s.send(b"more input\n")               # a dead link is not "the process has exited"


def test_a_dropped_stream_is_collected_without_opening_a_channel(loop) -> None:
    """A stream abandoned mid-iteration is finalized by the garbage collector, which can run inside
    paramiko's open_channel (holding the transport lock): the finalizer must not open a channel to
    kill the process (that deadlocked a CI run); close() still kills it."""
    import gc

    with connect(loop) as c:
        s = c.stream(["sh", "-c", "echo ready; exec sleep 3113"], check=False)
        assert next(iter(s)) == "ready"
        opened = []
        real_open = c.transport.open_session
        c.transport.open_session = lambda *a, **k: opened.append(1) or real_open(*a, **k)
        del s
        gc.collect()
        assert opened == [], "the finalizer opened a channel"
        c.transport.open_session = real_open
        s = c.stream(["sh", "-c", "echo ready; exec sleep 3114"], check=False)
        assert next(iter(s)) == "ready"
        s.close()                                   # an explicit close kills the remote process
        assert c.run(["sh", "-c", "pgrep -f 'sleep 311[4]' || true"]).stdout.strip() == ""


def test_process_killed_by_a_signal_is_an_error_not_an_exit(loop) -> None:
    """sshd reports a signal death of the session's shell as exit-signal, which paramiko drops: no
    exit status at all. (The test user's login shell is dash, which does not exec the command, so
    the test kills it too: $PPID.)"""
    with connect(loop) as c:
        for check in (True, False):
            s = c.stream(["sh", "-c", "echo ready; kill -KILL $PPID $$"], check=check)
            with pytest.raises(RemoteError) as e:
                assert list(s) == ["ready"]
            assert "board 'loop'" in str(e.value) and "without an exit status" in str(e.value)
            assert "connection lost" not in str(e.value)
        assert c.run(["true"]).ok                 # the connection itself is fine


def test_stdin_to_an_exited_process_is_refused_quietly(loop) -> None:
    with connect(loop) as c:
        s = c.stream(["sh", "-c", "exit 0"])
        assert list(s) == [] and s.rc == 0
        assert s.send(b"nobody reads this\n") is False


def test_logins_through_one_jump_host_are_capped(sshd_pair, monkeypatch) -> None:
    """24 boards behind one bastion at once: at most JUMP_STARTUPS logins are in flight through it
    (the bastion's sshd would drop some beyond MaxStartups), and every board connects."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from deployer.ssh import connect as connect_mod

    real, lock = connect_mod._open_chain, threading.Lock()
    seen = {"now": 0, "max": 0}

    def observed(hops, accept_new):
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        try:
            return real(hops, accept_new)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(connect_mod, "_open_chain", observed)
    inner = sshd_pair.board("inner")

    def one(_: int) -> bool:
        with connect(inner) as c:
            return c.run(["true"]).ok

    with ThreadPoolExecutor(24) as ex:
        assert all(ex.map(one, range(24)))
    assert 1 < seen["max"] <= connect_mod.JUMP_STARTUPS
