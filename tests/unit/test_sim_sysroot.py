"""Sysroot building blocks: which apt sources are used, what the SSH preparation writes."""

from __future__ import annotations

import os

import pytest

from deployer.errors import DeployerError
from deployer.sim import sysroot
from deployer.sim.sysroot import _add_member, debian_sources, prepare_for_ssh

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
"""


def _apt(tmp_path, deb822: str = "", one_line: str = ""):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(deb822)
    (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_only_debian_bookworm_main_is_kept_and_restricted_to_the_arch(tmp_path):
    text = debian_sources("armhf", _apt(tmp_path, DEB822,
                                        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"))
    stanzas = text.strip().split("\n\n")
    assert len(stanzas) == 2
    assert "URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n" \
           "Architectures: armhf\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg" in stanzas[0]
    assert "Suites: bookworm-security" in stanzas[1]
    assert "nodesource" not in text and "google" not in text


def test_one_line_sources_with_options(tmp_path):
    text = debian_sources("arm64", _apt(tmp_path, one_line=(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main non-free\n"
        "deb http://mirror.example/debian bullseye main\n")))
    assert text == ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
                    "Architectures: arm64\nSigned-By: /k.gpg\n")


def test_no_bookworm_source_is_a_clear_error(tmp_path):
    with pytest.raises(DeployerError, match="no Debian bookworm 'main' source found"):
        debian_sources("arm64", _apt(tmp_path, one_line="deb http://x/debian bullseye main\n"))


def test_add_member():
    assert _add_member("video:x:44:", "pi", ("video",)) == "video:x:44:pi"
    assert _add_member("audio:x:29:bob", "pi", ("audio",)) == "audio:x:29:bob,pi"
    assert _add_member("root:x:0:", "pi", ("video",)) == "root:x:0:"


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare_for_ssh chowns /home/pi to uid 1000 (needs root)")
def test_prepare_for_ssh_makes_a_key_only_pi_user(tmp_path):
    root = tmp_path
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/dash").write_text("")
    (root / "usr/share/base-passwd").mkdir(parents=True)
    (root / "usr/share/base-passwd/passwd.master").write_text("root:*:0:0:root:/root:/bin/sh\n")
    (root / "usr/share/base-passwd/group.master").write_text("root:*:0:\nvideo:*:44:\n")
    (root / "usr/share/openssh").mkdir(parents=True)
    (root / "usr/share/openssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/ssh_host_rsa_key").write_text("stale")
    (root / "etc/skel").mkdir()
    (root / "etc/skel/.bashrc").write_text("# bashrc\n")
    prepare_for_ssh(root)
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "pi:x:1000:1000:,,,:/home/pi:/bin/bash" in passwd
    assert any(line.startswith("sshd:x:") for line in passwd)
    shadow = dict(line.split(":", 2)[:2] for line in (root / "etc/shadow").read_text().splitlines())
    assert shadow["pi"] == "*"  # not '!': a locked account is refused even with a key when UsePAM is off
    assert "video:*:44:pi" in (root / "etc/group").read_text()
    dropin = (root / "etc/ssh/sshd_config.d/deployer-sim.conf").read_text()
    assert "UsePAM no" in dropin and "PasswordAuthentication no" in dropin
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert os.readlink(root / "usr/bin/sh") == "dash"
    assert (root / "home/pi/.bashrc").stat().st_uid == 1000


def test_apt_reports_each_fetched_file_as_it_arrives_and_keeps_the_output():
    """The download phase's progress counts apt's `Get:` lines live (a print-uris plan gives the total)."""
    seen: list[int] = []
    script = "echo 'Get:1 http://m a 1 [10 B]'; echo 'Ign:2 x'; sleep 0.2; echo 'Get:3 http://m b 1 [9 B]'; " \
             "echo 'E: disk full' >&2; exit 100"
    res = sysroot._apt(["sh", "-c", script], on_fetch=seen.append)
    assert seen == [1, 2]
    assert res.returncode == 100 and "Ign:2 x" in res.stdout and res.stderr.strip() == "E: disk full"
