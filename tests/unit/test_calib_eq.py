"""EQ's numpy int8 building blocks against plain, slow references (exact integer maths)."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.ncnn.param import Layer
from deployer.quant.arith import quantize_f32 as quantize
from deployer.quant.arith import round_half_away_f32 as round_away
from deployer.quant.eq import _Geometry
from deployer.quant.weights import QuantLayer


def test_round_away_is_c_roundf_including_ties_and_near_ties():
    f32 = np.float32
    edge = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.0, -0.0, 127.0,
            np.nextafter(f32(0.5), f32(0)), np.nextafter(f32(0.5), f32(1)),
            np.nextafter(f32(2.5), f32(0)), np.nextafter(f32(-2.5), f32(0)), 1e-30]
    rng = np.random.default_rng(0)
    v = np.concatenate([np.array(edge, f32), rng.uniform(-127, 127, 100_000).astype(f32)])
    ref = np.array([np.floor(float(x) + 0.5) if x >= 0 else np.ceil(float(x) - 0.5) for x in v])
    np.testing.assert_array_equal(round_away(v), ref)


def test_quantize_clamps_and_multiplies_in_float32():
    x = np.array([1000.0, -1000.0, 0.1, 1.0 / 3.0], np.float32)
    s = np.float32(7.5)
    prod = [float(np.float32(xi * s)) for xi in x]                 # float32 product, then roundf
    ref = np.clip([np.floor(p + 0.5) if p >= 0 else np.ceil(p - 0.5) for p in prod], -127, 127)
    np.testing.assert_array_equal(quantize(x, s), ref)


def _layer(kind: str, params: dict, cin: int) -> tuple[QuantLayer, _Geometry]:
    layer = Layer(kind, "l", ["x"], ["y"], params)
    k = int(params.get(1, 1))
    nout = int(params[0])
    groups = int(params.get(7, 1))
    w = np.random.default_rng(1).standard_normal(nout * (cin // groups) * k * k).astype(np.float32)
    ql = QuantLayer(0, layer, w, None)
    return ql, _Geometry.of(ql, cin)


def _im2col_reference(x, kh, kw, sh, sw, pad):
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // sh + 1, (w + 2 * pad - kw) // sw + 1
    cols = np.zeros((c, kh * kw, oh * ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw]
            cols[:, :, i * ow + j] = patch.reshape(c, -1)
    return cols


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (2, 0)])
def test_depthwise_tap_sums_equal_im2col_products(stride, pad):
    ql, geo = _layer("ConvolutionDepthWise", {0: 6, 1: 3, 3: stride, 4: pad, 7: 6}, 6)
    rng = np.random.default_rng(2)
    x = rng.integers(-127, 128, (6, 11, 9)).astype(np.float32)
    qw = quantize(geo.weights(), np.float32(40))
    ref_cols = _im2col_reference(x, 3, 3, stride, stride, pad)                    # [C, 9, P]
    ref = np.einsum("ck,ckp->cp", qw.reshape(6, 9).astype(np.float64), ref_cols.astype(np.float64))
    np.testing.assert_array_equal(geo.depthwise_acc(x, qw), ref)
    np.testing.assert_array_equal(geo.columns(x), ref_cols)


def test_pointwise_columns_are_the_input_itself():
    ql, geo = _layer("Convolution", {0: 4, 1: 1, 5: 0}, 5)
    x = np.random.default_rng(3).integers(-127, 128, (5, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(geo.columns(x), _im2col_reference(x, 1, 1, 1, 1, 0).reshape(1, 5, 12))
    _, strided = _layer("Convolution", {0: 4, 1: 1, 3: 2}, 5)
    np.testing.assert_array_equal(strided.columns(x)[0], x[:, ::2, ::2].reshape(5, -1))


def test_a_signalled_process_group_leaves_no_worker_tracebacks() -> None:
    """`timeout`, a CI cancel or Ctrl-C signal the whole process group: each eq search worker,
    forked with the CLI's SIGTERM handler, printed a 20-line traceback above the one-line error."""
    import subprocess
    import sys

    code = ("import os, signal, time\n"
            "from deployer.cli.common import Terminated, install_signal_handlers\n"
            "from deployer.quant.eq import _LayerPool\n"
            "install_signal_handlers()\n"
            "try:\n"
            "    with _LayerPool(2) as lp:\n"
            "        for _ in range(2):\n"
            "            lp.pool.apply_async(time.sleep, (30,))\n"
            "        time.sleep(0.5)\n"
            "        os.killpg(0, signal.SIGTERM)\n"
            "        time.sleep(30)\n"
            "except Terminated:\n"
            "    time.sleep(0.5)\n"
            "    print('terminated')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         start_new_session=True)
    assert res.stdout == "terminated\n" and "Traceback" not in res.stderr, res.stderr
