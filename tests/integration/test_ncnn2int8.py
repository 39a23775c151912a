"""`deployer ncnn2int8` against the stock ncnn wheel: files load, run, and mean what we think.

The tiny models and their maxabs tables come from tests/fixtures/int8.py (hand-written fp32 files,
scales measured through ncnn). Byte layout is checked with an independent little parser here and
with the facts ncnn-int8.md §9 verified against the real ncnn2int8.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployer.ncnn.model import NcnnModel
from deployer.quant.simulate import relative_error, simulate
from tests.fixtures.int8 import int8_tiny_models, ncnn_run, random_inputs  # noqa: F401  (fixture)

ncnn = pytest.importorskip("ncnn")

TAG_INT8, TAG_FP16 = 0x000D4B38, 0x01306B47


def run_cli(*args: object) -> subprocess.CompletedProcess:
    code = "from deployer.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "ncnn2int8", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def convert(tmp_path: Path, model, table: Path | str, *extra: str) -> tuple[Path, Path, dict]:
    param, binp = tmp_path / f"{model.name}-int8.param", tmp_path / f"{model.name}-int8.bin"
    res = run_cli(model.param, model.bin, param, binp, table, "--json", *extra)
    assert res.returncode == 0, res.stderr
    return param, binp, json.loads(res.stdout)


def table_without(table: Path, keys: set[str], tmp_path: Path) -> Path:
    out = tmp_path / f"without-{'-'.join(sorted(keys))}.table"
    out.write_text("".join(line + "\n" for line in table.read_text().splitlines() if line.split(" ")[0] not in keys))
    return out


def param_terms(param: Path) -> dict[str, int]:
    terms = {}
    for line in param.read_text().splitlines()[2:]:
        tok = line.split()
        if tok[0] in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
            kv = dict(t.split("=", 1) for t in tok if "=" in t and not t.startswith("-"))
            terms[tok[1]] = int(kv.get("8", 0))
    return terms


# ----------------------------------------------------------------------------- (1) runs in ncnn

@pytest.mark.parametrize("name", ["chain", "branch"])
def test_int8_file_runs_in_ncnn_and_equals_the_simulation(int8_tiny_models, tmp_path, name):
    model, table = int8_tiny_models[name]
    param, binp, _ = convert(tmp_path, model, table)
    q = NcnnModel.load(param, binp)
    fp32 = NcnnModel.load(model.param, model.bin)
    packed_off, int8_off = [], []
    for x in random_inputs(model.input_shape, 4, seed=11):
        feed = {model.input_name: x}
        got = ncnn_run(param, binp, feed, [model.output_name], packing=False)[model.output_name]
        sim = simulate(q, feed)[model.output_name]
        assert relative_error(sim.reshape(got.shape), got) <= 1e-5
        ref = ncnn_run(model.param, model.bin, feed, [model.output_name])[model.output_name]
        assert relative_error(simulate(fp32, feed)[model.output_name].reshape(ref.shape), ref) <= 1e-5
        # it really ran int8: clearly off fp32, but close
        err = relative_error(got, ref)
        assert 1e-4 < err < 0.1
        # with ncnn's default packed kernels: a valid int8 result too, close to the reference kernels.
        # Not bit-equal: x86 packed depthwise dequantizes with an approximate reciprocal, and packed
        # fp32 layers (the branch model's Deconvolution) sum in another order, so a value upstream
        # of an int8 layer can land on the other side of a rounding boundary and flip a code. On a
        # 5-value output one flip moves one input by as much as int8 itself (AVX-512 hosts, input 0:
        # 0.0048 vs 0.0081), so the bound is on the inputs together.
        packed = ncnn_run(param, binp, feed, [model.output_name])[model.output_name]
        assert relative_error(packed, ref) < 0.1
        packed_off.append(relative_error(packed, got))
        int8_off.append(err)
    assert sum(packed_off) < 0.5 * sum(int8_off)


def test_requantized_blob_codes_match_the_simulation(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["chain"]
    param, binp, _ = convert(tmp_path, model, table)
    q = NcnnModel.load(param, binp)
    x = random_inputs(model.input_shape, 1, seed=2)[0]
    got = ncnn_run(param, binp, {"data": x}, ["c1", "c2", "d1"], packing=False)
    sim = simulate(q, {"data": x})
    for blob in ("c1", "c2", "d1"):      # ncnn's extract returns the raw int8 codes of fused outputs
        assert np.array_equal(sim.int8[blob].codes.astype(np.float32), got[blob])
        assert np.abs(got[blob]).max() <= 127


# ----------------------------------------------------------------------------- (2) byte layout

def parse_int8_bin(data: bytes, layout: list[tuple[str, int, str]]) -> dict[str, np.ndarray]:
    """Independent reader: `layout` = (key, count, kind) with kind tag/raw; checks tags + padding."""
    pos, out = 0, {}
    for key, count, kind in layout:
        if kind == "raw":
            out[key] = np.frombuffer(data, "<f4", count, pos).copy()
            pos += 4 * count
            continue
        tag = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if tag == TAG_INT8:
            out[key] = np.frombuffer(data, np.int8, count, pos).copy()
            size = (count + 3) // 4 * 4
            assert data[pos + count:pos + size] == b"\0" * (size - count), f"{key}: padding not zero"
        elif tag == TAG_FP16:
            out[key] = np.frombuffer(data, "<f2", count, pos).astype(np.float32)
            size = (2 * count + 3) // 4 * 4
            assert data[pos + 2 * count:pos + size] == b"\0" * (size - 2 * count)
        else:
            raise AssertionError(f"{key}: unexpected tag {tag:#010x}")
        out[key + ":tag"] = np.array([tag])
        pos += size
    assert pos == len(data), f"{len(data) - pos} unexplained bytes"
    return out


def wheel_quantize(w: np.ndarray, scales: list[float]) -> np.ndarray:
    """Per-row quantization by the ncnn wheel itself (independent of our code)."""
    out = []
    for row, s in zip(w.reshape(len(scales), -1), scales):
        src = np.ascontiguousarray(row, dtype=np.float32)
        scale = np.array([s], dtype=np.float32)
        src_mat, scale_mat, dst = ncnn.Mat(src).clone(), ncnn.Mat(scale).clone(), ncnn.Mat()
        opt = ncnn.Option()
        opt.use_packing_layout = False
        ncnn.quantize_to_int8(src_mat, dst, scale_mat, opt)
        out.append(np.array(dst, dtype=np.int8).reshape(-1).copy())
    return np.concatenate(out)


def wheel_fp16(w: np.ndarray) -> np.ndarray:
    """fp32 -> fp16 -> fp32 through the ncnn wheel's own cast."""
    opt = ncnn.Option()
    opt.use_packing_layout = False
    src, half, back = ncnn.Mat(np.ascontiguousarray(w, dtype=np.float32)).clone(), ncnn.Mat(), ncnn.Mat()
    ncnn.cast_float32_to_float16(src, half, opt)
    ncnn.cast_float16_to_float32(half, back, opt)
    return np.array(back, dtype=np.float32).reshape(-1).copy()


