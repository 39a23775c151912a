"""The runner on emulated ARM boards (real ARM sshd + python + ncnn wheels under qemu-user).

Kept small for emulation (80-170x slower than native): inputs <= 64x64, <= 10 iterations, 1 thread.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from deployer.errors import RemoteError
from deployer.remote import runner
from deployer.remote.session import RunOptions, open_session
from tests.fixtures.sshd import sshd_descendants
from tests.fixtures.runner import host_output, require_cached_wheels, tiny_models, wide_models  # noqa: F401

pytestmark = [pytest.mark.boards, pytest.mark.slow]


@pytest.fixture(autouse=True, scope="module")
def _wheels() -> None:
    require_cached_wheels("aarch64", "armv7l")


def _board(sim_boards, attr: str):
    from deployer.targets import load_targets

    inv = load_targets([sim_boards.targets])
    return inv, inv.board(getattr(sim_boards, attr))


def _runner_procs(conn) -> list[str]:
    """Runner processes on the board (its own pid namespace), by their command lines."""
    res = conn.run(["sh", "-c", "grep -l 'bin/[r]unner[.]py' /proc/[0-9]*/cmdline 2>/dev/null; exit 0"])
    return [ln for ln in res.stdout.splitlines() if ln.strip() and "/self/" not in ln]


@pytest.mark.parametrize("attr, machine", [("pi4", "aarch64"), ("armhf", "armv7l")])
def test_board_output_matches_host_ncnn(sim_boards, tiny_models, attr: str, machine: str) -> None:
    inv, board = _board(sim_boards, attr)
    opts = RunOptions(param=tiny_models.int8_param, bin=tiny_models.int8_bin, iterations=3, warmup=1,
                      threads=1, fp16=False, return_output=True, seed=21)
    conn, session = open_session(board, inventory=inv)
    with conn:
        result = session.run(opts)
    assert result.facts["machine"] == machine
    assert result.facts["cpu_features"].get("arm_neon") is True
    assert result.options["int8"] is True and result.options["fp16"] is False and result.options["threads"] == 1
    assert len(result.samples_ms) == 3 and result.stats["count"] == 3
    values = runner.make_input_values(32 * 32 * 3, "random", 21)
    shape, expected = host_output(tiny_models.int8_param, tiny_models.int8_bin, values, [32, 32, 3])
    got = result.output["values"]
    assert result.output["shape"] == list(shape)
    worst = max(abs(a - b) for a, b in zip(got, expected))
    assert worst <= 1e-6, f"{machine} int8 output differs from the host's by {worst}"
    # and the int8 model's answer is not the fp32 model's (the board really ran int8)
    _, fp32 = host_output(tiny_models.fp32_param, tiny_models.fp32_bin, values, [32, 32, 3], int8=False)
    assert max(abs(a - b) for a, b in zip(got, fp32)) > 1e-4


def test_provisioning_skips_what_is_there(sim_boards, tiny_models) -> None:
    inv, board = _board(sim_boards, "pi4")
    opts = RunOptions(param=tiny_models.fp32_param, bin=tiny_models.fp32_bin, runtime="python")  # the wheel's unpack
    conn, session = open_session(board, inventory=inv)
    with conn:
        session.push(opts)                    # whatever state the board was in
        again = session.push(opts)
    assert not again.runtime.uploaded and not again.runtime.unpacked and again.uploaded == []
    # a fresh session knows from the probe alone (the marker) that the runtime is complete
    conn, session = open_session(board, inventory=inv)
    with conn:
        third = session.push(opts)
        facts = session.probe()
    assert not third.runtime.unpacked and third.uploaded == []
    name = third.runtime.path.rsplit("/", 1)[1]
    assert facts.runtimes[name] is not None and not any(n.startswith(".") for n in facts.runtimes)
    assert "tiny.bin" in facts.models


def test_timing_lines_arrive_during_the_run(sim_boards, wide_models) -> None:
    inv, board = _board(sim_boards, "pi4")
    arrivals: list[tuple[float, dict]] = []
    opts = RunOptions(param=wide_models.int8_param, bin=wide_models.int8_bin, iterations=8, warmup=1,
                      threads=1, fp16=False)
    conn, session = open_session(board, inventory=inv, on_event=lambda e: arrivals.append((time.perf_counter(), e)))
    with conn:
        result = session.run(opts)
    iters = [t for t, e in arrivals if e.get("type") == "iter"]
    stats_at = next(t for t, e in arrivals if e.get("type") == "stats")
    assert len(iters) == 8
    compute_s = sum(result.samples_ms[1:]) / 1000
    assert compute_s > 0.2, "model too fast to tell streaming from buffering"
    # the first timing line reached the host while the board was still computing the other 7
    assert iters[-1] - iters[0] >= 0.5 * compute_s
    assert stats_at - iters[0] >= 0.5 * compute_s


def test_ctrl_c_stops_the_runner_on_the_board(sim_boards, wide_models) -> None:
    inv, board = _board(sim_boards, "pi4")

    def interrupt(event: dict) -> None:
        if event.get("type") == "iter" and event["i"] == 1:
            raise KeyboardInterrupt

    opts = RunOptions(param=wide_models.int8_param, bin=wide_models.int8_bin, duration=120, threads=1, fp16=False,
                      runtime="python")  # runner.py's process is what _runner_procs looks for
    conn, session = open_session(board, inventory=inv, on_event=interrupt)
    with conn:
        with pytest.raises(KeyboardInterrupt):
            session.run(opts)
        deadline = time.monotonic() + 20
        procs = _runner_procs(conn)
        while procs and time.monotonic() < deadline:
            time.sleep(0.5)
            procs = _runner_procs(conn)
    assert procs == []


def _kill_board_sessions(state_dir: Path, name: str) -> int:
    """SIGKILL the sshd processes below the board's listener (its PID 1): every live connection drops,
    the listener and the runner itself are left alone."""
    from deployer.sim.state import load_state

    killed = 0
    for pid in sshd_descendants(load_state(state_dir).board(name).init.pid):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def test_board_dropping_the_connection_is_a_clear_error(sim_boards, wide_models) -> None:
    inv, board = _board(sim_boards, "armhf")

    def cut(event: dict) -> None:
        if event.get("type") == "iter" and event["i"] == 1:
            assert _kill_board_sessions(sim_boards.state_dir, board.name) > 0

    opts = RunOptions(param=wide_models.int8_param, bin=wide_models.int8_bin, duration=20, threads=1, fp16=False)
    conn, session = open_session(board, inventory=inv, on_event=cut)
    t0 = time.monotonic()
    with conn, pytest.raises(RemoteError) as err:
        session.run(opts)
    assert time.monotonic() - t0 < 60
    assert err.value.exit_code == 3
    msg = str(err.value)
    assert board.name in msg and "connection lost" in msg and "\n" not in msg
    m = re.search(r"after (\d+) timed iteration", msg)
    assert m and int(m.group(1)) >= 2  # lines already received are counted


def test_depthwise_int8_model_is_bit_identical_on_arm64(sim_boards, mobilenet_v2, calib_photos, tmp_path) -> None:
    """MobileNetV2 int8 (depthwise + requantize chains) through our ncnn2table/ncnn2int8, run on the
    emulated Cortex-A72: the board's output must equal the host reference bit for bit. The host runs
    unpacked on x86 because the packed x86 depthwise int8 kernel approximates (cosine ~0.993)."""
    import subprocess
    import sys

    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(f) for f in calib_photos.files[:4]) + "\n")
    table, param, bin_ = tmp_path / "m.table", tmp_path / "m-int8.param", tmp_path / "m-int8.bin"
    cli = [sys.executable, "-m", "deployer.cli"]
    subprocess.run([*cli, "ncnn2table", str(mobilenet_v2.param), str(mobilenet_v2.bin), str(listing), str(table),
                    "mean=[123.675,116.28,103.53]", "norm=[0.017125,0.017507,0.017429]", "shape=[64,64]",
                    "pixel=RGB", "thread=1", "method=kl"], check=True, capture_output=True)
    subprocess.run([*cli, "ncnn2int8", str(mobilenet_v2.param), str(mobilenet_v2.bin), str(param), str(bin_),
                    str(table)], check=True, capture_output=True)
    _assert_bit_identical(sim_boards, "pi4", param, bin_)


def _assert_bit_identical(sim_boards, attr: str, param: Path, bin_: Path) -> None:
    """One 64x64 inference on the board; its output must equal the host reference bit for bit."""
    from deployer.remote.session import compare_outputs, host_reference

    inv, board = _board(sim_boards, attr)
    opts = RunOptions(param=param, bin=bin_, shape="64,64,3", iterations=1, warmup=0, threads=1, fp16=False,
                      return_output=True, seed=5)
    conn, session = open_session(board, inventory=inv)
    with conn:
        result = session.run(opts)
    diff = compare_outputs(result.output, host_reference(result, opts))
    assert diff["identical"], diff


@pytest.mark.parametrize("attr", ["pi4", "armhf"])
def test_shifted_int8_model_is_bit_identical_on_arm(sim_boards, mobilenet_v2, calib_photos, tmp_path, attr) -> None:
    """MobileNetV2 with the activation shift (deployer.quant.zeroshift): shifted Clip bounds and
    int8 pad codes (-127) in the depthwise convs. The board's ncnn must pad with the code exactly
    as the host does: its output equals the host reference bit for bit."""
    from deployer.inputs.spec import InputSpec
    from deployer.ncnn.model import NcnnModel
    from deployer.quant import zeroshift
    from deployer.quant.calibration import Calibrator, InputSet
    from deployer.quant.int8 import quantize_model
    from deployer.quant.weights import load_model

    spec = InputSpec(shape=(64, 64), pixel="RGB", mean=[123.675, 116.28, 103.53], norm=[0.017125, 0.017507, 0.017429])
    table = Calibrator(load_model(mobilenet_v2.param, mobilenet_v2.bin), [spec],
                       InputSet.from_lists([calib_photos.files[:4]]), threads=1).table("maxabs")
    model = NcnnModel.load(mobilenet_v2.param, mobilenet_v2.bin)
    shifted, table_s, pad_codes, _ = zeroshift.apply(model, table, zeroshift.pairs(model), frozenset())
    q, _ = quantize_model(shifted, table_s, pad_codes=pad_codes)
    param, bin_ = tmp_path / "shifted-int8.param", tmp_path / "shifted-int8.bin"
    q.save(param, bin_)
    assert sum(1 for lay in q.graph.layers if lay.get(18, 0.0) == -127.0) == 17
    _assert_bit_identical(sim_boards, attr, param, bin_)
