"""The static native runner (deployer/native/runner.cpp) on its own, run through qemu-user on the host.

No board and no SSH here: the cross-built executables are run directly (binfmt + QEMU_CPU), which
checks the protocol, the Python-identical input stream, the output bit for bit against the host
ncnn wheel's unpacked reference, per-layer timing, signals, errors, and that the binary needs no
libc at all (it runs in an empty chroot). Board-level checks are in test_native_boards.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from deployer.remote import runner as py_runner
from deployer.remote.session import decode_output
from tests.fixtures.native import QEMU_CPU, native_builds, run_native  # noqa: F401
from tests.fixtures.runner import host_output, tiny_models, wide_models  # noqa: F401

pytestmark = [pytest.mark.slow]


def _lines(stdout: str) -> list[dict]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.strip()]


@pytest.mark.parametrize("arch", ["aarch64", "armv7l"])
def test_protocol_and_output_bit_identical_to_host_wheel(native_builds, tiny_models, arch: str) -> None:
    build = native_builds[arch]
    proc = run_native(build.runner, arch, ["--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin),
                                           "--iterations", "3", "--warmup", "1", "--threads", "1", "--fp16", "0",
                                           "--seed", "21", "--return-output"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _lines(proc.stdout)
    kinds = [ln["type"] for ln in lines]
    assert kinds == ["board", "iter", "iter", "iter", "output", "stats"]
    board = lines[0]
    assert board["protocol"] == py_runner.PROTOCOL
    assert board["facts"]["runtime"] == "native" and board["facts"]["python"] is None
    assert board["facts"]["machine"] == arch and board["facts"]["cpu_features"]["arm_neon"] is True
    assert board["options"]["threads"] == 1 and board["options"]["fp16"] is False
    stats = lines[-1]
    samples = [ln["ms"] for ln in lines if ln["type"] == "iter"]
    assert stats["samples_ms"] == samples and stats["count"] == 3
    assert stats["median_ms"] == py_runner.summarize(samples)["median_ms"]
    for key in ("load_ms", "first_inference_ms", "peak_rss_kb"):
        assert stats[key] > 0, key
    assert stats["shape"] == [32, 32, 3] and stats["partial"] is False
    # the same seeded input as the Python runner, and the same int8 kernels as the host's wheel
    values = py_runner.make_input_values(32 * 32 * 3, "random", 21)
    shape, expected = host_output(tiny_models.int8_param, tiny_models.int8_bin, values, [32, 32, 3])
    out = lines[-2]
    got = decode_output(out)["values"]
    assert out["shape"] == list(shape)
    assert got == expected, f"{arch}: native int8 output differs from the host wheel's"


def test_input_file_and_constant_fill_match_python_runner(native_builds, tiny_models, tmp_path) -> None:
    values = py_runner.make_input_values(32 * 32 * 3, "random", 3)
    raw = tmp_path / "in.raw"
    raw.write_bytes(py_runner.float32_bytes(values))
    base = ["--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "--iterations", "1",
            "--warmup", "0", "--threads", "1", "--fp16", "0", "--return-output"]
    from_file = _lines(run_native(native_builds["aarch64"].runner, "aarch64", base + ["--input-file", str(raw)]).stdout)
    seeded = _lines(run_native(native_builds["aarch64"].runner, "aarch64", base + ["--seed", "3"]).stdout)
    assert from_file[0]["options"]["fill"] == "file"
    assert from_file[-2]["data"] == seeded[-2]["data"]
    const = _lines(run_native(native_builds["aarch64"].runner, "aarch64", base + ["--fill", "0.25"]).stdout)
    _, expected = host_output(tiny_models.int8_param, tiny_models.int8_bin, [0.25] * (32 * 32 * 3), [32, 32, 3])
    assert decode_output(const[-2])["values"] == expected


@pytest.mark.parametrize("arch", ["aarch64", "armv7l"])
def test_static_binary_runs_in_an_empty_root(native_builds, tiny_models, tmp_path, arch: str) -> None:
    """No libc, no loader, no /proc beside it: only the executable and the model (a Python-less,
    glibc-less board at its most extreme)."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(native_builds[arch].runner, root / "runner")
    shutil.copy2(tiny_models.int8_param, root / "m.param")
    shutil.copy2(tiny_models.int8_bin, root / "m.bin")
    assert sorted(p.name for p in root.iterdir()) == ["m.bin", "m.param", "runner"]
    proc = subprocess.run(["chroot", str(root), "/runner", "--param", "/m.param", "--bin", "/m.bin",
                           "--iterations", "2", "--warmup", "0", "--threads", "1"],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"), "QEMU_CPU": QEMU_CPU[arch]})
    assert proc.returncode == 0, f"{arch}: {proc.stderr.strip()[-300:]}"
    lines = _lines(proc.stdout)
    assert lines[-1]["type"] == "stats" and lines[-1]["count"] == 2
    assert lines[0]["facts"]["cpu"] is None  # really nothing there: not even /proc/cpuinfo


def test_layers_flavour_reports_every_layer_by_param_name(native_builds, tiny_models) -> None:
    proc = run_native(native_builds["aarch64"].layers, "aarch64",
                      ["--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "--iterations", "4",
                       "--warmup", "1", "--threads", "1", "--layers"])
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stdout)
    layers = next(ln for ln in lines if ln["type"] == "layers")["layers"]
    rows = [ln.split() for ln in tiny_models.int8_param.read_text().splitlines()[2:] if ln.strip()]
    computed = [r[1] for r in rows if r[0] != "Input"]  # the Input layer is fed, never forwarded
    assert [entry["name"] for entry in layers] == computed
    assert {entry["type"] for entry in layers} == {r[0] for r in rows if r[0] != "Input"}
    assert all(len(entry["ms"]) == 4 for entry in layers)  # timed iterations only, not the warm-up
    from deployer.native.layers import report

    rep = report(next(ln for ln in lines if ln["type"] == "layers"), lines[-1]["median_ms"])
    assert list(rep["layers"]) == computed
    assert abs(sum(v["share"] for v in rep["layers"].values()) - 1.0) < 1e-9
    assert abs(sum(t["median_ms"] for t in rep["types"].values()) - rep["sum_median_ms"]) < 1e-9


