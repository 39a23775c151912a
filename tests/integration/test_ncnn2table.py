"""`deployer ncnn2table` end to end with the real ncnn wheel on hand-written and real models.

References are computed here independently: blobs extracted with the stock ncnn wheel, absmax and
histograms by ncnn's per-element formula, weights from the numpy arrays the fixture wrote.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import ncnn
import numpy as np
import pytest
from PIL import Image

from deployer.quant.methods import kl_threshold_bin
from deployer.quant.table import read_table
from tests.fixtures.calib import two_input_model, write_images, write_npys
# Fixtures, until tests/fixtures/calib.py is registered in tests/conftest.py (harmless after).
from tests.fixtures.calib import calib_images, calib_tiny  # noqa: F401

f32 = np.float32
MEAN = "[104,117,123]"
NORM = "[0.017,0.017,0.017]"
IMG_OPTS = [f"mean={MEAN}", f"norm={NORM}", "shape=[16,16,3]", "pixel=BGR"]


def deployer(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("deployer")
    proc = subprocess.run([str(exe), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _net(param, binp):
    net = ncnn.Net()
    for k in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
        setattr(net.opt, k, False)
    net.opt.lightmode = False
    net.opt.num_threads = 1
    net.load_param(str(param))
    net.load_model(str(binp))
    return net


def _reference_stats(model, list_file, blobs_by_layer):
    """absmax / histogram / element count per conv input, ncnn2table's way, loop by loop."""
    net = _net(model.param, model.bin)
    files = Path(list_file).read_text().split()
    values = {name: [] for name in blobs_by_layer}
    for f in files:
        bgr = np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1])
        mat = ncnn.Mat.from_pixels_resize(bgr, ncnn.Mat.PixelType.PIXEL_BGR, bgr.shape[1], bgr.shape[0], 16, 16)
        mat.substract_mean_normalize([104.0, 117.0, 123.0], [0.017] * 3)
        ex = net.create_extractor()
        ex.input("data", mat)
        for name, blob in blobs_by_layer.items():
            _, out = ex.extract(blob)
            values[name].append(np.array(out, dtype=np.float32).reshape(-1))
    stats = {}
    for name, vs in values.items():
        absmax = f32(max(float(np.abs(v).max()) for v in vs))
        hist = np.zeros(2048, np.uint64)
        for v in vs:
            a = np.abs(v[v != 0]).astype(np.float32)
            idx = np.minimum((a / absmax * f32(2048)).astype(np.float32).astype(np.int64), 2047)
            np.add.at(hist, idx, 1)
        stats[name] = (absmax, hist, vs[-1].size)
    return stats


def _weight_scales(conv):
    w = conv["weight"].reshape(conv["groups"], -1)
    absmax = np.abs(w).max(axis=1).astype(np.float32)
    return (f32(31) if conv["six_bit"] else f32(127)) / absmax


BLOBS = {"conv1": "data", "conv2": "c1", "dw1": "c2", "conv4": "d1", "fc": "p"}


@pytest.fixture(scope="module")
def reference(calib_tiny, calib_images):
    return _reference_stats(calib_tiny, calib_images, BLOBS)


def test_kl_table_matches_ncnn2table_rules(tmp_path, calib_tiny, calib_images, reference):
    out = tmp_path / "kl.table"
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, out, *IMG_OPTS, "thread=1")
    text = out.read_text()
    lines = text.split("\n")
    # ncnn2table order: all weight lines, then all activation lines, in param order
    assert [ln.split(" ")[0] for ln in lines if ln] == [f"{n}_param_0" for n in BLOBS] + list(BLOBS)
    assert all(ln.endswith(" ") for ln in lines if ln) and text.endswith(" \n")
    table = read_table(out)
    for name, conv in calib_tiny.convs.items():
        expect = _weight_scales(conv)
        assert table.weight_scales(name) == [float("%f" % v) for v in expect]
        absmax, hist, _ = reference[name]
        tb = kl_threshold_bin(hist)
        th = (f32(tb) + f32(0.5)) * absmax / f32(2048)
        assert table.activation_scale(name) == pytest.approx(float(f32(127) / th), rel=1e-6)


