"""deployer.native without boards or cross builds: runtime choice, the sh probe, per-layer reports,
the sdist extraction and the build keys."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from deployer.errors import DeployerError
from deployer.native import build as nb
from deployer.native import layers, select, shprobe, source


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DEPLOYER_CACHE", str(tmp_path))
    return tmp_path


def _fake_build(cache: Path, arch: str, *, layers_flavour: bool, runner_source: str | None = None,
                key: str = "abc") -> None:
    folder = cache / "native" / "runtimes" / "1.0.1" / arch / key
    folder.mkdir(parents=True)
    (folder / nb.RUNNER_NAME).write_bytes(b"\x7fELF")
    if layers_flavour:
        (folder / nb.LAYERS_NAME).write_bytes(b"\x7fELF")
    import json

    (folder / "manifest.json").write_text(json.dumps({"version": "1.0.1", "arch": arch, "key": key, "size": 4,
                                                      "layers_size": 4 if layers_flavour else None,
                                                      "runner_source": runner_source or nb.runner_source_sha()}))


def test_a_build_of_another_runner_source_is_not_used(cache) -> None:
    """A build linked from an older runner.cpp was taken when none of the current source existed:
    its flags differ (it refused `--lease` with a UsageError on the board). Only builds of this
    source count; auto then takes the wheel until `runtime build` links the runner again."""
    _fake_build(cache, "aarch64", layers_flavour=True, runner_source="0" * 16, key="old")
    assert nb.find_build("aarch64") is None and nb.find_build("aarch64", layers=True) is None
    board, facts = SimpleNamespace(name="pi", runtime="auto"), SimpleNamespace(arch="arm64", python="3.11.2")
    assert select.choose(board, facts, None) == ("python", None)
    _fake_build(cache, "aarch64", layers_flavour=False)
    assert nb.find_build("aarch64").key == "abc"


def test_runtime_choice(cache) -> None:
    board = SimpleNamespace(name="pi", runtime="auto")
    with_py = SimpleNamespace(arch="arm64", python="3.11.2")
    no_py = SimpleNamespace(arch="armhf", python=None)
    # nothing built: auto = the wheel where there is Python; a Python-less board is told what to build
    assert select.choose(board, with_py, None) == ("python", None)
    with pytest.raises(DeployerError) as err:
        select.choose(board, no_py, None)
    assert "no Python" in str(err.value) and "deployer runtime build --arch armv7l" in err.value.hint
    with pytest.raises(DeployerError) as err:
        select.choose(board, with_py, None, layers=True)
    assert "--benchmark" in err.value.hint
    # built: auto = native; an explicit python still gets the wheel; layers need the layers flavour
    _fake_build(cache, "aarch64", layers_flavour=False)
    kind, found = select.choose(board, with_py, None)
    assert kind == "native" and found.arch == "aarch64" and found.layers is None
    assert select.choose(board, with_py, "python") == ("python", None)
    assert select.choose(SimpleNamespace(name="pi", runtime="python"), with_py, None) == ("python", None)
    with pytest.raises(DeployerError):
        select.choose(board, with_py, None, layers=True)
    with pytest.raises(DeployerError) as err:
        select.choose(board, with_py, "python", layers=True)
    assert "--layers needs the native runtime" in str(err.value)
    with pytest.raises(DeployerError) as err:
        select.choose(board, with_py, "fast")
    assert "'fast' is not one of auto, native, python" in str(err.value)
    with pytest.raises(DeployerError) as err:
        select.choose(board, SimpleNamespace(arch="amd64", python=None), "native")
    assert "no native runtime for its userland (amd64)" in str(err.value)


def test_native_argv_keeps_the_runner_flags() -> None:
    py = ["env", "PYTHONPATH=rt", "python3", "-u", ".deployer/bin/runner.py", "--param", "m.param", "--seed", "3"]
    assert select.native_argv(".deployer/bin/x", py, layers=True) == [".deployer/bin/x", "--param", "m.param",
                                                                       "--seed", "3", "--layers"]


def test_targets_runtime_field(tmp_path) -> None:
    from deployer.targets import load_targets

    f = tmp_path / "t.yaml"
    f.write_text("boards:\n  a: {host: 10.0.0.1, runtime: native}\n  b: {host: 10.0.0.2}\n")
    inv = load_targets([f])
    assert inv.board("a").runtime == "native" and inv.board("b").runtime == "auto"
    f.write_text("boards:\n  a: {host: 10.0.0.1, runtime: rust}\n")
    with pytest.raises(DeployerError) as err:
        load_targets([f])
    assert "runtime" in str(err.value) and "t.yaml" in str(err.value) and "\n" not in str(err.value)


def test_sh_probe_on_this_machine_matches_python_facts() -> None:
    """probe.sh run by the host's own sh gives the facts the Python probe computes here."""
    from deployer.remote.probe import facts_from_raw

    out = subprocess.run(["sh", "-c", shprobe.script(), "sh", ".deployer-test-probe"], capture_output=True,
                         text=True, check=True).stdout
    facts = facts_from_raw("host", shprobe.parse(out))
    import os
    import platform

    assert facts.machine == platform.machine() and facts.pointer_bits == 64
    assert facts.cores == os.cpu_count() and facts.python is None and facts.hostname == platform.node()
    assert facts.glibc == platform.libc_ver()[1]
    assert facts.mem_total > 0 and facts.disk_free > 0
    # the board's Python probe, run here, reads the same files the same way (one parser, file_facts)
    import json
    import sys

    from deployer.remote import board as board_scripts

    py = json.loads(subprocess.run([sys.executable, str(board_scripts.path("probe.py")), ".deployer-test-probe"],
                                   capture_output=True, text=True, check=True).stdout)
    sh = shprobe.parse(out)
    for key in ("cpuinfo", "cpuinfo_extra", "max_freq_khz", "governors", "mem_total", "dt_model", "os"):
        assert sh[key] == py[key], key
    assert py["cpuinfo"] and py["os"]
    with pytest.raises(ValueError):
        shprobe.parse(out.split("==deployer:end")[0])  # a cut-off answer is not a probe


