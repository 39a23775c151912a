"""Weight refinement (bias correction, learnt rounding): maths on synthetic layers, files ncnn loads."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.ncnn.param import Layer
from deployer.quant.adaround import optimise_rounding
from deployer.quant.arith import round_half_away
from deployer.quant.biascorr import bias_shift
from deployer.quant.layerdata import LayerData, _Acc, geometry, patches, quantize_activation


def _conv(params: dict, name: str = "c", type_: str = "Convolution") -> Layer:
    return Layer(type=type_, name=name, bottoms=["x"], tops=["y"], params=params)


def _direct_conv(x, w, stride, pad):
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, i, j] = np.tensordot(w, win, axes=([1, 2, 3], [0, 1, 2]))
    return out


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (1, 0)])
def test_patches_times_weights_is_the_convolution(stride, pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 8)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    layer = _conv({0: 4, 1: 3, 3: stride, 4: pad, 6: w.size})
    geo = geometry(layer)
    p = patches(x, geo)                                  # P, 1, K
    got = (p[:, 0] @ w.reshape(4, -1).T).T
    want = _direct_conv(x, w, stride, pad).reshape(4, -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    picked = patches(x, geo, np.array([0, 5, 7]))
    np.testing.assert_array_equal(picked, p[[0, 5, 7]])


def test_depthwise_patches_group_by_channel():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    layer = _conv({0: 2, 1: 3, 4: 1, 6: 18, 7: 2}, type_="ConvolutionDepthWise")
    p = patches(x, geometry(layer))
    assert p.shape == (16, 2, 9)
    assert p[5, 1].reshape(3, 3).tolist() == x[1, 0:3, 0:3].tolist()     # output (1, 1), channel 1


def _layer_data(x_patches: np.ndarray, scale: float, geo) -> LayerData:
    acc = _Acc(geo, scale)
    acc.add_patches(x_patches)
    return acc.result("c")


def test_bias_shift_removes_the_mean_output_error():
    rng = np.random.default_rng(1)
    k, o = 27, 6
    x = np.abs(rng.normal(1.0, 1.0, size=(4000, 1, k))).astype(np.float32)   # post-ReLU-like inputs
    w = rng.normal(0, 0.2, size=(1, o, k)).astype(np.float32)
    s = (127 / np.abs(w).max(-1)).astype(np.float32)
    a = (round_half_away(w * s[..., None]) / s[..., None]).astype(np.float32)
    scale = 127 / 3.0                               # clips the tail of x: a biased input error
    data = _layer_data(x, scale, geometry(_conv({0: o, 1: 3, 6: o * k})))
    xq = quantize_activation(x, scale)
    exact = x[:, 0] @ w[0].T
    int8 = xq[:, 0] @ a[0].T
    before = np.abs((int8 - exact).mean(0))
    after = np.abs((int8 + bias_shift(w, a, data)[0] - exact).mean(0))
    assert before.max() > 0.01
    assert after.max() < before.max() / 50


def test_learnt_rounding_beats_nearest_on_correlated_inputs():
    rng = np.random.default_rng(2)
    k, o, n = 32, 8, 3000
    base = rng.normal(size=(n, 4))
    x = (base @ rng.normal(size=(4, k)) + 0.1 * rng.normal(size=(n, k))).astype(np.float32)[:, None, :]
    w = rng.normal(0, 0.05, size=(1, o, k)).astype(np.float32)
    s = (15 / np.abs(w).max(-1)).astype(np.float32)          # a coarse grid makes rounding matter
    data = _layer_data(x, 127 / float(np.abs(x).max()), geometry(_conv({0: o, 1: 1, 6: o * k})))
    res = optimise_rounding(w, s, 15, data, iters=300)
    nearest = np.clip(round_half_away(w * s[..., None]), -15, 15)

    def out_err(codes):
        return float(np.mean((x[:, 0] @ (codes[0] / s[0][:, None]).T - x[:, 0] @ w[0].T) ** 2))

    assert res.improved
    assert np.all(np.abs(res.codes - w * s[..., None]) < 1 + 1e-6)        # floor or ceil only
    assert np.abs(res.codes).max() <= 15
    assert out_err(res.codes) < 0.7 * out_err(nearest)
