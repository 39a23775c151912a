"""How a board + ~/.ssh/config become a chain of hops (pure planning, no network)."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from deployer.errors import DeployerError
from deployer.ssh.config import load_ssh_config, plan_hops
from deployer.targets import load_targets


def cfg(tmp_path: Path, text: str) -> paramiko.SSHConfig:
    p = tmp_path / "ssh_config"
    p.write_text(text)
    return load_ssh_config(p)


def board(tmp_path: Path, yaml_text: str, name: str):
    (tmp_path / "t.yaml").write_text(yaml_text)
    return load_targets(tmp_path / "t.yaml").board(name)


def test_yaml_values_win_over_ssh_config_and_config_fills_the_rest(tmp_path: Path) -> None:
    c = cfg(tmp_path, "Host pi\n  HostName 10.0.0.9\n  Port 2200\n  User alarm\n  IdentityFile ~/k1\n"
                      "  HostKeyAlias pi-kitchen\n")
    b = board(tmp_path, "boards:\n  a: {host: pi, user: pi}\n", "a")
    (hop,) = plan_hops(b, c)
    assert (hop.hostname, hop.port, hop.user) == ("10.0.0.9", 2200, "pi")
    assert hop.keys == [Path("~/k1").expanduser()] and hop.known_hosts_name == "pi-kitchen"
    b2 = board(tmp_path, "boards:\n  a: {host: pi, port: 22, key: mykey}\n", "a")
    (hop,) = plan_hops(b2, c)
    assert (hop.port, hop.user, hop.keys, hop.explicit_keys) == (22, "alarm", [tmp_path / "mykey"], True)


def test_proxyjump_with_several_hops_each_looked_up_in_the_config(tmp_path: Path) -> None:
    c = cfg(tmp_path, "Host target\n  HostName 192.168.5.5\n  ProxyJump ops@gw1:2222,gw2\n"
                      "Host gw2\n  HostName 10.1.1.1\n  User jumper\n")
    b = board(tmp_path, "boards:\n  t: {host: target, user: pi}\n", "t")
    hops = plan_hops(b, c)
    assert [(h.hostname, h.port, h.user) for h in hops] == [
        ("gw1", 2222, "ops"), ("10.1.1.1", 22, "jumper"), ("192.168.5.5", 22, "pi")]
    assert [h.who for h in hops] == ["board 't' (jump host ops@gw1:2222)", "board 't' (jump host gw2)", "board 't'"]
    assert all(h.known_hosts == b.known_hosts for h in hops)


def test_yaml_jump_boards_bring_their_own_chain_and_settings(tmp_path: Path) -> None:
    b = board(tmp_path, """
boards:
  outer: {host: gw.example.com, user: ops, port: 2222, key: ops_key}
  mid: {host: 10.0.0.1, user: mid, jump: outer}
  pi: {host: 10.0.1.5, user: pi, jump: [mid]}
""", "pi")
    hops = plan_hops(b, paramiko.SSHConfig())
    assert [(h.hostname, h.port, h.user) for h in hops] == [
        ("gw.example.com", 2222, "ops"), ("10.0.0.1", 22, "mid"), ("10.0.1.5", 22, "pi")]
    assert hops[0].keys == [tmp_path / "ops_key"] and hops[0].who == "board 'pi' (jump host 'outer')"


def test_proxyjump_none_and_loops(tmp_path: Path) -> None:
    c = cfg(tmp_path, "Host direct\n  ProxyJump none\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    assert len(plan_hops(board(tmp_path, "boards:\n  d: {host: direct}\n", "d"), c)) == 1
    with pytest.raises(DeployerError, match="more than 8 jump hops"):
        plan_hops(board(tmp_path, "boards:\n  x: {host: a}\n", "x"), c)


def test_a_passphrase_protected_key_is_one_line_or_skipped_for_the_agent(tmp_path: Path, monkeypatch) -> None:
    """paramiko's PKey.from_path raises cryptography's TypeError for every encrypted key: a
    passphrase-protected key (explicit, or the default ~/.ssh/id_ed25519 used via ssh-agent) was exit 4."""
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from deployer.ssh.config import Hop
    from deployer.ssh.connect import _authenticate

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)        # no agent: nothing else to try
    key = tmp_path / "id_ed25519"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.BestAvailableEncryption(b"secret")))
    hop = Hop(label="board 'b'", hostname="h", port=22, user="pi", keys=[key], explicit_keys=True, board="b")
    with pytest.raises(DeployerError, match="is passphrase-protected") as err:
        _authenticate(None, hop)
    assert "ssh-add" in err.value.hint
    hop.explicit_keys = False                                  # a default identity: skipped, agent next
    with pytest.raises(DeployerError, match=r"authentication failed .*tried no keys"):
        _authenticate(None, hop)


def test_an_ignored_proxycommand_or_include_is_named_when_the_board_cannot_be_reached(tmp_path: Path) -> None:
    """deployer never runs a ProxyCommand and paramiko reads no Include; a board reachable only through
    one, or defined in an included file, failed as 'cannot resolve host' with a hint to check the name."""
    from deployer.ssh.connect import _open_socket

    config = cfg(tmp_path, "Host pc\n  HostName board.invalid\n  ProxyCommand cloudflared access ssh --hostname %h\n"
                           "Host nopc\n  ProxyCommand none\n")
    b = board(tmp_path, "boards:\n  b: {host: pc}\n  c: {host: nopc}\n", "b")
    (hop,) = plan_hops(b, config)
    assert hop.proxy_command
    with pytest.raises(DeployerError, match="cannot resolve host 'board.invalid'") as err:
        _open_socket(hop, None, "")
    assert "ProxyCommand, which deployer does not run" in err.value.hint
    c = load_targets(tmp_path / "t.yaml").board("c")
    assert not plan_hops(c, config)[0].proxy_command
    config = cfg(tmp_path, "Include config.d/*\nHost nopc\n  HostName board.invalid\n")   # paramiko skips Include
    with pytest.raises(DeployerError) as err:
        _open_socket(plan_hops(c, config)[0], None, "")
    assert "does not read ~/.ssh/config's 'Include config.d/*'" in err.value.hint