def test_sh_probe_parses_models_and_runtimes() -> None:
    text = ("==deployer-probe 1\n==deployer:machine\narmv7l\n==deployer:elf\n 127  69  76  70   1   1   1   0   0   0   0"
            "   0   0   0   0   0\n   3   0  40   0\n==deployer:runtime_dir\n/home/pi/.deployer\n==deployer:file /proc/cpuinfo\nprocessor\t: 0\n"
            "CPU part\t: 0xc0f\nCPU implementer\t: 0x41\n\nHardware\t: BCM2711\n==deployer:runtime ncnn-x\nabc\n"
            "==deployer:models\n" + "a" * 64 + "  ./m.bin\n==deployer:model_sizes\n  12 ./m.bin\n==deployer:end\n")
    raw = shprobe.parse(text)
    assert raw["pointer_bits"] == 32 and raw["elf_machine"] == "arm" and raw["runtimes"] == {"ncnn-x": "abc"}
    assert raw["models"] == {"m.bin": {"sha256": "a" * 64, "size": 12}}
    from deployer.remote.probe import facts_from_raw

    facts = facts_from_raw("b", raw)
    assert facts.arch == "armhf" and facts.cpu_model == "Cortex-A15"


def test_layers_report_and_fp32_comparison() -> None:
    int8 = layers.report({"layers": [{"index": 0, "name": "conv1", "type": "Convolution", "ms": [2.0, 4.0, 3.0]},
                                     {"index": 1, "name": "relu1", "type": "ReLU", "ms": [1.0, 1.0, 1.0]},
                                     {"index": 2, "name": "conv2", "type": "Convolution", "ms": [1.0, 1.0, 1.0]}]},
                         5.5)
    assert list(int8["layers"]) == ["conv1", "relu1", "conv2"]
    assert int8["layers"]["conv1"]["median_ms"] == 3.0 and int8["sum_median_ms"] == 5.0
    assert int8["types"]["Convolution"] == {"layers": 2, "median_ms": 4.0, "share": 0.8}
    assert list(int8["types"]) == ["Convolution", "ReLU"] and int8["iterations"] == 3
    fp32 = layers.report({"layers": [{"index": 0, "name": "conv1", "type": "Convolution", "ms": [6.0]},
                                     {"index": 1, "name": "relu1", "type": "ReLU", "ms": [0.5]},
                                     {"index": 2, "name": "conv2", "type": "Convolution", "ms": [0.5]},
                                     {"index": 3, "name": "extra", "type": "Dropout", "ms": [0.1]}]})
    vs = layers.compare(int8, fp32)
    assert vs["layers"]["conv1"]["speedup"] == 2.0 and vs["layers"]["conv2"]["speedup"] == 0.5
    assert vs["only_fp32"] == {"extra": {"type": "Dropout", "fp32_ms": 0.1}}
    assert vs["types"]["Convolution"]["speedup"] == pytest.approx(6.5 / 4.0)


