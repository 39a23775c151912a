"""Weight-scale rules and the activation methods (ACIQ constants, maxabs, percentile, mse)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.ncnn.param import parse_param
from deployer.quant.collect import ActivationStats, histogram
from deployer.quant.methods import (ACIQMethod, MaxAbsMethod, MSEMethod, PercentileMethod,
                                    get_method)
from deployer.quant.weights import QuantLayer, aciq_gaussian_clip, weight_scales

f32 = np.float32


def _layer(line: str, weight: np.ndarray) -> QuantLayer:
    g = parse_param(f"7767517\n2 2\nInput in 0 1 x\n{line}\n")
    return QuantLayer(1, g.layers[1], weight.astype(np.float32), None)


def _spec_aciq(absmax: float, n: int, bits: int) -> float:
    """ACIQ exactly as ncnn-int8.md §2.6 writes it (alpha table rounded to float like the C array)."""
    alpha = [0, 1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474, 3.6151146, 3.92403714]
    gaussian_const = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))
    std = (absmax * 2 * gaussian_const) / math.sqrt(2 * math.log(n))
    return float(f32(float(f32(alpha[bits - 1])) * std))


def test_aciq_constants_follow_the_spec():
    for absmax, n, bits in ((1.0, 1000, 8), (6.0, 150528, 8), (0.37, 27, 6), (2.5, 9, 6)):
        assert float(aciq_gaussian_clip(absmax, n, bits)) == _spec_aciq(absmax, n, bits)
    # bits=8 uses alpha 3.92403714, bits=6 uses 3.28691474
    ratio = float(aciq_gaussian_clip(1.0, 100, 8)) / float(aciq_gaussian_clip(1.0, 100, 6))
    assert ratio == pytest.approx(3.92403714 / 3.28691474, rel=1e-6)


def test_six_bit_rule_for_3x3_stride1_dilation1_conv_only():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(4 * 2 * 9).astype(np.float32)
    absmax = np.abs(w.reshape(4, -1)).max(axis=1)
    s1 = _layer("Convolution c 1 1 x y 0=4 1=3 6=72", w)
    s2 = _layer("Convolution c 1 1 x y 0=4 1=3 3=2 6=72", w)
    d2 = _layer("Convolution c 1 1 x y 0=4 1=3 2=2 6=72", w)
    k13 = _layer("Convolution c 1 1 x y 0=4 1=1 11=9 6=72", w)
    assert s1.is_6bit and not s2.is_6bit and not d2.is_6bit and not k13.is_6bit
    np.testing.assert_array_equal(weight_scales(s1).scales, f32(31) / absmax)
    np.testing.assert_array_equal(weight_scales(s2).scales, f32(127) / absmax)
    aciq = weight_scales(s1, "aciq").scales
    expect = [f32(31) / f32(_spec_aciq(float(a), 18, 6)) for a in absmax]
    np.testing.assert_array_equal(aciq, np.array(expect, np.float32))


def test_depthwise_scales_are_per_group_and_fc_per_output():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(6 * 9).astype(np.float32)
    dw = _layer("ConvolutionDepthWise d 1 1 x y 0=6 1=3 6=54 7=6", w)
    ws = weight_scales(dw).scales
    assert ws.shape == (6,)       # dw 3x3 s1 is NOT 6-bit in ncnn2table
    np.testing.assert_array_equal(ws, f32(127) / np.abs(w.reshape(6, 9)).max(axis=1))
    fc = _layer("InnerProduct f 1 1 x y 0=3 1=0 2=54", w)
    np.testing.assert_array_equal(weight_scales(fc).scales, f32(127) / np.abs(w.reshape(3, 18)).max(axis=1))


def test_zero_weight_channel_is_guarded_and_reported():
    w = np.ones(3 * 4, np.float32)
    w[4:8] = 0
    ql = _layer("Convolution c 1 1 x y 0=3 1=2 11=2 6=12", w)
    ws = weight_scales(ql)
    assert ws.zero_channels == [1]
    assert ws.scales[1] == 1 and np.all(np.isfinite(ws.scales))


def _stats(values: list[np.ndarray]) -> ActivationStats:
    absmax = np.array([np.abs(v).max() for v in values], np.float32)
    hist = np.zeros((len(values), 2048), np.uint64)
    for i, v in enumerate(values):
        histogram(np.abs(v).astype(np.float32), absmax[i], hist[i])
    return ActivationStats([f"b{i}" for i in range(len(values))], absmax, hist,
                           np.array([v.size for v in values]), 1)


def test_aciq_activation_uses_blob_element_count():
    v = np.random.default_rng(2).standard_normal(4096).astype(np.float32)
    st = _stats([v])
    assert ACIQMethod().thresholds(st)[0] == f32(_spec_aciq(float(st.absmax[0]), 4096, 8))


def test_maxabs_and_percentile():
    rng = np.random.default_rng(3)
    v = np.abs(rng.standard_normal(100_000)).astype(np.float32)
    v[0] = 50.0                                          # one outlier
    st = _stats([v])
    assert MaxAbsMethod().thresholds(st)[0] == f32(50.0)
    p = PercentileMethod(99.0).thresholds(st)[0]
    true = np.percentile(v, 99.0)
    assert true <= p <= true + 50.0 / 2048 + 1e-6        # upper edge of the bin reaching 99 %
    assert PercentileMethod(100).thresholds(st)[0] == pytest.approx(50.0)
    with pytest.raises(DeployerError, match="percentile"):
        PercentileMethod(0)


def test_mse_clips_outliers_but_not_a_uniform_distribution():
    rng = np.random.default_rng(4)
    gauss = np.abs(rng.standard_normal(200_000)).astype(np.float32)
    gauss[:3] = 12.0                                     # rare outliers: clipping them is cheap
    uniform = rng.uniform(0, 1, 200_000).astype(np.float32)
    th = MSEMethod().thresholds(_stats([gauss, uniform]))
    assert th[0] < 10.0
    assert th[1] > 0.95


def test_mse_minimises_the_quantization_error_it_models():
    """The chosen threshold beats its neighbours on a direct int8 round-trip MSE of the data."""
    rng = np.random.default_rng(5)
    v = np.abs(rng.laplace(size=100_000)).astype(np.float32)
    th = float(MSEMethod().thresholds(_stats([v]))[0])

    def mse(t):
        s = 127 / t
        q = np.clip(np.round(v * s), 0, 127) / s
        return float(np.mean((q - v) ** 2))

    assert mse(th) <= min(mse(th * 0.7), mse(th * 1.4), mse(float(v.max())))


def test_unknown_method():
    with pytest.raises(DeployerError, match="method=foo"):
        get_method("foo")