def test_aciq_table_fully_independent(tmp_path, calib_tiny, calib_images, reference):
    out = tmp_path / "aciq.table"
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, out, *IMG_OPTS, "method=aciq")
    table = read_table(out)
    gauss = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))

    def clip(absmax, n, alpha):
        return f32(float(f32(alpha)) * (float(absmax) * 2 * gauss) / math.sqrt(2 * math.log(n)))

    for name, conv in calib_tiny.convs.items():
        absmax, _, total = reference[name]
        assert table.activation_scale(name) == pytest.approx(float(f32(127) / clip(absmax, total, 3.92403714)),
                                                             rel=1e-6)
        w = conv["weight"].reshape(conv["groups"], -1)
        alpha, levels = (3.28691474, 31) if conv["six_bit"] else (3.92403714, 127)
        expect = [f32(levels) / clip(a, w.shape[1], alpha) for a in np.abs(w).max(axis=1)]
        assert table.weight_scales(name) == pytest.approx([float(v) for v in expect], rel=1e-6)


def test_two_workers_and_two_passes_give_the_same_table(tmp_path, calib_tiny, calib_images):
    a, b = tmp_path / "t1.table", tmp_path / "t2.table"
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, a, *IMG_OPTS, "thread=1")
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, b, *IMG_OPTS, "thread=2")
    assert a.read_bytes() == b.read_bytes()

    from deployer.inputs.spec import InputSpec
    from deployer.quant.calibration import Calibrator
    from deployer.quant.ncnn2table import read_lists
    from deployer.quant.weights import load_model

    model = load_model(calib_tiny.param, calib_tiny.bin)
    spec = InputSpec((16, 16, 3), pixel="BGR", mean=(104.0, 117.0, 123.0), norm=(0.017,) * 3, file_type="image")
    inputs = read_lists([calib_images])
    one = Calibrator(model, [spec], inputs, threads=2).stats()
    two = Calibrator(model, [spec], inputs, threads=2, memory_budget=0).stats()
    assert two.two_pass and not one.two_pass
    assert np.array_equal(one.histograms, two.histograms) and np.array_equal(one.absmax, two.absmax)


def test_interrupted_calibration_ends_its_workers_at_once(calib_tiny, calib_images):
    """Each forked worker held a copy of its own pipe's parent end, so none saw an interrupted parent
    close it: SIGTERM took 5 s per worker to act (10 s with thread=2, past docker's grace period)."""
    import multiprocessing
    import time

    from deployer.inputs.spec import InputSpec
    from deployer.quant.calibration import Calibrator
    from deployer.quant.ncnn2table import read_lists
    from deployer.quant.weights import load_model

    model = load_model(calib_tiny.param, calib_tiny.bin)
    spec = InputSpec((16, 16, 3), pixel="BGR", mean=(104.0, 117.0, 123.0), norm=(0.017,) * 3, file_type="image")

    def interrupt(phase: str, done: int, total: int) -> None:
        raise KeyboardInterrupt            # Ctrl-C / SIGTERM in the parent, the workers mid-pass

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        Calibrator(model, [spec], read_lists([calib_images]), threads=2, memory_budget=0).stats(progress=interrupt)
    assert time.monotonic() - t0 < 4 and multiprocessing.active_children() == []


def test_npy_inputs_in_ncnn_whc_order(tmp_path, calib_tiny):
    lst = write_npys(tmp_path / "npy", 6, (3, 16, 16))
    out = tmp_path / "npy.table"
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, lst, out, "shape=[16,16,3]", "type=1")
    table = read_table(out)
    assert len(table.activations) == 5
    # reference for the first layer: absmax of the raw arrays
    first = max(float(np.abs(np.load(p)).max()) for p in lst.read_text().split())
    absmax = f32(first)
    # same weight lines as the image run (weights do not depend on data)
    expect = _weight_scales(calib_tiny.convs["conv1"])
    assert table.weight_scales("conv1") == [float("%f" % v) for v in expect]
    assert table.activation_scale("conv1") >= 127 / float(absmax) - 1e-6     # KL never clips above absmax

    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, lst, tmp_path / "bad.table",
                    "shape=[3,16,16]", "type=1", check=False)
    assert proc.returncode == 2
    assert "x000.npy" in proc.stderr and "does not match shape=[3, 16, 16]" in proc.stderr
    assert not (tmp_path / "bad.table").exists()