def test_sdist_extraction_rejects_traversal(cache) -> None:
    tarball = source.sdist_path("9.9.9")
    tarball.parent.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("ncnn-9.9.9/CMakeLists.txt", b"project(x)\n"), ("ncnn-9.9.9/../../evil", b"x"),
                           ("/abs-evil", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tarball.write_bytes(buf.getvalue())
    dest = source.extract_sdist("9.9.9")
    assert (dest / "CMakeLists.txt").read_bytes() == b"project(x)\n"
    assert not (cache / "evil").exists() and not (cache / "native" / "evil").exists()
    assert not Path("/abs-evil").exists()
    with pytest.raises(DeployerError) as err:
        source.extract_sdist("9.9.8")
    assert "runtime build --fetch" in err.value.hint and "set-up time" in err.value.hint
    with pytest.raises(DeployerError):
        source.check_version("1.0/../../x")


def test_a_damaged_cached_runner_is_refused_not_shipped(cache) -> None:
    """A truncated cached runner was uploaded over the board's good one and died there (exit 3, 'ended
    without an exit status'); auto quietly took the wheel when the cache held only damaged builds."""
    _fake_build(cache, "aarch64", layers_flavour=True)
    runner = next((cache / "native" / "runtimes").rglob(nb.RUNNER_NAME))
    assert nb.find_build("aarch64") is not None
    for data, why in ((b"\x7fELF\x02", "5 bytes where its manifest says 4"), (b"MZ\x90\x00", "not an ELF executable")):
        runner.write_bytes(data)
        with pytest.raises(DeployerError, match=why) as err:
            select.choose(SimpleNamespace(name="pi", runtime="auto"), SimpleNamespace(arch="arm64", python="3.11"),
                          None)
        assert "damaged" in str(err.value) and err.value.hint == "rebuild it: deployer runtime build --arch aarch64"
    assert nb.find_build("aarch64", strict=False) is None      # what `runtime build` sees: link it again
    manifest = runner.parent / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("[]")                                  # was AttributeError: exit 4
    assert nb.find_build("aarch64") is None
    manifest.write_text(good)
    runner.write_bytes(b"\x7fELF")
    (runner.parent / nb.LAYERS_NAME).write_bytes(b"")
    assert nb.find_build("aarch64") is not None                # the normal flavour is intact
    with pytest.raises(DeployerError, match="runtime build --arch aarch64 --benchmark"):
        nb.find_build("aarch64", layers=True)


def _sdist(path: Path, top: str, version: str) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in ((f"{top}/CMakeLists.txt", b"project(ncnn)\n"),
                           (f"{top}/PKG-INFO", f"Metadata-Version: 2.4\nName: ncnn\nVersion: {version}\n".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_sdist_given_by_hand_must_be_that_ncnn_version(cache, tmp_path) -> None:
    """--sdist cached any file under the version's name: garbage replaced a good tarball, and another
    version's source would have built the board runner from other C++ than the host wheel's."""
    good = source.sdist_path("9.9.9")
    good.parent.mkdir(parents=True)
    good.write_bytes(b"the cached tarball")
    (tmp_path / "junk.tar.gz").write_bytes(b"garbage")
    with pytest.raises(DeployerError, match="junk.tar.gz: not an ncnn source archive"):
        source.use_sdist(tmp_path / "junk.tar.gz", "9.9.9")
    with pytest.raises(DeployerError, match="is ncnn 9.9.8, not 9.9.9"):
        source.use_sdist(_sdist(tmp_path / "old.tar.gz", "ncnn-9.9.8", "9.9.8"), "9.9.9")
    assert good.read_bytes() == b"the cached tarball"
    assert source.use_sdist(_sdist(tmp_path / "new.tar.gz", "ncnn-9.9.9", "9.9.9"), "9.9.9") == good
    assert source.extract_sdist("9.9.9").name == "ncnn-9.9.9"


def test_build_keys_follow_inputs() -> None:
    tc = nb.toolchain("arm64")
    assert tc.arch == "aarch64" and nb.toolchain("armhf").arch == "armv7l"
    with pytest.raises(DeployerError) as err:
        nb.toolchain("x86_64")
    assert "aarch64 (arm64) and armv7l (armhf)" in str(err.value)
    k1 = nb.lib_key("1.0.1", tc, "12.2.0")
    assert k1 == nb.lib_key("1.0.1", tc, "12.2.0")
    assert k1 != nb.lib_key("1.0.2", tc, "12.2.0") != nb.lib_key("1.0.1", tc, "13.1.0")
    assert nb.lib_key("1.0.1", nb.toolchain("armv7l"), "12.2.0") != k1
    assert nb.runtime_key(k1) != k1 and len(nb.runtime_key(k1)) == 16
    assert tc.march_flags() == ["-march=armv8-a"]
    assert "-mfpu=neon" in nb.toolchain("armv7l").march_flags()


def test_an_interrupted_build_step_stops_all_its_processes(tmp_path) -> None:
    """SIGTERM to deployer (timeout(1), a cancelled CI job) during `runtime build` left ninja and the
    compilers building in the background for minutes: the step's whole process group goes down."""
    import os
    import time

    pidfile = tmp_path / "pid"

    def interrupt(what: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nb._run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; echo '[1/9] compiling'; wait"], tmp_path,
                tmp_path / "build.log", dict(os.environ), "step", interrupt)
    stat = Path(f"/proc/{pidfile.read_text().strip()}/stat")
    deadline = time.monotonic() + 5
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_failed_layers_build_leaves_no_temp_folder_in_the_cache(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "platform.h").write_text("// an ncnn layout without the NCNN_BENCHMARK switch\n")
    with pytest.raises(DeployerError, match="NCNN_BENCHMARK"):
        nb.build_layers_library(tmp_path, SimpleNamespace(arch="aarch64"), tmp_path / "build.log")
    assert [p.name for p in tmp_path.iterdir()] == ["src"]