@pytest.mark.parametrize("runtime", ["python", "native"])
def test_an_inference_extracts_every_output_unless_one_is_named(native_builds, mtcnn_onet, runtime: str) -> None:
    """MTCNN ONet has three heads (out0 face prob, out1 box, out2 landmarks). One timed inference
    extracts all three, as ncnn's benchncnn does, so the per-layer run times every layer; the
    returned tensor stays the last output; --output-blob times the path to that one blob only."""
    import sys

    graph = [ln.split() for ln in mtcnn_onet.param.read_text().splitlines()[2:] if ln.strip()]
    computed = [r[1] for r in graph if r[0] != "Input"]
    common = ["--param", str(mtcnn_onet.param), "--bin", str(mtcnn_onet.bin), "--shape", "48,48,3", "--iterations",
              "2", "--warmup", "0", "--threads", "1", "--fp16", "0", "--seed", "4", "--return-output"]

    def run(*extra: str) -> list[dict]:
        if runtime == "python":
            proc = subprocess.run([sys.executable, "-u", py_runner.__file__, *common, *extra], capture_output=True,
                                  text=True, timeout=120)
        else:
            proc = run_native(native_builds["aarch64"].layers, "aarch64", [*common, "--layers", *extra])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return _lines(proc.stdout)

    lines = run()
    stats = lines[-1]
    assert stats["extracted"] == ["out0", "out1", "out2"] and stats["output_blob"] == "out2"
    out = next(ln for ln in lines if ln["type"] == "output")
    assert out["blob"] == "out2" and out["shape"] == [10]
    one = run("--output-blob", "out1")
    assert one[-1]["extracted"] == ["out1"] and next(ln for ln in one if ln["type"] == "output")["shape"] == [4]
    if runtime == "native":
        timed = [e["name"] for e in next(ln for ln in lines if ln["type"] == "layers")["layers"]]
        assert sorted(timed) == sorted(computed)           # every head's layers ran and were timed
        only = {e["name"] for e in next(ln for ln in one if ln["type"] == "layers")["layers"]}
        assert only < set(computed) and "linear_6" in only and "linear_5" not in only and "linear_7" not in only


def test_layers_flag_needs_the_benchmark_flavour(native_builds, tiny_models) -> None:
    proc = run_native(native_builds["aarch64"].runner, "aarch64",
                      ["--param", str(tiny_models.int8_param), "--bin", str(tiny_models.int8_bin), "--layers"])
    assert proc.returncode == 2
    err = _lines(proc.stdout)[-1]
    assert err["type"] == "error" and "deployer runtime build" in err["error"]


def test_sigint_ends_with_partial_stats(native_builds, wide_models) -> None:
    env = dict(os.environ, QEMU_CPU=QEMU_CPU["aarch64"])
    proc = subprocess.Popen([str(native_builds["aarch64"].runner), "--param", str(wide_models.int8_param),
                             "--bin", str(wide_models.int8_bin), "--duration", "600", "--threads", "1",
                             "--warmup", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = []
        assert proc.stdout is not None
        while len([s for s in seen if s["type"] == "iter"]) < 2:
            line = proc.stdout.readline()
            assert line, "runner ended early"
            seen.append(json.loads(line))
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT
    stats = _lines(rest)[-1]
    assert stats["type"] == "stats" and stats["partial"] is True and stats["signal"] == signal.SIGINT
    assert stats["count"] >= 2


@pytest.mark.parametrize("argv, needle", [
    (["--param", "/nonexistent.param", "--bin", "/nonexistent.bin"], "--param /nonexistent.param: no such file"),
    (["--param", "x", "--bin", "y", "--threads", "many"], "--threads 'many' is not a valid int"),
    (["--param", "x", "--bin", "y", "--fp16", "2"], "--fp16 must be one of 0, 1"),
    (["--param", "x"], "--bin is required"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_bad_arguments_are_one_error_line(native_builds, argv: list[str], needle: str) -> None:
    proc = run_native(native_builds["aarch64"].runner, "aarch64", argv)
    assert proc.returncode == 2
    lines = _lines(proc.stdout)
    assert lines[-1]["type"] == "error" and needle in lines[-1]["error"], lines
    assert proc.stderr == ""


def test_python_random_stream_is_reproduced_exactly(native_builds, tmp_path) -> None:
    """An identity network (Input -> Noop) returns its input: the native runner's seeded values must be
    Python's random.Random(seed) stream, float32-rounded, value for value (also for big seeds)."""
    param = tmp_path / "id.param"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0 0=7 1=5 2=3\nNoop noop 1 1 in0 out0\n")
    bin_ = tmp_path / "id.bin"
    bin_.write_bytes(b"")
    for seed in (0, 1, 12345, 2**40 + 3):
        proc = run_native(native_builds["armv7l"].runner, "armv7l",
                          ["--param", str(param), "--bin", str(bin_), "--iterations", "1", "--warmup", "0",
                           "--seed", str(seed), "--return-output", "--packing", "0"])
        assert proc.returncode == 0, proc.stdout
        out = decode_output(_lines(proc.stdout)[-2])
        want = py_runner.make_input_values(7 * 5 * 3, "random", seed)
        import struct

        want32 = list(struct.unpack("<105f", py_runner.float32_bytes(want)))
        assert out["values"] == want32, seed