def test_multi_input_lists(tmp_path):
    model = two_input_model(tmp_path / "m")
    la = write_images(tmp_path / "a", 5, seed=1)
    lb = write_images(tmp_path / "b", 5, seed=2, gray=True)
    out = tmp_path / "two.table"
    deployer("ncnn2table", model.param, model.bin, f"{la},{lb}", out, "mean=[0,0,0],[0]",
             "norm=[0.0039,0.0039,0.0039],[0.0039]", "shape=[16,16,3],[12,12]", "pixel=RGB,GRAY")
    table = read_table(out)
    assert list(table.activations) == ["ca", "cb", "fc"]
    assert len(table.weight_scales("cb")) == 8 and len(table.weight_scales("fc")) == 4
    # the gray input: values in [0, 255*0.0039], so ca/cb scales differ and are finite
    assert all(np.isfinite(table.activation_scale(n)) for n in ("ca", "cb", "fc"))

    proc = deployer("ncnn2table", model.param, model.bin, str(la), tmp_path / "x.table",
                    "mean=[0,0,0]", "norm=[1,1,1]", "shape=[16,16,3]", "pixel=RGB", check=False)
    assert proc.returncode == 2 and "2 input(s) but 1 list file(s)" in proc.stderr


def test_bad_inputs_exit_2_with_one_line_and_no_table(tmp_path, calib_tiny, calib_images):
    files = calib_images.read_text().split()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(files[:3] + [str(corrupt)] + files[3:6]) + "\n")
    out = tmp_path / "t.table"
    for extra in ([], ["thread=2"]):
        proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, lst, out, *IMG_OPTS, *extra, check=False)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert "\n" not in err and "Traceback" not in err
        assert f"{lst}:4" in err and "corrupt.jpg: cannot decode image" in err
        assert not out.exists()

    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, out,
                    f"mean={MEAN}", f"norm={NORM}", "shape=[16,16,3]", "pxel=BGR", check=False)
    assert proc.returncode == 2 and "unknown option pxel=, did you mean pixel=" in proc.stderr

    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, out, *IMG_OPTS,
                    "--json", check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"]


def test_weight_only_table(tmp_path, calib_tiny):
    out = tmp_path / "w.table"
    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, out, "method=kl", "--json")
    res = json.loads(proc.stdout)
    assert res["weight_only"] and "weight-only" in res["warnings"][0]
    assert out.read_bytes() == b""          # ncnn2table writes no conv lines without data


def test_zero_weight_channel_is_reported(tmp_path, calib_images):
    from tests.fixtures.calib import tiny_model

    model = tiny_model(tmp_path / "z", zero_channel=2)
    out = tmp_path / "z.table"
    proc = deployer("ncnn2table", model.param, model.bin, calib_images, out, *IMG_OPTS, "--json")
    res = json.loads(proc.stdout)
    assert any("conv1" in w and "all-zero" in w for w in res["warnings"])
    assert read_table(out).weight_scales("conv1")[2] == 1.0


def test_formats_and_long_numbers_ncnn_would_misread_are_decoded_with_one_warning(tmp_path, calib_tiny):
    from PIL import Image

    rng = np.random.default_rng(5)
    png_list, tif_list = tmp_path / "png.txt", tmp_path / "tif.txt"
    pngs, tifs = [], []
    for i in range(3):
        img = Image.fromarray(rng.integers(0, 256, (20, 18, 3)).astype(np.uint8))
        img.save(tmp_path / f"{i}.png")
        img.save(tmp_path / f"{i}.tif")
        pngs.append(str(tmp_path / f"{i}.png"))
        tifs.append(str(tmp_path / f"{i}.tif"))
    png_list.write_text("\n".join(pngs) + "\n")
    tif_list.write_text("\n".join(tifs) + "\n")
    long_norm = "norm=[0.0170000000000000001,0.017,0.017]"          # 25 characters, == 0.017
    opts = [f"mean={MEAN}", long_norm, "shape=[16,16,3]", "pixel=BGR"]
    res_png = json.loads(deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, png_list,
                                  tmp_path / "png.table", *opts, "--json").stdout)
    res_tif = json.loads(deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, tif_list,
                                  tmp_path / "tif.table", *opts, "--json").stdout)
    assert (tmp_path / "png.table").read_bytes() == (tmp_path / "tif.table").read_bytes()
    ref = tmp_path / "ref.table"                     # the full value was used: same as plain 0.017
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, png_list, ref, *IMG_OPTS)
    assert ref.read_bytes() == (tmp_path / "png.table").read_bytes()
    for res in (res_png, res_tif):
        assert sum("0.0170000000000000001" in w and "ncnn2table" in w for w in res["warnings"]) == 1
    stb = [w for w in res_tif["warnings"] if "stb_image" in w]
    assert len(stb) == 1 and stb[0].startswith("3 image(s)")
    assert not any("stb_image" in w for w in res_png["warnings"])
    # the plain (non --json) output shows the warning on one line of stderr
    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, tif_list, tmp_path / "t2.table", *opts)
    assert proc.stderr.count("stb_image") == 1


