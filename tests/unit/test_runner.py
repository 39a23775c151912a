"""The board-side runner, exercised on the host with the stock x86 ncnn wheel.

The runner is a real subprocess here (as on a board): its stdout is parsed line by line.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.remote import runner
from tests.fixtures.runner import host_output, tiny_models  # noqa: F401  (fixture)

RUNNER = Path(runner.__file__)


def run_runner(*args: str, timeout: float = 60) -> tuple[int, list[dict], str]:
    if "--threads" not in args:
        args = (*args, "--threads", "1")
    proc = subprocess.run([sys.executable, "-u", str(RUNNER), *args], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, [json.loads(ln) for ln in proc.stdout.splitlines()], proc.stderr


def model_args(m, int8: bool = True) -> list[str]:
    return ["--param", str(m.int8_param if int8 else m.fp32_param), "--bin", str(m.int8_bin if int8 else m.fp32_bin)]


def decode(line: dict) -> list[float]:
    raw = base64.b64decode(line["data"])
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_python37_syntax_and_stdlib_only() -> None:
    src = RUNNER.read_text()
    tree = ast.parse(src, feature_version=(3, 7))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party == {"ncnn"}, third_party
    assert "numpy" not in imported


def test_line_protocol_first_board_last_stats(tiny_models) -> None:
    rc, lines, err = run_runner(*model_args(tiny_models), "--iterations", "7", "--warmup", "2")
    assert rc == 0, err
    assert [ln["type"] for ln in lines] == ["board"] + ["iter"] * 7 + ["stats"]
    board, stats = lines[0], lines[-1]
    facts = board["facts"]
    import ncnn

    assert facts["ncnn_version"] == ncnn.__version__
    assert facts["machine"] == os.uname().machine
    assert facts["cores"] == os.cpu_count()
    assert "x86_avx2" in facts["cpu_features"]
    assert board["options"]["threads"] == 1 and board["options"]["fp16"] is False
    assert [ln["i"] for ln in lines[1:-1]] == list(range(7))
    samples = [ln["ms"] for ln in lines[1:-1]]
    assert stats["samples_ms"] == samples and stats["count"] == 7 and stats["partial"] is False
    assert stats["min_ms"] == min(samples) and stats["max_ms"] == max(samples)
    assert stats["shape"] == [32, 32, 3]  # read from the Input layer when --shape is omitted
    assert stats["input_blob"] == "in0" and stats["output_blob"] == "out0"
    assert stats["peak_rss_kb"] > 10_000  # python + ncnn: tens of MB


@pytest.mark.parametrize("int8", [True, False])
def test_output_equals_host_ncnn(tiny_models, int8: bool) -> None:
    rc, lines, err = run_runner(*model_args(tiny_models, int8), "--iterations", "1", "--warmup", "0",
                                "--return-output", "--int8", str(int(int8)), "--seed", "5")
    assert rc == 0, err
    out = next(ln for ln in lines if ln["type"] == "output")
    values = runner.make_input_values(32 * 32 * 3, "random", 5)
    param, bin_ = (tiny_models.int8_param, tiny_models.int8_bin) if int8 else (tiny_models.fp32_param, tiny_models.fp32_bin)
    shape, expected = host_output(param, bin_, values, [32, 32, 3], int8=int8)
    assert out["shape"] == list(shape) == [10]
    assert decode(out) == pytest.approx(expected, abs=0, rel=0)  # same wheel, same input: bit-identical


def test_threads_default_is_ncnn_default(tiny_models) -> None:
    import ncnn

    rc, lines, err = run_runner(*model_args(tiny_models), "--iterations", "1", "--threads", "0")
    assert rc == 0, err
    assert lines[0]["options"]["threads"] == ncnn.get_physical_big_cpu_count()


def test_int8_model_really_runs_int8(tiny_models) -> None:
    """With int8 on, the int8 model differs from the fp32 model (quantization error) but stays close."""
    outs = []
    for int8 in (True, False):
        rc, lines, err = run_runner(*model_args(tiny_models, int8), "--iterations", "1", "--return-output")
        assert rc == 0, err
        outs.append(decode(next(ln for ln in lines if ln["type"] == "output")))
    diff = max(abs(a - b) for a, b in zip(*outs))
    assert 0 < diff < 0.1


def test_input_file_and_constant_fill_agree(tiny_models, tmp_path: Path) -> None:
    raw = tmp_path / "x.f32"
    raw.write_bytes(struct.pack("<3072f", *([0.25] * 3072)))
    rc1, a, _ = run_runner(*model_args(tiny_models), "--iterations", "1", "--return-output", "--input-file", str(raw))
    rc2, b, _ = run_runner(*model_args(tiny_models), "--iterations", "1", "--return-output", "--fill", "0.25")
    assert rc1 == rc2 == 0
    assert a[0]["options"]["fill"] == "file"
    assert decode(a[-2]) == decode(b[-2])


def test_bad_inputs_give_one_error_line(tiny_models, tmp_path: Path) -> None:
    short = tmp_path / "short.f32"
    short.write_bytes(b"\0" * 12)
    cases = [
        (["--param", str(tmp_path / "nope.param"), "--bin", str(tiny_models.int8_bin)], "nope.param: no such file"),
        ([*model_args(tiny_models), "--input-blob", "data"], "input blob 'data' is not an input"),
        ([*model_args(tiny_models), "--output-blob", "prob"], "output blob 'prob' is not a blob"),
        ([*model_args(tiny_models), "--input-file", str(short)], "short.f32 has 12 bytes"),
        ([*model_args(tiny_models), "--shape", "0,3"], "positive integers"),
    ]
    for args, needle in cases:
        rc, lines, err = run_runner(*args)
        assert rc == 2, (args, err)
        assert lines[-1]["type"] == "error" and needle in lines[-1]["error"], lines[-1]
        assert "Traceback" not in err


def _slow_args(tiny_models) -> list[str]:
    # a big input makes each iteration take milliseconds even natively
    return [*model_args(tiny_models), "--shape", "384,384,3", "--warmup", "1", "--threads", "1"]


def test_lines_arrive_while_running(tiny_models) -> None:
    proc = subprocess.Popen([sys.executable, "-u", str(RUNNER), *_slow_args(tiny_models), "--iterations", "30"],
                            stdout=subprocess.PIPE, text=True)
    arrivals = []
    for line in proc.stdout:
        arrivals.append((time.perf_counter(), json.loads(line)))
    assert proc.wait(timeout=60) == 0
    iters = [(t, ln) for t, ln in arrivals if ln["type"] == "iter"]
    assert len(iters) == 30
    compute_s = sum(ln["ms"] for _, ln in iters[1:]) / 1000
    spread = iters[-1][0] - iters[0][0]
    # the first line was not held back until the end: it arrived at least half the compute time earlier
    assert spread >= 0.5 * compute_s > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_gives_partial_stats_and_exits(tiny_models, sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-u", str(RUNNER), *_slow_args(tiny_models), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if sum(ln["type"] == "iter" for ln in seen) == 3:
            break
    t0 = time.perf_counter()
    proc.send_signal(sig)
    rest = [json.loads(ln) for ln in proc.stdout]
    rc = proc.wait(timeout=20)
    assert time.perf_counter() - t0 < 10
    assert rc == 128 + sig
    final = rest[-1]
    assert final["type"] == "stats" and final["partial"] is True and final["signal"] == sig
    assert final["count"] >= 3 and len(final["samples_ms"]) == final["count"]
    assert "Traceback" not in proc.stderr.read()


def test_closed_stdout_ends_runner_quietly(tiny_models) -> None:
    proc = subprocess.Popen([sys.executable, "-u", str(RUNNER), *_slow_args(tiny_models), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.readline()
    proc.stdout.close()
    rc = proc.wait(timeout=20)
    assert rc == 141
    assert "Traceback" not in proc.stderr.read()


def test_duration_mode_runs_for_about_that_long(tiny_models) -> None:
    rc, lines, err = run_runner(*_slow_args(tiny_models), "--duration", "0.5")
    assert rc == 0, err
    stats = lines[-1]
    assert stats["count"] >= 1 and 0.5 <= stats["wall_s"] < 0.5 + 2 * stats["max_ms"] / 1000 + 0.2


def test_make_input_values_deterministic() -> None:
    a = runner.make_input_values(100, "random", 3)
    assert a == runner.make_input_values(100, "random", 3)
    assert a != runner.make_input_values(100, "random", 4)
    assert all(-1 <= v < 1 for v in a)
    assert runner.make_input_values(3, "0.5", 0) == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        runner.make_input_values(3, "bogus", 0)


@pytest.mark.parametrize("obj", [
    {"a": [1, 2.5, -0.0, 1e-300, 3.4028234663852886e38, None, True, False], "b": {"c": "x"}},
    {"text": 'quote " backslash \\ newline \n tab \t nul \x00 bell \x07 unicode é → 🙂 \u2028'},
    {"k\"ey": "", "n": 12345678901234567890, "e": []},
])
def test_to_json_round_trips_through_json(obj) -> None:
    text = runner.to_json(obj)
    assert "\n" not in text
    assert json.loads(text) == obj
    assert json.loads(runner.to_json(float("nan"))) != json.loads(runner.to_json(float("nan")))  # NaN
    assert json.loads(runner.to_json([float("inf"), float("-inf")])) == [float("inf"), float("-inf")]


def test_argument_errors_are_error_lines(tiny_models) -> None:
    for args, needle in [
        ([*model_args(tiny_models), "--bogus", "1"], "unknown argument '--bogus'"),
        ([*model_args(tiny_models), "--powersave", "5"], "--powersave must be one of 0, 1, 2"),
        ([*model_args(tiny_models), "--iterations", "x"], "--iterations 'x' is not a valid int"),
        (["--bin", str(tiny_models.int8_bin)], "--param is required"),
    ]:
        rc, lines, err = run_runner(*args)
        assert rc == 2 and lines[-1]["type"] == "error" and needle in lines[-1]["error"], (args, lines)
