"""Validation before ncnn: user files, model params and weights, tables, shapes, numbers (issue 6 item 1)."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deployer import fsutil
from deployer.errors import DeployerError
from deployer.ncnn.model import NcnnModel
from deployer.ncnn.param import parse_param
from deployer.ncnn.validate import MAX_INPUT_SIDE, check_graph, check_input_shape, guess_input_shapes, infer_check

CONV = "7767517\n3 3\nInput in0 0 1 in0\nConvolution conv 1 1 in0 c {conv}\nInnerProduct fc 1 1 c out0 0=2 1=0 2={fc}\n"


def _model(tmp_path: Path, conv: str = "0=4 1=3 5=0 6=108", fc: int = 2 * 4 * 6 * 6,
           weights: np.ndarray | None = None) -> tuple[Path, Path]:
    param, binf = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text(CONV.format(conv=conv, fc=fc))
    w = np.linspace(-1, 1, 108, dtype=np.float32) if weights is None else weights
    fcw = np.linspace(-1, 1, fc, dtype=np.float32)
    binf.write_bytes(struct.pack("<I", 0) + w.tobytes() + struct.pack("<I", 0) + fcw.tobytes())
    return param, binf


# ------------------------------------------------------------------------------------ user files

def test_read_input_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "calib.fifo"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: result.append(_raises(fsutil.read_input, fifo)), daemon=True)
    started = time.monotonic()
    t.start()
    t.join(5)
    assert not t.is_alive(), "read_input blocked on a FIFO"
    assert time.monotonic() - started < 5
    assert "is a FIFO, expected a regular file" in str(result[0])


def _raises(fn, *args) -> BaseException:
    try:
        fn(*args)
    except BaseException as err:  # noqa: BLE001
        return err
    raise AssertionError("no error")


def test_read_input_refuses_devices_folders_and_oversized_files(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DeployerError, match="/dev/zero: is a device"):
        fsutil.read_input("/dev/zero", "image")
    with pytest.raises(DeployerError, match="is a folder"):
        fsutil.read_input(tmp_path, "model .bin")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2000)
    monkeypatch.setenv("DEPLOYER_MAX_INPUT_BYTES", "1000")
    with pytest.raises(DeployerError, match="2,000 bytes, over the 1,000-byte limit"):
        fsutil.read_input(big)
    assert fsutil.read_input(big, limit=4096) == b"x" * 2000
    with pytest.raises(DeployerError, match="is a device"):
        with fsutil.open_input("/dev/zero"):
            pass


def test_read_input_text_names_the_first_non_utf8_byte(tmp_path: Path) -> None:
    p = tmp_path / "targets.yaml"
    p.write_bytes(b"boards:\n  pi: {host: \xff}\n")
    with pytest.raises(DeployerError, match=r"not a UTF-8 text targets file \(byte 21 is 0xff\)"):
        fsutil.read_input_text(p, "targets file")


# ---------------------------------------------------------------------------------------- .param

@pytest.mark.parametrize("value", ["Infinity", "nan", "-inf", "1e999", "3.5e38"])
def test_param_values_must_be_finite_float32(value: str) -> None:
    with pytest.raises(DeployerError, match="finite"):
        parse_param(f"7767517\n2 2\nInput in0 0 1 in0\nReLU r 1 1 in0 out 0={value}\n", "m.param")


@pytest.mark.parametrize("text", ["3=\u0663", "3=1_0", "\u0663=1"])
def test_param_numbers_are_ascii_like_ncnn_reads_them(text: str) -> None:
    with pytest.raises(DeployerError):
        parse_param(f"7767517\n2 2\nInput in0 0 1 in0\nReLU r 1 1 in0 out {text}\n", "m.param")


def test_param_counts_are_capped_before_ncnn_allocates_them() -> None:
    with pytest.raises(DeployerError, match="blob count 99999999 is over deployer's limit"):
        parse_param("7767517\n2 99999999\nInput in0 0 1 in0\nReLU r 1 1 in0 out\n", "m.param")


@pytest.mark.parametrize("conv, message", [
    ("0=4 1=3 12=0 6=108", "dilation_h \\(param 12\\) is 0"),
    ("0=4 1=3 3=0 6=108", "stride_w \\(param 3\\) is 0"),
    ("0=4 1=0 6=108", "kernel_w \\(param 1\\) is 0"),
    ("0=4 1=3 6=100", "weight_data_size \\(param 6\\) = 100 is not a positive multiple"),
    ("0=4 1=3 6=108 8=7", "int8_scale_term \\(param 8\\) = 7"),
    ("0=4 1=3 6=108 8=Infinity", "finite"),
])
def test_layer_params_ncnn_would_crash_on_are_refused(tmp_path: Path, conv: str, message: str) -> None:
    param, binf = _model(tmp_path, conv=conv)
    with pytest.raises(DeployerError, match=message):
        NcnnModel.load(param, binf)


def test_graph_order_and_dangling_blobs_are_refused() -> None:
    g = parse_param("7767517\n3 3\nInput in0 0 1 in0\nReLU a 1 1 b c\nReLU b 1 1 in0 b\n", "m.param")
    with pytest.raises(DeployerError, match="reads blob 'b' before layer b produces it"):
        check_graph(g, "m.param")
    g = parse_param("7767517\n2 3\nInput in0 0 1 in0\nReLU a 1 1 nothing c\n", "m.param")
    with pytest.raises(DeployerError, match="reads blob 'nothing', which no layer produces"):
        check_graph(g, "m.param")


# ---------------------------------------------------------------------------------------- .bin

def test_bin_one_byte_short_is_one_line(tmp_path: Path) -> None:
    param, binf = _model(tmp_path)
    binf.write_bytes(binf.read_bytes()[:-1])
    with pytest.raises(DeployerError, match="the .bin does not match the .param"):
        NcnnModel.load(param, binf)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_unless_asked(tmp_path: Path, bad: float) -> None:
    w = np.linspace(-1, 1, 108, dtype=np.float32)
    w[17] = bad
    param, binf = _model(tmp_path, weights=w)
    with pytest.raises(DeployerError, match=r"layer conv \(Convolution\) weight holds .* at index 17"):
        NcnnModel.load(param, binf)
    assert NcnnModel.load(param, binf, allow_nonfinite=True).weight("conv", "weight").data.size == 108


def test_int8_scales_must_be_positive(tmp_path: Path) -> None:
    param, binf = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0\nInnerProduct fc 1 1 in0 out 0=2 1=0 2=4 8=1\n")
    body = struct.pack("<I", 0x000D4B38) + bytes([1, 2, 3, 4])
    binf.write_bytes(body + struct.pack("<2f", 10.0, 10.0) + struct.pack("<f", -2147483648.0))
    with pytest.raises(DeployerError, match="bottom_scales holds -2147483648.0; int8 scales must be positive"):
        NcnnModel.load(param, binf)


# ----------------------------------------------------------------------------------- tables

@pytest.mark.parametrize("value", ["-2147483648", "nan", "-0.5"])
def test_table_scales_nan_or_negative_are_refused(value: str) -> None:
    from deployer.quant.table import parse_table

    with pytest.raises(DeployerError, match=f"scale {value} is not a positive number"):
        parse_table(f"conv_param_0 1.0 2.0\nconv {value}\n", "t.table")


# ----------------------------------------------------------------------------- shapes, numbers

@pytest.mark.parametrize("arg, message", [
    ("norm=[nan,1,1]", "not a finite"),
    ("mean=[1e39,1,1]", "not a finite 32-bit float"),
    ("shape=[-48,48]", "sizes must be positive"),
    ("shape=[99999999999999999999,48]", "out of range"),
    ("shape=[65536,48]", f"width 65536 is out of range; each must be between 1 and {MAX_INPUT_SIDE}"),
    ("thread=\u0663", "not an integer"),
])
def test_ncnn2table_numbers_are_checked(tmp_path: Path, arg: str, message: str) -> None:
    from deployer.quant.ncnn2table import input_specs, parse_args

    argv = ["m.param", "m.bin", "list.txt", "t.table", "mean=[1,1,1]", "norm=[1,1,1]", "shape=[12,12]",
            "pixel=RGB"]
    key = arg.split("=")[0]
    argv = [a for a in argv if not a.startswith(key + "=")] + [arg]
    with pytest.raises(DeployerError, match=message):
        input_specs(parse_args(argv), 1)


@pytest.mark.parametrize("field, value, message", [
    ("shape", "[65536, 48]", "width 65536 is out of range"),
    ("shape", "[99999999999999999999, 48]", "out of range"),
    ("norm", "[.nan, 1, 1]", "finite"),
])
def test_profile_inputs_are_checked(tmp_path: Path, field: str, value: str, message: str) -> None:
    from deployer.profile import load_profile

    (tmp_path / "m.param").write_text("x")
    (tmp_path / "m.bin").write_text("x")
    inputs = {"shape": "[12, 12]", "pixel": "RGB", "mean": "[1, 1, 1]", "norm": "[1, 1, 1]"}
    inputs[field] = value
    body = ", ".join(f"{k}: {v}" for k, v in inputs.items())
    p = tmp_path / "p.yaml"
    p.write_text(f"model: {{param: m.param, bin: m.bin}}\ninputs:\n  - {{{body}}}\ncalibration: {{images: .}}\n")
    with pytest.raises(DeployerError, match=message):
        load_profile(p)


def test_input_shape_limits() -> None:
    check_input_shape((0, 0), "shape")            # 0 = keep the image's size
    check_input_shape((MAX_INPUT_SIDE, 16), "shape")
    with pytest.raises(DeployerError, match="over the limit"):
        check_input_shape((8192, 8192, 3), "shape")


def test_shape_inference_finds_a_fixed_size_head() -> None:
    g = parse_param(CONV.format(conv="0=4 1=3 5=0 6=108", fc=2 * 4 * 6 * 6), "m.param")
    infer_check(g, {"in0": (3, 8, 8)}, "m.param", "8x8")
    with pytest.raises(DeployerError, match=r"layer fc \(InnerProduct\) takes 144 values per input but would get 784"):
        infer_check(g, {"in0": (3, 16, 16)}, "m.param", "16x16")
    with pytest.raises(DeployerError, match="has weights for 3 input channels but would get 1"):
        infer_check(g, {"in0": (1, 8, 8)}, "m.param", "8x8")
    assert guess_input_shapes(g) is None or guess_input_shapes(g) == {"in0": (3, 8, 8)}


def test_ssh_config_port_that_is_not_a_number(tmp_path: Path, monkeypatch) -> None:
    from deployer.ssh.config import load_ssh_config, plan_hops
    from deployer.targets import load_targets

    cfg = tmp_path / "config"
    cfg.write_text("Host pi\n  HostName 127.0.0.1\n  Port abc\n")
    monkeypatch.setenv("DEPLOYER_SSH_CONFIG", str(cfg))
    t = tmp_path / "t.yaml"
    t.write_text("boards:\n  pi: {host: pi}\n")
    board = load_targets([t]).board("pi")
    with pytest.raises(DeployerError, match="Port 'abc' for host 127.0.0.1 is not a port number"):
        plan_hops(board, load_ssh_config(cfg))


def test_targets_file_that_is_not_utf8(tmp_path: Path) -> None:
    from deployer.targets import load_targets

    t = tmp_path / "t.yaml"
    t.write_bytes(b"boards:\n  pi: {host: \xe9}\n")
    with pytest.raises(DeployerError, match="not a UTF-8 text targets file"):
        load_targets([t])
