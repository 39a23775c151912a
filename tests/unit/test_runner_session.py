"""Host-side run logic that needs no board: runner command lines, option precedence, stream parsing,
results files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deployer.cli.boards import sparkline
from deployer.errors import DeployerError, RemoteError
from deployer.remote import runner
from deployer.remote.session import RunOptions, RunResult, Session, _check_local, push_boards, runner_argv, save_result
from deployer.targets import Board, NcnnOptions


def _opts(tmp_path: Path, **kw) -> RunOptions:
    for name in ("m.param", "m.bin"):
        (tmp_path / name).write_text("x")
    return RunOptions(param=tmp_path / "m.param", bin=tmp_path / "m.bin", **kw)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_flags_override_board_defaults_which_override_ncnn(tmp_path: Path) -> None:
    remote = {"param": "d/models/m.param", "bin": "d/models/m.bin"}
    board = Board(name="pi", host="h", ncnn=NcnnOptions(threads=4, powersave=2, fp16=False))
    argv = runner_argv("python3", "d/bin/runner.py", _opts(tmp_path), board, remote, "d/runtime/ncnn-x")
    assert argv[:5] == ["env", "PYTHONPATH=d/runtime/ncnn-x", "python3", "-u", "d/bin/runner.py"]
    assert (_flag(argv, "--threads"), _flag(argv, "--powersave"), _flag(argv, "--fp16")) == ("4", "2", "0")
    argv = runner_argv("python3", "r.py", _opts(tmp_path, threads=1, powersave=0, fp16=True), board, remote, "p")
    assert (_flag(argv, "--threads"), _flag(argv, "--powersave"), _flag(argv, "--fp16")) == ("1", "0", "1")
    plain = Board(name="pi", host="h")  # nothing set: ncnn's own defaults (0 = auto threads, fp16 on)
    argv = runner_argv("python3", "r.py", _opts(tmp_path), plain, remote, "p")
    assert (_flag(argv, "--threads"), _flag(argv, "--fp16"), _flag(argv, "--int8")) == ("0", "1", "1")
    assert "--duration" not in argv and "--return-output" not in argv
    argv = runner_argv("python3", "r.py", _opts(tmp_path, duration=2.5, return_output=True, shape="8,8,3"),
                       plain, {**remote, "input_file": "d/models/x.f32"}, "p")
    assert _flag(argv, "--duration") == "2.5" and _flag(argv, "--shape") == "8,8,3"
    assert _flag(argv, "--input-file") == "d/models/x.f32" and argv[-1] == "--return-output"
    # every flag the host sends is one the runner's parser accepts
    parsed = runner.Args(argv[5:])
    assert parsed.duration == 2.5 and parsed.return_output is True


def test_local_checks(tmp_path: Path) -> None:
    with pytest.raises(DeployerError, match="--param .*nope.param: no such file"):
        _check_local(RunOptions(param=tmp_path / "nope.param", bin=tmp_path / "m.bin"))
    # /dev/zero, a folder, a FIFO: there, but not a file to upload (they said "no such file")
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    for path, says in (("/dev/zero", "not a regular file"), (tmp_path, "is a folder, not a regular file"),
                       (fifo, "not a regular file")):
        with pytest.raises(DeployerError, match=f"^--input-file {path}: {says}$"):
            _check_local(_opts(tmp_path, input_file=Path(path)))
    bad = tmp_path / "we ird;name.bin"
    bad.write_text("x")
    opts = _opts(tmp_path)
    opts.bin = bad
    with pytest.raises(DeployerError, match="may only use letters"):
        _check_local(opts)
    for kw, needle in [({"iterations": 0}, "--iterations"), ({"duration": -1.0}, "--duration"),
                       ({"threads": 0}, "--threads"), ({"powersave": 3}, "--powersave"), ({"shape": "a,b"}, "--shape")]:
        with pytest.raises(DeployerError, match=needle):
            _check_local(_opts(tmp_path, **kw))


@pytest.mark.parametrize("kw, needle", [
    # found by running the CLI: each of these ran on the board (garbage input, 999 threads) or failed
    # there after the upload ("cannot set up timer" read as a busy board, a runner UsageError)
    ({"fill": "nan"}, "--fill"), ({"fill": "inf"}, "--fill"), ({"fill": "1e39"}, "--fill"), ({"fill": "abc"}, "--fill"),
    ({"threads": 999}, "--threads must be 1 to 256"), ({"seed": -1}, "--seed"), ({"seed": 2**64}, "--seed"),
    ({"lock_wait": float("inf")}, "--lock-wait"), ({"lock_wait": float("nan")}, "--lock-wait"),
    # 1e-9 killed the run after 0 s (exit 3); 1e308 ran for ever
    ({"idle_timeout": 1e-9}, "--idle-timeout must be 1 to 604800"), ({"idle_timeout": 0.5}, "--idle-timeout"),
    ({"idle_timeout": float("nan")}, "--idle-timeout"), ({"idle_timeout": 1e308}, "--idle-timeout"),
    ({"duration": 1e308}, "--duration .*at most 604800"), ({"duration": 7 * 86400 + 1}, "--duration"),
    ({"duration": float("nan")}, "--duration"), ({"duration": 0.0}, "--duration"),
])
def test_local_checks_refuse_absurd_numbers_before_the_board(tmp_path: Path, kw: dict, needle: str) -> None:
    with pytest.raises(DeployerError, match=needle):
        _check_local(_opts(tmp_path, **kw))


def test_local_checks_keep_sane_numbers(tmp_path: Path) -> None:
    from deployer.remote.session import _FLOAT32_MAX

    for kw in ({"fill": "0.5"}, {"fill": "-3e38"}, {"fill": str(_FLOAT32_MAX)}, {"threads": 256}, {"seed": 0},
               {"lock_wait": 0.0}, {"lock_wait": 3600.0}, {"idle_timeout": 1.0}, {"idle_timeout": 7 * 86400.0},
               {"duration": 0.01}, {"duration": 7 * 86400.0}):
        with pytest.raises(DeployerError, match="magic"):     # every number passed: the model file is next
            _check_local(_opts(tmp_path, **kw))


class _FakeConn:
    """Only for _collect, which parses lines: no transport involved."""

    alive = True
    name = "pi"


def _session() -> Session:
    return Session(Board(name="pi", host="h"), _FakeConn())


def _lines(*objs) -> list[str]:
    return [runner.to_json(o) for o in objs]


def test_collect_builds_result_and_recomputes_stats() -> None:
    events = []
    s = _session()
    s.on_event = events.append
    lines = _lines({"type": "board", "facts": {"machine": "aarch64", "cpu": "Cortex-A72"}, "options": {"threads": 1}},
                   {"type": "iter", "i": 0, "ms": 3.0}, {"type": "iter", "i": 1, "ms": 1.0},
                   {"type": "output", "blob": "out0", "shape": [2], "data": "AACAPwAAAEA="},
                   {"type": "stats", "partial": False, "load_ms": 5.0, "shape": [8, 8, 3]})
    r = s._collect(["not json: ncnn warning", *lines], __import__("datetime").datetime(2026, 1, 2, 3, 4, 5), {}, {})
    assert r.samples_ms == [3.0, 1.0] and r.stats["median_ms"] == 2.0 and r.stats["count"] == 2
    assert r.output == {"blob": "out0", "shape": [2], "values": [1.0, 2.0]}
    assert r.options["load_ms"] == 5.0 and r.facts["cpu"] == "Cortex-A72"
    assert [e["type"] for e in events] == ["board", "iter", "iter", "stats"] and events[0]["board"] == "pi"
    out = r.to_json()
    assert out["machine"] == "aarch64" and out["samples_ms"] == [3.0, 1.0] and out["ok"] is True


def test_collect_errors() -> None:
    s = _session()
    with pytest.raises(DeployerError, match="pi: runner: ValueError: bad blob"):
        s._collect(_lines({"type": "board"}, {"type": "error", "error": "ValueError: bad blob"}), None, {}, {})
    with pytest.raises(RemoteError, match="stopped after 1 iteration.*exit code 127: env: python3: not found"):
        s._collect(_lines({"type": "iter", "i": 0, "ms": 1.0},
                          {"type": "exit", "rc": 127, "stderr": "env: python3: not found"}), None, {}, {})


def test_partial_run_is_kept_and_flagged() -> None:
    r = _session()._collect(_lines({"type": "iter", "i": 0, "ms": 2.0}, {"type": "stats", "partial": True, "signal": 15}),
                            __import__("datetime").datetime(2026, 1, 2), {}, {})
    assert r.partial and r.to_json()["ok"] is False and r.samples_ms == [2.0]


def test_save_result_is_atomic_and_named_by_board_and_time(tmp_path: Path) -> None:
    r = RunResult(board="pi", started_at="2026-01-02T03:04:05.000006Z", facts={}, options={}, samples_ms=[1.0],
                  stats=None, partial=False, runtime={}, model={})
    path = save_result(r, tmp_path)
    assert path == tmp_path / "pi" / "20260102T030405.000006Z.json"
    assert json.loads(path.read_text())["saved_to"] == str(path)
    assert [p.name for p in (tmp_path / "pi").iterdir()] == [path.name]
    r.board = "../evil"
    with pytest.raises(DeployerError, match="board name"):
        save_result(r, tmp_path)


def test_compare_outputs() -> None:
    from deployer.remote.session import compare_outputs

    same = compare_outputs({"shape": [3], "values": [1.0, -2.0, 0.5]}, {"shape": [3], "values": [1.0, -2.0, 0.5]})
    assert same["identical"] and same["max_abs_diff"] == 0.0 and same["cosine"] == 1.0
    off = compare_outputs({"shape": [2], "values": [1.0, 2.0]}, {"shape": [2], "values": [1.0, 2.5]})
    assert not off["identical"] and off["max_abs_diff"] == 0.5 and off["max_rel_diff"] == pytest.approx(0.2)
    assert off["cosine"] == pytest.approx((1 + 5) / ((1 + 4) ** 0.5 * (1 + 6.25) ** 0.5))
    assert "shape [2] on the board vs [3]" in compare_outputs({"shape": [2], "values": [1.0, 2.0]},
                                                              {"shape": [3], "values": [1.0, 2.0, 3.0]})["error"]


def test_warnings_for_unstable_clocks() -> None:
    r = RunResult(board="pi", started_at="", facts={"cpufreq": [{"governor": "ondemand"}, {"governor": "ondemand"}],
                                                    "throttled": "0x0"},
                  options={}, samples_ms=[1.0], stats=None, partial=False, runtime={}, model={},
                  end_state={"throttled": "0x50005", "thermal": [{"celsius": 82.5}]})
    w = r.warnings()
    assert any("governor ondemand" in x for x in w) and any("0x50005 after" in x for x in w)
    assert any("82 C" in x for x in w) and not any("before" in x for x in w)
    calm = RunResult(board="pi", started_at="", facts={"cpufreq": [{"governor": "performance"}]}, options={},
                     samples_ms=[], stats=None, partial=False, runtime={}, model={})
    assert calm.warnings() == []


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert sparkline([5.0, 5.0]) == "▁▁"
    assert len(sparkline([float(i) for i in range(100)], width=40)) == 40


def test_a_model_without_an_input_size_needs_shape_before_the_upload(tmp_path: Path) -> None:
    """The board's runner found the missing size only after the upload, naming its temp copy of the .param."""
    param, bin_ = tmp_path / "m.param", tmp_path / "m.bin"
    bin_.write_bytes(b"")
    param.write_text("7767517\n2 2\nInput in0 0 1 in0\nReLU relu 1 1 in0 out0\n")
    with pytest.raises(DeployerError, match=r"m.param: its input in0 has no fixed size") as err:
        _check_local(RunOptions(param=param, bin=bin_))
    assert "--shape W,H,C" in (err.value.hint or "")
    assert _check_local(RunOptions(param=param, bin=bin_, shape="8,8,3"))          # given: fine
    with pytest.raises(DeployerError, match=r"--input-blob out0: not an input of .*m.param \(inputs: in0\)"):
        _check_local(RunOptions(param=param, bin=bin_, shape="8,8,3", input_blob="out0"))
    param.write_text("7767517\n2 2\nInput in0 0 1 in0 0=8 1=8 2=3\nReLU relu 1 1 in0 out0\n")
    assert _check_local(RunOptions(param=param, bin=bin_))                         # fixed size: no --shape needed