@pytest.mark.parametrize("method", ["maxabs", "percentile", "mse"])
def test_extra_methods_end_to_end(tmp_path, calib_tiny, calib_images, reference, method):
    out = tmp_path / f"{method}.table"
    extra = ["percentile=99.9"] if method == "percentile" else []
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, out, *IMG_OPTS,
             f"method={method}", *extra)
    table = read_table(out)
    for name in BLOBS:
        absmax = float(reference[name][0])
        s = table.activation_scale(name)
        assert s >= 127 / absmax * (1 - 1e-6)          # never clips above the observed absmax
        if method == "maxabs":
            assert s == pytest.approx(127 / absmax, rel=1e-6)


def test_eq_searches_within_its_range(tmp_path, calib_tiny, calib_images):
    kl, eq = tmp_path / "kl.table", tmp_path / "eq.table"
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, kl, *IMG_OPTS)
    deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, calib_images, eq, *IMG_OPTS, "method=eq")
    a, b = read_table(kl), read_table(eq)
    assert a.order == b.order
    for key in a.weights:
        for s0, s1 in zip(a.weights[key], b.weights[key]):
            assert 0.5 * s0 * (1 - 1e-5) <= s1 < 2.0 * s0
    for key in a.activations:
        assert 0.5 * a.activations[key][0] * (1 - 1e-5) <= b.activations[key][0] < 2.0 * a.activations[key][0]
    assert a.weights != b.weights                   # it searched something


