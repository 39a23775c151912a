"""Host prerequisite checks: root, Debian packages, binfmt handlers (logic on fake inputs)."""

from __future__ import annotations

import os

import pytest

from deployer.errors import DeployerError
from deployer.sim import host
from deployer.sim.host import BINFMTS, Binfmt, binfmt_problem, missing_packages, require_root


def test_not_root_is_one_clear_line():
    with pytest.raises(DeployerError) as err:
        require_root(geteuid=lambda: 1000)
    assert str(err.value).startswith("deployer sim needs root")
    assert "sudo deployer sim up" in str(err.value)
    require_root(geteuid=lambda: 0)


def test_missing_packages_names_them_and_the_apt_command():
    missing = missing_packages(shaped=True, installed=lambda pkg: pkg not in {"ethtool", "qemu-user-static"})
    assert missing == ["qemu-user-static", "ethtool"]
    assert missing_packages(shaped=False, installed=lambda pkg: pkg != "ethtool") == []
    msg = str(host.missing_packages_error(missing))
    assert "not installed: qemu-user-static, ethtool" in msg
    assert "apt-get update && apt-get install -y qemu-user-static ethtool" in msg
    assert "--install-deps" in msg


def _entry(flags: str, enabled: bool = True) -> str:
    return (f"{'enabled' if enabled else 'disabled'}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
            f"flags: {flags}\noffset 0\nmagic 7f454c46\nmask ffffffff\n")


@pytest.mark.parametrize("setup, problem", [
    ({}, "not mounted"),
    ({"register": ""}, "no qemu-aarch64 binfmt handler"),
    ({"register": "", "qemu-aarch64": _entry("PF", enabled=False)}, "disabled"),
    ({"register": "", "qemu-aarch64": _entry("P")}, "lacks the F (fix-binary) flag (flags: P)"),
    ({"register": "", "qemu-aarch64": _entry("PF")}, None),
    ({"register": "", "qemu-aarch64": _entry("OCF")}, None),
])
def test_binfmt_problem(tmp_path, setup, problem):
    for name, text in setup.items():
        (tmp_path / name).write_text(text)
    found = binfmt_problem("arm64", tmp_path)
    assert (found is None) if problem is None else (problem in found)


def test_register_line_is_the_kernel_syntax_with_fix_binary():
    line = host._register_line(BINFMTS["armhf"]).decode()
    name, kind, offset, magic, mask, interp, flags = line.split(":")[1:]
    assert (name, kind, offset, interp, flags) == ("qemu-arm", "M", "", "/usr/bin/qemu-arm-static", "F")
    assert magic.replace("\\x", "") == "7f454c4601010100000000000000000002002800"
    assert mask.replace("\\x", "") == "ffffffffffffff00fffffffffffffffffeffffff"


@pytest.mark.boards
def test_kernel_accepts_our_register_line_and_keeps_flag_f():
    """Register a harmless entry (a magic no real file has) for real, check it, remove it."""
    if os.geteuid() != 0 or host.binfmt_problem("arm64") is not None:
        pytest.skip("needs root and a working binfmt_misc (deployer sim up repairs it)")
    fmt = Binfmt("deployer-selftest", b"DPLYSELFTEST", "/usr/bin/true", mask=b"\xff" * 12)
    entry = host.BINFMT_DIR / fmt.name
    try:
        (host.BINFMT_DIR / "register").write_bytes(host._register_line(fmt))
        text = entry.read_text()
        assert text.startswith("enabled")
        assert "flags: F" in text
        assert "magic " + b"DPLYSELFTEST".hex() in text
    finally:
        if entry.exists():
            entry.write_text("-1")
    assert not entry.exists()


def test_ensure_binfmt_leaves_a_good_handler_alone(tmp_path):
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-arm").write_text(_entry("PF"))
    host.ensure_binfmt("armhf", tmp_path)
    assert (tmp_path / "register").read_text() == ""


def test_ensure_binfmt_registers_with_flag_f_and_says_how_to_fix_when_it_cannot(tmp_path):
    """A fake binfmt_misc dir: it records the writes but (unlike the kernel) does not act on them."""
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-aarch64").write_text(_entry("P"))
    with pytest.raises(DeployerError) as err:
        host.ensure_binfmt("arm64", tmp_path)
    assert (tmp_path / "register").read_bytes() == host._register_line(BINFMTS["arm64"])
    assert (tmp_path / "qemu-aarch64").read_text() == "-1"  # the handler without F was unregistered first
    assert str(err.value).startswith("cannot run arm64 binaries: ")
    assert f"mount -t binfmt_misc binfmt_misc {tmp_path} && update-binfmts --enable qemu-aarch64" in str(err.value)