def test_push_of_a_model_without_an_input_size_needs_no_shape(tmp_path: Path) -> None:
    """`push` only uploads and has no --shape: the run-time check refused every push of such a model
    (the README's MobileNetV2 among them) with 'pass --shape', an option push does not have."""
    param, bin_ = tmp_path / "m.param", tmp_path / "m.bin"
    bin_.write_bytes(b"")
    param.write_text("7767517\n2 2\nInput in0 0 1 in0\nReLU relu 1 1 in0 out0\n")
    assert push_boards([], RunOptions(param=param, bin=bin_)) == {}
    _check_local(RunOptions(param=param, bin=bin_), running=False)


def test_a_shape_the_model_cannot_take_is_refused_before_the_upload(tmp_path: Path) -> None:
    """4 channels into a 3-channel conv ran on the board, read past ncnn's weights and 'passed'."""
    import struct

    param, bin_ = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0 0=8 1=8 2=3\nConvolution conv 1 1 in0 out0 0=2 1=1 5=0 6=6\n")
    bin_.write_bytes(struct.pack("<I6f", 0, *range(6)))
    assert _check_local(RunOptions(param=param, bin=bin_))                          # its own Input size
    assert _check_local(RunOptions(param=param, bin=bin_, shape="16,12,3"))         # another size, 3 channels
    for shape in ("8,8,4", "8,8,1", "8,8"):
        with pytest.raises(DeployerError, match=rf"input shape --shape {shape} does not fit m.param: layer conv "
                                                r"\(Convolution\) has weights for 3 input channels"):
            _check_local(RunOptions(param=param, bin=bin_, shape=shape))
    param.write_text("7767517\n2 2\nInput in0 0 1 in0 0=8 1=8 2=4\nConvolution conv 1 1 in0 out0 0=2 1=1 5=0 6=6\n")
    with pytest.raises(DeployerError, match=r"input shape 8,8,4 \(its Input layer\) does not fit m.param"):
        _check_local(RunOptions(param=param, bin=bin_))