def read_table(path: Path) -> dict[str, list[float]]:
    return {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in path.read_text().splitlines() if ln.strip()}


def test_chain_bin_layout_matches_ncnn2int8(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["chain"]
    param, binp, _ = convert(tmp_path, model, table)
    scales = read_table(table)
    # §9.4, verified with the real ncnn2int8 on this architecture
    assert param_terms(param) == {"conv1": 102, "conv2": 102, "dw1": 101, "conv4": 2, "fc": 2}
    data = binp.read_bytes()
    assert data[:4] == bytes.fromhex("384b0d00")
    layout = []
    for name, rows, fused_to in (("conv1", 8, "conv2"), ("conv2", 8, "dw1"), ("dw1", 8, "conv4"),
                                 ("conv4", 16, None), ("fc", 10, None)):
        layout += [(f"{name}.w", model.weight(name, "weight").size, "tag"), (f"{name}.b", rows, "raw"),
                   (f"{name}.ws", rows, "raw"), (f"{name}.in", 1, "raw")]
        if fused_to:
            layout.append((f"{name}.out", 1, "raw"))
    got = parse_int8_bin(data, layout)
    for name in ("conv1", "conv2", "dw1", "conv4", "fc"):
        assert got[f"{name}.w:tag"][0] == TAG_INT8
        want = wheel_quantize(model.weight(name, "weight"), scales[f"{name}_param_0"])
        assert np.array_equal(got[f"{name}.w"], want), name
        assert np.array_equal(got[f"{name}.b"], model.weight(name, "bias"))
        assert np.allclose(got[f"{name}.ws"], scales[f"{name}_param_0"], rtol=1e-7)
        assert got[f"{name}.in"][0] == np.float32(scales[name][0])
    assert np.abs(got["conv1.w"]).max() <= 31          # 6-bit 3x3s1 scales from the table
    assert np.abs(got["conv4.w"]).max() == 127
    # out scale of a fused layer == its consumer's in scale
    assert got["conv1.out"][0] == got["conv2.in"][0]
    assert got["conv2.out"][0] == got["dw1.in"][0]
    assert got["dw1.out"][0] == got["conv4.in"][0]


def test_branch_bin_has_fp16_float_weights_and_split_fusion(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["branch"]
    param, binp, report = convert(tmp_path, model, table)
    scales = read_table(table)
    # Split -> (conv, dw): fused with the scale of split top 0's consumer; Split -> (conv, Pooling): not
    assert param_terms(param) == {"conv1": 102, "conv2a": 2, "dw2b": 1, "conv3": 2, "conv4": 2, "fc": 2}
    layout = [("conv1.w", 288, "tag"), ("conv1.b", 8, "raw"), ("conv1.ws", 8, "raw"), ("conv1.in", 1, "raw"),
              ("conv1.out", 1, "raw"),
              ("conv2a.w", 64, "tag"), ("conv2a.b", 8, "raw"), ("conv2a.ws", 8, "raw"), ("conv2a.in", 1, "raw"),
              ("dw2b.w", 72, "tag"), ("dw2b.b", 8, "raw"), ("dw2b.ws", 8, "raw"), ("dw2b.in", 1, "raw"),
              ("deconv.w", 128, "tag"), ("deconv.b", 4, "raw"),
              ("conv3.w", 216, "tag"), ("conv3.b", 6, "raw"), ("conv3.ws", 6, "raw"), ("conv3.in", 1, "raw"),
              ("conv4.w", 36, "tag"), ("conv4.ws", 6, "raw"), ("conv4.in", 1, "raw"),
              ("fc.w", 5400, "tag"), ("fc.b", 5, "raw"), ("fc.ws", 5, "raw"), ("fc.in", 1, "raw")]
    got = parse_int8_bin(binp.read_bytes(), layout)
    assert got["conv1.out"][0] == np.float32(scales["conv2a"][0])
    assert got["deconv.w:tag"][0] == TAG_FP16
    # ModelWriter converts with ncnn's Cast (cast_float32_to_float16): ask the wheel for its values
    assert np.array_equal(got["deconv.w"], wheel_fp16(model.weight("deconv", "weight")))
    assert np.array_equal(got["deconv.b"], model.weight("deconv", "bias"))
    assert np.array_equal(got["dw2b.w"], wheel_quantize(model.weight("dw2b", "weight"), scales["dw2b_param_0"]))
    assert report["quantized"] == ["conv1", "conv2a", "dw2b", "conv3", "conv4", "fc"]


# ----------------------------------------------------------------------------- (3) fp32 alone

@pytest.mark.parametrize("drop", [{"conv2", "conv2_param_0"}, {"conv2_param_0"}])
def test_layer_absent_from_table_stays_fp32_alone(int8_tiny_models, tmp_path, drop):
    model, table = int8_tiny_models["chain"]
    param, binp, report = convert(tmp_path, model, table_without(table, drop, tmp_path))
    # ncnn2int8 would leave conv4 float too when only conv2_param_0 is missing (§9.6); we do not
    assert param_terms(param) == {"conv1": 2, "conv2": 0, "dw1": 101, "conv4": 2, "fc": 2}
    assert report["kept_float"] == ["conv2"]
    conv2 = next(d for d in report["layers"] if d["name"] == "conv2")
    assert conv2["precision"] == "fp32" and "table" in conv2["reason"]
    q = NcnnModel.load(param, binp)
    assert q.weight("conv2", "weight").storage == "fp16"
    x = random_inputs(model.input_shape, 1, seed=4)[0]
    got = ncnn_run(param, binp, {"data": x}, ["out"], packing=False)["out"]
    assert relative_error(simulate(q, {"data": x})["out"].reshape(got.shape), got) <= 1e-5


def test_fp32_float_option_writes_tag_0(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["chain"]
    param, binp, report = convert(tmp_path, model, table_without(table, {"conv2", "conv2_param_0"}, tmp_path),
                                  "--fp32-float", "--exclude", "fc")
    q = NcnnModel.load(param, binp)
    assert q.weight("conv2", "weight").storage == "fp32"
    assert np.array_equal(q.weight("conv2", "weight").data, model.weight("conv2", "weight"))
    assert param_terms(param)["fc"] == 0 and report["float_storage"] == "fp32"
    x = random_inputs(model.input_shape, 1, seed=4)[0]
    got = ncnn_run(param, binp, {"data": x}, ["out"], packing=False)["out"]
    assert relative_error(simulate(q, {"data": x})["out"].reshape(got.shape), got) <= 1e-5


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_fail_with_one_line_and_write_nothing(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["chain"]
    out_p, out_b = tmp_path / "o.param", tmp_path / "o.bin"
    bad_count = tmp_path / "bad.table"
    bad_count.write_text(table.read_text().replace("conv2_param_0 ", "conv2_param_0 1.0 ", 1))
    blank = tmp_path / "blank.table"
    blank.write_text(table.read_text().replace("\nconv1 ", "\n\nconv1 ", 1))
    garbled = tmp_path / "garbled.table"
    garbled.write_text(table.read_text().replace("conv4 ", "conv4 abc ", 1).replace("conv4 abc _param", "conv4_param"))
    cases = [
        ((model.param, model.bin, out_p, out_b, tmp_path / "missing.table"), "calibration table not found"),
        ((model.param, model.bin, out_p, out_b, bad_count), "conv2_param_0' has 9 scales"),
        ((model.param, model.bin, out_p, out_b, garbled), "'abc' is not a number"),
        ((model.param, tmp_path / "nope.bin", out_p, out_b, table), "nope.bin: file not found"),
        ((model.param, model.bin, out_p, out_b, blank), "is blank, so ncnn2int8 stops reading there"),
        ((model.param, model.bin, model.param, out_b, table), "would overwrite an input file"),
    ]
    for args, message in cases:
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not out_p.exists() and not out_b.exists()
        assert not list(tmp_path.glob(".o.*tmp*"))


def test_table_naming_unknown_layers_warns(int8_tiny_models, tmp_path):
    model, table = int8_tiny_models["chain"]
    extra = tmp_path / "extra.table"
    extra.write_text(table.read_text() + "ghost 12.5 \n")
    _, _, report = convert(tmp_path, model, extra)
    assert any("ghost" in w for w in report["warnings"])
    assert len(report["quantized"]) == 5


def test_without_a_table_everything_is_fp16(int8_tiny_models, tmp_path):
    """§9.8: ncnn2int8 with four arguments is an fp16 converter: no 8=, every tagged weight fp16."""
    model, _ = int8_tiny_models["branch"]
    param, binp = tmp_path / "fp16.param", tmp_path / "fp16.bin"
    res = run_cli(model.param, model.bin, param, binp)
    assert res.returncode == 0, res.stderr
    assert set(param_terms(param).values()) == {0}
    q = NcnnModel.load(param, binp)
    tagged = [w for ws in q.weights.values() for w in ws if w.tagged]
    assert tagged and all(w.storage == "fp16" for w in tagged)
    x = random_inputs(model.input_shape, 1, seed=8)[0]
    got = ncnn_run(param, binp, {"data": x}, ["out"])["out"]
    ref = ncnn_run(model.param, model.bin, {"data": x}, ["out"])["out"]
    assert relative_error(simulate(q, {"data": x})["out"].reshape(got.shape), got) <= 1e-5
    assert 0 < relative_error(got, ref) < 1e-2


def test_two_runs_writing_one_pair_leave_one_runs_pair(tmp_path, monkeypatch):
    """Two ncnn2int8 runs writing the same .param/.bin (make -j): the second's renames could fall
    between the first's and leave its .param next to the first's .bin. One pair at a time now."""
    from deployer.ncnn.verify import staged_pair
    from tests.fixtures.races import interleave_after_rename

    param, bin_ = tmp_path / "m-int8.param", tmp_path / "m-int8.bin"

    def write(who: str) -> None:
        with staged_pair(param, bin_) as (sparam, sbin):
            sparam.write_text(who)
            sbin.write_text(who)

    wait_for_b = interleave_after_rename(monkeypatch, param, lambda: write("B"))
    write("A")
    wait_for_b()
    assert param.read_text() == bin_.read_text()


def test_written_pair_has_the_mode_open_would_give(tmp_path):
    """mkstemp's staging files are 0600: the int8 pair was unreadable to the group and others (the
    table and quantize's files were 0644). New files get 0666 minus the umask; a replaced one keeps its mode."""
    from deployer import fsutil
    from deployer.ncnn.verify import staged_pair

    param, bin_ = tmp_path / "m-int8.param", tmp_path / "m-int8.bin"
    bin_.write_bytes(b"old")
    bin_.chmod(0o640)
    with staged_pair(param, bin_) as (sparam, sbin):
        sparam.write_text("p")
        sbin.write_text("b")
    assert param.stat().st_mode & 0o777 == 0o666 & ~fsutil.umask()
    assert bin_.stat().st_mode & 0o777 == 0o640 and bin_.read_text() == "b"