@pytest.mark.slow
def test_mtcnn_rnet_real_faces(tmp_path, mtcnn_rnet, lfw_calibration):
    from deployer.ncnn.param import read_param

    out = tmp_path / "rnet.table"
    pre = mtcnn_rnet.preprocess
    c, h, w = mtcnn_rnet.input_shape
    deployer("ncnn2table", mtcnn_rnet.param, mtcnn_rnet.bin, lfw_calibration.list_file, out,
             "mean=[" + ",".join(map(str, pre.mean)) + "]", "norm=[" + ",".join(map(str, pre.norm)) + "]",
             f"shape=[{w},{h},{c}]", f"pixel={pre.pixel}", "thread=2")
    table = read_table(out)
    graph = read_param(mtcnn_rnet.param)
    convs = [lay for lay in graph.layers if lay.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct")]
    assert list(table.activations) == [lay.name for lay in convs]
    for lay in convs:
        n = lay.get(7, 1) if lay.type == "ConvolutionDepthWise" else lay.get(0, 0)
        assert len(table.weight_scales(lay.name)) == n
        assert all(np.isfinite(v) and v > 0 for v in table.weight_scales(lay.name))
        assert np.isfinite(table.activation_scale(lay.name)) and table.activation_scale(lay.name) > 0


@pytest.mark.slow
def test_mobilenet_v2_real_photos(tmp_path, mobilenet_v2, calib_photos):
    out = tmp_path / "mnv2.table"
    pre = mobilenet_v2.preprocess
    proc = deployer("ncnn2table", mobilenet_v2.param, mobilenet_v2.bin, calib_photos.list_file, out,
                    "mean=[" + ",".join(map(str, pre.mean)) + "]", "norm=[" + ",".join(map(str, pre.norm)) + "]",
                    "shape=[224,224,3]", f"pixel={pre.pixel}", "thread=2", "--json")
    res = json.loads(proc.stdout)
    table = read_table(out)
    assert len(table.activations) == len(res["layers"]) == 53
    assert len(table.weights) == 53
    # activation thresholds are clipped below absmax for most layers (KL clips outliers)
    assert sum(ls["threshold"] < ls["absmax"] for ls in res["layers"]) > 40


def _single_layer_int8(tmp_path, model, name, in_shape, s_w, s_in):
    """A one-layer ncnn model whose layer runs in int8 (fp32 weights + scales: ncnn quantizes at load)."""
    src = next(ln for ln in model.param.read_text().splitlines() if ln.split()[1:2] == [name])
    tok = src.split()
    c, h, w = in_shape
    line = " ".join([tok[0], name, "1 1 x y"] + tok[6:] + ["8=1"])
    param = tmp_path / f"{name}.param"
    param.write_text(f"7767517\n2 2\nInput x 0 1 x 0={w} 1={h} 2={c}\n{line}\n")
    conv = model.convs[name]
    nout = int(next(t for t in tok if t.startswith("0="))[2:])
    full = np.frombuffer(model.bin.read_bytes(), np.float32)
    # locate this layer's blob in the fixture .bin: tag + weight + bias per layer, in order
    off = 0
    for other, cv in model.convs.items():
        n_w, n_b = cv["weight"].size, int(cv["groups"]) if cv["type"] != "ConvolutionDepthWise" else int(cv["groups"])
        if other == name:
            bias = full[off + 1 + n_w: off + 1 + n_w + nout]
            break
        off += 1 + n_w + n_b
    body = (np.uint32(0).tobytes() + conv["weight"].astype(np.float32).tobytes() + bias.tobytes()
            + np.asarray(s_w, np.float32).tobytes() + np.float32(s_in).tobytes())
    binp = tmp_path / f"{name}.bin"
    binp.write_bytes(body)
    return param, binp


@pytest.mark.parametrize("name", ["conv1", "conv2", "dw1", "conv4", "fc"])
def test_eq_int8_simulation_equals_ncnn_int8_layer(tmp_path, calib_tiny, calib_images, reference, name):
    """The numpy int8 layer EQ scores candidates with computes what ncnn's int8 layer computes.

    Packing off, like ncnn2table's EQ (`opt_int8.use_packing_layout = false`); with packing on, the
    x86 pack-8 depthwise int8 kernel's output is not an exact dequantized integer sum.
    """
    from deployer.quant.eq import _LayerSearch
    from deployer.quant.weights import load_model, weight_scales

    model = load_model(calib_tiny.param, calib_tiny.bin)
    ql = next(q for q in model.quant_layers if q.name == name)
    s_w = weight_scales(ql).scales
    s_in = f32(127) / reference[name][0]
    net = _net(calib_tiny.param, calib_tiny.bin)
    files = Path(calib_images).read_text().split()[:3]
    for f in files:
        bgr = np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1])
        mat = ncnn.Mat.from_pixels_resize(bgr, ncnn.Mat.PixelType.PIXEL_BGR, bgr.shape[1], bgr.shape[0], 16, 16)
        mat.substract_mean_normalize([104.0, 117.0, 123.0], [0.017] * 3)
        ex = net.create_extractor()
        ex.input("data", mat)
        x = np.array(ex.extract(ql.bottom)[1], dtype=np.float32)
        y = np.array(ex.extract(ql.top)[1], dtype=np.float32)
        x3 = x.reshape((1,) * (3 - x.ndim) + x.shape) if x.ndim < 3 else x
        search = _LayerSearch(ql, [x3 if ql.type != "InnerProduct" else x], [y])
        sim = search.output(search.columns(s_in), search._qw(s_w), s_in, s_w)[0].reshape(-1)

        param, binp = _single_layer_int8(tmp_path, calib_tiny, name, x3.shape, s_w, s_in)
        one = ncnn.Net()
        for k in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_packing_layout"):
            setattr(one.opt, k, False)
        one.load_param(str(param))
        one.load_model(str(binp))
        e1 = one.create_extractor()
        e1.input("x", ncnn.Mat(np.ascontiguousarray(x3)).clone())
        got = np.array(e1.extract("y")[1], dtype=np.float32).reshape(-1)
        np.testing.assert_allclose(sim, got, rtol=1e-5, atol=1e-5 * float(np.abs(got).max()))
        # and int8 really differs from fp32 (the test would be empty otherwise)
        assert not np.allclose(got, y.reshape(-1), rtol=1e-6, atol=0)


def test_unresized_images_of_different_sizes(tmp_path, calib_tiny, calib_images):
    """shape=[0,0] keeps each image's own size (the fully-convolutional+gap model accepts any):
    blob sizes vary per input, so statistics come from two passes; workers agree with one process."""
    from deployer.inputs.spec import InputSpec
    from deployer.quant.calibration import Calibrator
    from deployer.quant.ncnn2table import read_lists
    from deployer.quant.weights import load_model

    model = load_model(calib_tiny.param, calib_tiny.bin)
    spec = InputSpec((0, 0, 3), pixel="BGR", mean=(104.0, 117.0, 123.0), norm=(0.017,) * 3, file_type="image")
    inputs = read_lists([calib_images])
    one = Calibrator(model, [spec], inputs, threads=1).stats()
    two = Calibrator(model, [spec], inputs, threads=2).stats()
    assert one.two_pass and two.two_pass
    assert np.array_equal(one.histograms, two.histograms) and np.array_equal(one.absmax, two.absmax)
    sizes = {Image.open(f).size for f in Path(calib_images).read_text().split()}
    assert len(sizes) > 1


