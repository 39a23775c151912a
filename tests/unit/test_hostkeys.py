"""known_hosts logic, checked against OpenSSH's own ssh-keygen (fingerprints, hashing, -F lookup)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.ssh import hostkeys
from deployer.ssh.hostkeys import ChangedHostKey, HostKeyError, UnknownHostKey, check_host_key

pytestmark = pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen (openssh-client)")


def make_key(tmp_path: Path, name: str, ktype: str = "ed25519") -> tuple[str, bytes, str]:
    """A fresh host key: (type name, public blob, OpenSSH's SHA256 fingerprint)."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", ktype, "-N", "", "-f", str(path)], check=True)
    tname, b64 = path.with_suffix(".pub").read_text().split()[:2]
    fp = subprocess.run(["ssh-keygen", "-lf", str(path.with_suffix(".pub"))], capture_output=True, text=True,
                        check=True).stdout.split()[1]
    return tname, base64.b64decode(b64), fp


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    for kt in ("ed25519", "ecdsa", "rsa"):
        _, blob, fp = make_key(tmp_path, f"k_{kt}", kt)
        assert hostkeys.fingerprint(blob) == fp


def test_unknown_host_refused_then_accept_new_pins_it_for_openssh(tmp_path: Path) -> None:
    kt, blob, fp = make_key(tmp_path, "k")
    kh = tmp_path / "sub" / "known_hosts"
    with pytest.raises(UnknownHostKey) as e:
        check_host_key(kh, "10.0.0.5", 2222, kt, blob, board="pi4")
    msg = str(e.value)
    assert "board 'pi4'" in msg and "[10.0.0.5]:2222" in msg and fp in msg and "--accept-new" in msg
    assert not kh.exists()
    assert check_host_key(kh, "10.0.0.5", 2222, kt, blob, board="pi4", accept_new=True) == "added"
    # OpenSSH itself finds the saved key under the [host]:port name
    found = subprocess.run(["ssh-keygen", "-F", "[10.0.0.5]:2222", "-f", str(kh)], capture_output=True, text=True)
    assert found.returncode == 0 and base64.b64encode(blob).decode() in found.stdout
    assert check_host_key(kh, "10.0.0.5", 2222, kt, blob, board="pi4") == "known"
    # port 22 is stored without brackets, so another port is still unknown
    with pytest.raises(UnknownHostKey):
        check_host_key(kh, "10.0.0.5", 22, kt, blob, board="pi4")
    (tmp_path / "afile").write_text("")              # --accept-new under a file: one line, not "File exists"
    with pytest.raises(DeployerError, match="afile is a file, not a folder"):
        check_host_key(tmp_path / "afile" / "known_hosts", "10.0.0.5", 22, kt, blob, board="pi4", accept_new=True)


def test_two_deployers_accepting_new_keys_at_once_keep_both(tmp_path: Path) -> None:
    """Each --accept-new wrote the known_hosts it had read plus its line: of two deployers that read
    the file before either wrote (xargs -P, a fleet's threads), the second dropped the first's key."""
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    first, second = hostkeys.KnownHosts(kh), hostkeys.KnownHosts(kh)   # both read the file ...
    first.add("10.0.0.1", "ssh-ed25519", b"key one")                    # ... then both add
    second.add("10.0.0.2", "ssh-ed25519", b"key two")
    assert [e.patterns for e in hostkeys.KnownHosts(kh).entries] == ["10.0.0.1", "10.0.0.2"]
    assert second.add("10.0.0.1", "ssh-ed25519", b"key one") == 1       # already there: not added twice
    assert len(kh.read_text().splitlines()) == 2


def test_changed_key_refused_with_both_fingerprints_and_line_even_with_accept_new(tmp_path: Path) -> None:
    kt, old, old_fp = make_key(tmp_path, "old")
    _, new, new_fp = make_key(tmp_path, "new")
    kh = tmp_path / "known_hosts"
    kh.write_text("# comment\nother.host ssh-ed25519 " + base64.b64encode(new).decode() + "\n"
                  f"pi4.local {kt} {base64.b64encode(old).decode()}\n")
    for accept in (False, True):
        with pytest.raises(ChangedHostKey) as e:
            check_host_key(kh, "pi4.local", 22, kt, new, board="pi4", accept_new=accept)
        msg = str(e.value)
        assert "HOST KEY CHANGED" in msg and old_fp in msg and new_fp in msg
        assert f"{kh}:3" in msg and "ssh-keygen -R" in msg
    assert kh.read_text().count("\n") == 3      # nothing was added


def test_different_key_type_for_a_known_host_is_refused(tmp_path: Path) -> None:
    kt, old, _ = make_key(tmp_path, "old", "ecdsa")
    kt2, new, _ = make_key(tmp_path, "new", "ed25519")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"pi {kt} {base64.b64encode(old).decode()}\n")
    with pytest.raises(ChangedHostKey, match="TYPE CHANGED"):
        check_host_key(kh, "pi", 22, kt2, new, board="pi", accept_new=True)


def test_hashed_entries_written_by_ssh_keygen_are_understood(tmp_path: Path) -> None:
    kt, blob, _ = make_key(tmp_path, "k")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:2022 {kt} {base64.b64encode(blob).decode()}\n"
                  f"pi.lan {kt} {base64.b64encode(blob).decode()}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "127.0.0.1" not in kh.read_text() and "|1|" in kh.read_text()
    assert check_host_key(kh, "127.0.0.1", 2022, kt, blob, board="b") == "known"
    assert check_host_key(kh, "PI.lan", 22, kt, blob, board="b") == "known"
    with pytest.raises(UnknownHostKey):
        check_host_key(kh, "127.0.0.1", 2023, kt, blob, board="b")
    # a file of hashed names gets a hashed new entry, which OpenSSH can look up
    _, blob2, _ = make_key(tmp_path, "k2")
    check_host_key(kh, "new.lan", 22, kt, blob2, board="b", accept_new=True)
    assert "new.lan" not in kh.read_text()
    found = subprocess.run(["ssh-keygen", "-F", "new.lan", "-f", str(kh)], capture_output=True, text=True)
    assert found.returncode == 0


def test_patterns_wildcards_negation_and_revoked(tmp_path: Path) -> None:
    kt, blob, _ = make_key(tmp_path, "k")
    b64 = base64.b64encode(blob).decode()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"*.farm.lan,!bad.farm.lan,10.1.1.? {kt} {b64}\n")
    assert check_host_key(kh, "pi7.farm.lan", 22, kt, blob, board="b") == "known"
    assert check_host_key(kh, "10.1.1.9", 22, kt, blob, board="b") == "known"
    for host in ("bad.farm.lan", "10.1.1.10"):
        with pytest.raises(UnknownHostKey):
            check_host_key(kh, host, 22, kt, blob, board="b")
    kh.write_text(f"pi {kt} {b64}\n@revoked * {kt} {b64}\n")
    with pytest.raises(HostKeyError, match="@revoked"):
        check_host_key(kh, "pi", 22, kt, blob, board="b")


def test_preferred_key_types_put_the_pinned_type_first(tmp_path: Path) -> None:
    kt, blob, _ = make_key(tmp_path, "k", "ecdsa")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[h]:2200 {kt} {base64.b64encode(blob).decode()}\n")
    offered = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")
    assert hostkeys.preferred_key_types(kh, "[h]:2200", offered)[0] == "ecdsa-sha2-nistp256"
    assert hostkeys.preferred_key_types(kh, "other", offered) == list(offered)
