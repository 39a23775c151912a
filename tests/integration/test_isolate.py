"""ncnn crash isolation and int8 verification with the stock ncnn wheel (issue 6 item 1).

The crash cases are real: an InnerProduct whose weights are far smaller than its input makes ncnn
read past the end of its buffer and die with SIGSEGV. deployer's own checks refuse that model before
ncnn sees it; `deployer.isolate` is the net under them, so it is tested directly too.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployer import isolate

DEPLOYER = [sys.executable, "-m", "deployer.cli"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*DEPLOYER, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert not any("load_param" in ln or "load_model" in ln for ln in lines if ln not in errors), proc.stderr
    return errors[0]


def _overrun_model(tmp_path: Path) -> tuple[Path, Path]:
    param, binf = tmp_path / "overrun.param", tmp_path / "overrun.bin"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0\nInnerProduct fc 1 1 in0 out0 0=4 1=0 2=8\n")
    binf.write_bytes(struct.pack("<I", 0) + np.ones(8, np.float32).tobytes())
    return param, binf


def _images(folder: Path, n: int = 3, size: int = 60) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    listing = folder / "list.txt"
    listing.write_text("".join(f"{folder / f'{i}.png'}\n" for i in range(n)))
    return listing


def test_a_segfault_in_ncnn_becomes_one_error(tmp_path: Path) -> None:
    param, binf = _overrun_model(tmp_path)
    with pytest.raises(isolate.NcnnCrashed) as info:
        isolate.probe(param, binf, {"in0": (3, 2000, 2000)})
    err = info.value
    assert err.exit_code == 2
    assert "ncnn crashed (SIGSEGV) while running model overrun.param on input in0 3x2000x2000" in str(err)
    assert "\n" not in str(err)
    # the same files at a size the weights cover run fine in the child
    assert isolate.probe(param, binf, {"in0": (2, 1, 1)}).outputs == {"out0": [4]}


def test_loader_messages_stay_in_the_child(tmp_path: Path, mtcnn_onet) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 8)
    with pytest.raises(isolate.NcnnCrashed, match="ncnn could not load these weights.*ncnn said: layer load_model"):
        isolate.probe(mtcnn_onet.param, short, None)


def test_check_refuses_the_overrun_model_before_ncnn(tmp_path: Path) -> None:
    param, binf = _overrun_model(tmp_path)
    npy = tmp_path / "x.npy"
    np.save(npy, np.ones((3, 200, 200), np.float32))
    (tmp_path / "list.txt").write_text(f"{npy}\n")
    proc = _cli("check", "--param", str(param), "--bin", str(binf), "--int8-param", str(param), "--int8-bin",
                str(binf), "--images", "list.txt", "--shape", "200,200", "--no-layers", cwd=tmp_path)
    assert proc.returncode == 2
    assert "layer fc (InnerProduct) takes 2 values per input but would get 120000" in _one_error_line(proc)


@pytest.mark.slow
def test_quantize_onet_at_the_wrong_size_is_one_line(tmp_path: Path, mtcnn_onet) -> None:
    """Issue 6: `quantize --shape 96,96` on the 48x48 ONet segfaulted in ncnn's extract."""
    listing = _images(tmp_path / "calib")
    proc = _cli("quantize", "--param", str(mtcnn_onet.param), "--bin", str(mtcnn_onet.bin), "--calib", str(listing),
                "--shape", "96,96", "--mean", "127.5,127.5,127.5", "--norm", "0.0078125,0.0078125,0.0078125",
                "--pixel", "RGB", "--method", "kl", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "input shape 3x96x96 (CxHxW) does not fit model.param: layer linear_4 (InnerProduct)" in line
    assert "this model takes 48x48" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ncnn2int8_verifies_its_result_in_stock_ncnn(tmp_path: Path, mtcnn_onet) -> None:
    listing = _images(tmp_path / "calib", size=48)
    table = tmp_path / "onet.table"
    proc = _cli("ncnn2table", str(mtcnn_onet.param), str(mtcnn_onet.bin), str(listing), str(table), "shape=[48,48]",
                "mean=[127.5,127.5,127.5]", "norm=[0.0078125,0.0078125,0.0078125]", "pixel=RGB", "thread=1",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("ncnn2int8", str(mtcnn_onet.param), str(mtcnn_onet.bin), "o.param", "o.bin", str(table), "--json",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    verified = json.loads(proc.stdout)["verified"]
    # ONet's Input declares no shape: the 48x48 its InnerProduct head admits was found and run
    assert verified["ran"] and verified["inputs"] == {"in0": [3, 48, 48]}
    assert verified["outputs"] == {"out0": [2], "out1": [4], "out2": [10]}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("o.")) == ["o.bin", "o.param"]


def test_ncnn2int8_writes_nothing_when_stock_ncnn_refuses_the_model(tmp_path: Path) -> None:
    """A layer deployer's parser knows but this ncnn wheel lacks: the result cannot be verified."""
    (tmp_path / "m.param").write_text("7767517\n3 3\nInput in0 0 1 in0 0=8 1=8 2=3\n"
                                      "Convolution conv 1 1 in0 c 0=4 1=1 5=1 6=12\nYoloDetectionOutput y 1 1 c out0\n")
    (tmp_path / "m.bin").write_bytes(struct.pack("<I", 0) + np.linspace(-1, 1, 12, dtype=np.float32).tobytes()
                                     + np.zeros(4, np.float32).tobytes())
    (tmp_path / "m.table").write_text("conv_param_0 10 10 10 10 \nconv 20 \n")
    proc = _cli("ncnn2int8", "m.param", "m.bin", "o.param", "o.bin", "m.table", cwd=tmp_path)
    assert proc.returncode == 2
    assert "stock ncnn cannot load the input model" in _one_error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.param", "m.table"]


@pytest.mark.parametrize("damage", ["bin-one-byte-short", "param-8-infinity"])
def test_check_on_damaged_int8_files_is_one_line(tmp_path: Path, mtcnn_pnet, damage: str) -> None:
    """Issue 6: `check` segfaulted on an int8 .bin one byte short and on 8=Infinity in an int8 .param."""
    listing = _images(tmp_path / "img", size=24)
    table = tmp_path / "t.table"
    assert _cli("ncnn2table", str(mtcnn_pnet.param), str(mtcnn_pnet.bin), str(listing), str(table), "shape=[12,12]",
                "mean=[127.5,127.5,127.5]", "norm=[0.0078125,0.0078125,0.0078125]", "pixel=RGB", "thread=1",
                cwd=tmp_path).returncode == 0
    assert _cli("ncnn2int8", str(mtcnn_pnet.param), str(mtcnn_pnet.bin), "i8.param", "i8.bin", str(table),
                cwd=tmp_path).returncode == 0
    if damage == "bin-one-byte-short":
        data = (tmp_path / "i8.bin").read_bytes()
        (tmp_path / "i8.bin").write_bytes(data[:-1])
        expect = "the .bin does not match the .param"
    else:
        text = (tmp_path / "i8.param").read_text()
        (tmp_path / "i8.param").write_text(text.replace(" 8=2", " 8=Infinity", 1))
        expect = "not a finite number"
    proc = _cli("check", "--param", str(mtcnn_pnet.param), "--bin", str(mtcnn_pnet.bin), "--int8-param", "i8.param",
                "--int8-bin", "i8.bin", "--images", str(listing), "--shape", "12,12", "--mean", "127.5,127.5,127.5",
                "--norm", "0.0078125,0.0078125,0.0078125", "--pixel", "RGB", cwd=tmp_path)
    assert proc.returncode == 2
    assert expect in _one_error_line(proc)