def test_forgotten_table_argument_does_not_overwrite_the_list(tmp_path, calib_tiny, calib_images):
    lst = tmp_path / "list.txt"
    lst.write_text(Path(calib_images).read_text())
    before = lst.read_bytes()
    proc = deployer("ncnn2table", calib_tiny.param, calib_tiny.bin, lst, "method=kl", check=False)
    assert proc.returncode == 2 and "looks like a list of input files" in proc.stderr
    assert lst.read_bytes() == before


def test_weight_only_table_for_static_layers(tmp_path):
    """LSTM and Embed get weight-only lines (absmax per row / whole table), Embed first as in ncnn."""
    import struct

    rng = np.random.default_rng(4)
    size, hidden = 6, 5
    xc = rng.standard_normal(size * 4 * hidden).astype(np.float32)
    bc = rng.standard_normal(4 * hidden).astype(np.float32)
    hc = rng.standard_normal(hidden * 4 * hidden).astype(np.float32)
    hc[:hidden] = 0                                        # row 0 of weight_hc all zero -> scale 1
    emb = rng.standard_normal(10 * size).astype(np.float32)
    param = tmp_path / "s.param"
    param.write_text("7767517\n4 4\nInput in 0 1 ids 0=3\n"
                     f"Embed emb 1 1 ids e 0={size} 1=10 2=0 3={emb.size}\n"
                     f"LSTM lstm 1 1 e h 0={hidden} 1={xc.size} 2=0\n"
                     f"Convolution conv 1 1 h out 0=2 1=1 5=0 6={2 * hidden}\n")
    tag = struct.pack("<I", 0)
    conv_w = rng.standard_normal(2 * hidden).astype(np.float32)
    (tmp_path / "s.bin").write_bytes(tag + emb.tobytes() + tag + xc.tobytes() + tag + bc.tobytes()
                                     + tag + hc.tobytes() + tag + conv_w.tobytes())
    out = tmp_path / "s.table"
    deployer("ncnn2table", param, tmp_path / "s.bin", out, "method=kl")
    table = read_table(out)
    assert table.order == ["emb_param_0", "lstm_param_0", "lstm_param_1"]   # no conv lines without data
    assert table.weight_scales("emb") == pytest.approx([127 / float(np.abs(emb).max())], rel=1e-6)
    rows_xc = np.abs(xc.reshape(4 * hidden, size)).max(axis=1)
    assert table.weight_scales("lstm", 0) == pytest.approx(list(127 / rows_xc), rel=1e-6)
    hc_scales = table.weight_scales("lstm", 1)
    assert len(hc_scales) == 4 * hidden and hc_scales[0] == 1.0


def test_quantize_method_eq_runs_the_search_not_just_its_kl_start(tmp_path, mtcnn_rnet, lfw_calibration):
    """`deployer quantize --method eq` writes EQ's searched scales; KL (its start) differs, and every
    searched scale stays in EQ's documented range scale * [0.5, 2) around KL's."""
    from deployer.profile import load_profile
    from deployer.quant.pipeline import run_quantize
    from tests.fixtures.quantize import write_profile

    tables = {}
    for method in ("kl", "eq"):
        profile = write_profile(tmp_path / method, mtcnn_rnet, lfw_calibration.list_file, tmp_path / method / "out",
                                gate=[])
        prof = load_profile(profile)
        # deployer/profile.py does not list "eq" among its methods yet: set it past the validation
        prof.quantize.method = method
        result = run_quantize(prof)
        assert result.report["method"] == method
        tables[method] = read_table(result.paths.table)
    kl, eq = tables["kl"], tables["eq"]
    assert kl.order == eq.order
    moved = 0
    for key in kl.weights:
        for s0, s1 in zip(kl.weights[key], eq.weights[key]):
            assert 0.5 * s0 * (1 - 1e-6) <= s1 < 2.0 * s0
            moved += s0 != s1
    for key in kl.activations:
        s0, s1 = kl.activations[key][0], eq.activations[key][0]
        assert 0.5 * s0 * (1 - 1e-6) <= s1 < 2.0 * s0
    assert moved > 0
