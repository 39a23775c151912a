"""Wheel selection and the host wheel cache (pure logic; file names are the real PyPI ones)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer.errors import DeployerError
from deployer.remote import runtime as rt

REAL_NAMES = [
    "ncnn-1.0.20261020-cp311-cp311-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl",
    "ncnn-1.0.20261020-cp311-cp311-manylinux_2_31_armv7l.whl",
    "ncnn-1.0.20261020-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "ncnn-1.0.20240410-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
    "ncnn-1.0.20261020-cp39-cp39-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl",
]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    for name in REAL_NAMES:
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "notes.txt").write_text("not a wheel")
    return tmp_path


def plat(arch: str, py: str = "3.11", glibc: str = "2.36") -> rt.WheelPlatform:
    return rt.WheelPlatform(rt.normalize_arch(arch), rt.parse_python(py), rt.parse_glibc(glibc))


def test_manylinux_compatibility_follows_glibc() -> None:
    p = plat("aarch64", glibc="2.28")
    assert p.accepts("manylinux_2_28_aarch64") and p.accepts("manylinux2014_aarch64")
    assert not p.accepts("manylinux_2_31_aarch64") and not p.accepts("manylinux_2_28_x86_64")
    assert p.manylinux_tags()[0] == "manylinux_2_28_aarch64"
    assert "manylinux_2_17_aarch64" in p.manylinux_tags() and "manylinux2014_aarch64" in p.manylinux_tags()
    assert not plat("armv7l", glibc="2.28").accepts("manylinux_2_31_armv7l")


def test_aliases_and_bad_values() -> None:
    assert rt.normalize_arch("arm64") == "aarch64" and rt.normalize_arch("armhf") == "armv7l"
    with pytest.raises(DeployerError, match="riscv64"):
        rt.normalize_arch("riscv64")
    assert rt.parse_python("3.9.2") == (3, 9) and rt.parse_python("cp311") == (3, 11)
    with pytest.raises(DeployerError):
        rt.parse_python("python")


def test_select_newest_fitting_and_host_version(cache: Path) -> None:
    w = rt.select_wheel(plat("arm64"), "1.0.20261020", cache)
    assert w.path.name == REAL_NAMES[0]
    assert w.runtime_name == "ncnn-1.0.20261020-cp311-manylinux_2_28_aarch64"
    # the 2.24 tag in the dual-tagged name fits glibc 2.27; glibc 2.23 (Ubuntu 16.04) only fits manylinux2014
    assert rt.select_wheel(plat("aarch64", glibc="2.27"), "latest", cache).version == "1.0.20261020"
    assert rt.select_wheel(plat("aarch64", glibc="2.23"), "latest", cache).version == "1.0.20240410"
    assert rt.select_wheel(plat("aarch64"), "latest", cache).version == "1.0.20261020"
    assert rt.select_wheel(plat("armhf"), "1.0.20261020", cache).path.name == REAL_NAMES[1]
    assert rt.select_wheel(plat("aarch64", py="3.9"), "1.0.20261020", cache).python_tags == ("cp39",)


def test_missing_wheel_names_the_fetch_command(cache: Path) -> None:
    with pytest.raises(DeployerError) as err:
        rt.select_wheel(plat("armv7l", py="3.9", glibc="2.31"), "1.0.20261020", cache)
    msg = str(err.value)
    assert "no cached ncnn 1.0.20261020 for armv7l / Python 3.9 / glibc 2.31" in msg
    assert "deployer runtime fetch --arch armv7l --python 3.9 --glibc 2.31 --version 1.0.20261020" in msg
    # armv7l wheels need glibc 2.31: a Debian 10 board (2.28) has none
    with pytest.raises(DeployerError, match="glibc 2.28"):
        rt.select_wheel(plat("armv7l", glibc="2.28"), "latest", cache)


def test_platform_from_probe_facts() -> None:
    p = rt.platform_from_facts({"arch": "armhf", "python_version": "3.11.2", "glibc": "2.36"})
    assert p == rt.WheelPlatform("armv7l", (3, 11), (2, 36))
    with pytest.raises(DeployerError, match="pi3: probe found no glibc"):
        rt.platform_from_facts({"arch": "aarch64", "python_version": "3.11.2"}, "pi3")


def test_fetch_uses_pip_download_once(cache: Path) -> None:
    calls = []

    def fake_pip(argv, **kw):  # stands in for the network only; the argv is what we check
        calls.append(argv)
        dest = Path(argv[argv.index("--dest") + 1])
        (dest / "ncnn-1.0.20261020-cp312-cp312-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl").write_bytes(b"x")
        return subprocess.CompletedProcess(argv, 0, "", "")

    p = plat("aarch64", py="3.12")
    w = rt.fetch_wheel(p, "1.0.20261020", cache, run=fake_pip)
    assert w.python_tags == ("cp312",)
    argv = calls[0]
    assert argv[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary=:all:" in argv
    assert argv[argv.index("--python-version") + 1] == "3.12" and argv[-1] == "ncnn==1.0.20261020"
    assert "manylinux_2_28_aarch64" in argv and "manylinux_2_36_aarch64" in argv
    assert rt.fetch_wheel(p, "1.0.20261020", cache, run=fake_pip) == w  # cached: no second download
    assert len(calls) == 1


def test_fetch_failure_is_one_line(cache: Path) -> None:
    def failing(argv, **kw):
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution found for ncnn==9\n")

    with pytest.raises(DeployerError, match="No matching distribution found for ncnn==9"):
        rt.fetch_wheel(plat("aarch64"), "9", cache, run=failing)



def test_a_damaged_cached_wheel_is_refused_before_upload(tmp_path: Path) -> None:
    """A truncated cached wheel was uploaded, left on the board, and failed there as 'File is not a zip
    file' (exit 3, blamed on the board)."""
    import zipfile
    from types import SimpleNamespace

    path = tmp_path / REAL_NAMES[0]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ncnn/__init__.py", "x" * 1000)
    wheel = rt.Wheel.parse(path)
    wheel.check_intact()
    uploads = []
    conn = SimpleNamespace(run=lambda *a, **k: SimpleNamespace(rc=0, stdout="", stderr=""))
    for data in (path.read_bytes()[:300], b"garbage"):
        path.write_bytes(data)
        with pytest.raises(DeployerError, match="is damaged") as err:
            rt.ensure_runtime(conn, wheel, runtime_dir=".deployer", python="python3", board="b",
                              upload=lambda *a, **k: uploads.append(a))
        assert "runtime fetch" in err.value.hint
    assert uploads == []
