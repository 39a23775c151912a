"""Probe's pure half: raw board facts -> BoardFacts (arch detection, CPU names, big.LITTLE clusters)."""

from __future__ import annotations

from deployer.remote.probe import core_name, cpu_clusters, facts_from_raw, userland_arch


def raw(**over):
    base = {
        "machine": "aarch64", "kernel_machine": "aarch64", "pointer_bits": 64, "multiarch": "aarch64-linux-gnu",
        "dpkg_arch": None, "python": "3.11.2", "python_path": "/usr/bin/python3",
        "soabi": "cpython-311-aarch64-linux-gnu", "python_platform": "linux-aarch64", "hostname": "pi",
        "glibc": "glibc 2.36", "cpuinfo": [], "cpuinfo_extra": [], "max_freq_khz": {}, "governors": {},
        "os_cpu_count": 4, "mem_total": 1, "mem_available": 1, "disk_free": 1, "disk_path": "/", "dt_model": None,
        "temperature_c": None, "os": None, "runtime_dir": "/home/pi/.deployer", "runtimes": {}, "models": {},
        "ncnn": None,
    }
    base.update(over)
    return base


def a72(n: int) -> dict:
    return {"processor": str(n), "cpu implementer": "0x41", "cpu part": "0xd08", "cpu architecture": "8"}


def test_32bit_pi_os_on_a_64bit_kernel_is_armhf() -> None:
    # Pi 3/4 with 32-bit Raspberry Pi OS: uname and platform.machine() say aarch64
    f = facts_from_raw("pi3", raw(machine="aarch64", pointer_bits=32, multiarch="arm-linux-gnueabihf"))
    assert (f.arch, f.wheel_arch) == ("armhf", "armv7l")
    # without MULTIARCH (non-Debian python) the pointer size still tells
    assert userland_arch(None, None, "aarch64", 32) == "armhf"
    assert userland_arch(None, "armhf", "aarch64", 32) == "armhf"
    assert userland_arch(None, None, "aarch64", 64) == "arm64"
    assert userland_arch(None, None, "armv7l", 32) == "armhf"


def test_pi_zero_armv6_gets_armv6_wheels() -> None:
    f = facts_from_raw("zero", raw(machine="armv6l", pointer_bits=32, multiarch="arm-linux-gnueabihf"))
    assert (f.arch, f.wheel_arch) == ("armhf", "armv6l")


def test_pi4_cpuinfo_names_the_core_and_glibc_gives_manylinux_tags() -> None:
    f = facts_from_raw("pi4", raw(cpuinfo=[a72(i) for i in range(4)],
                                  cpuinfo_extra=[{"hardware": "BCM2835", "model": "Raspberry Pi 4 Model B Rev 1.4"}],
                                  max_freq_khz={str(i): 1800000 for i in range(4)}))
    assert f.cpu_model == "Cortex-A72" and f.cores == 4 and f.glibc == "2.36"
    assert f.clusters[0].cpus == [0, 1, 2, 3] and f.clusters[0].max_freq_mhz == 1800.0
    assert f.hardware == "Raspberry Pi 4 Model B Rev 1.4"
    tags = f.manylinux_tags
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and tags[-1] == "linux_aarch64"
    assert "manylinux_2_37_aarch64" not in tags


def test_big_little_clusters_fastest_first() -> None:
    cpus = [{"processor": str(i), "cpu implementer": "0x41", "cpu part": "0xd05"} for i in range(4)]
    cpus += [{"processor": str(i), "cpu implementer": "0x41", "cpu part": "0xd0b"} for i in range(4, 8)]
    freq = {str(i): 1800000 for i in range(4)} | {str(i): 2400000 for i in range(4, 8)}
    cl = cpu_clusters(cpus, freq)
    assert [(c.core, c.cpus, c.max_freq_mhz) for c in cl] == [
        ("Cortex-A76", [4, 5, 6, 7], 2400.0), ("Cortex-A55", [0, 1, 2, 3], 1800.0)]
    f = facts_from_raw("rk3588", raw(cpuinfo=cpus, max_freq_khz=freq))
    assert f.cpu_model == "4x Cortex-A76 @2400 MHz + 4x Cortex-A55 @1800 MHz"


def test_core_names_for_jetson_and_x86_and_unknown_parts() -> None:
    assert core_name({"cpu implementer": "0x41", "cpu part": "0xd07"}) == "Cortex-A57"
    assert core_name({"cpu implementer": "0x4e", "cpu part": "0x004"}) == "Carmel"
    assert core_name({"model name": "Intel(R) Xeon(R)"}) == "Intel(R) Xeon(R)"
    assert core_name({"cpu implementer": "0x41", "cpu part": "0xfff"}) == "ARM part 0x41:0xfff"
