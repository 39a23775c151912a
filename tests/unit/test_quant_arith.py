"""ncnn's arithmetic in one place (deployer.quant.arith), and the method classes built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.ncnn.param import Layer
from deployer.quant.arith import ConvGeometry, activation, layer_activation, quantize_f32, quantize_to_int8
from deployer.quant.methods import METHODS, EQMethod, KLMethod, LayerScales, get_method


def test_geometry_defaults_follow_ncnn_param_ids():
    g = ConvGeometry.of(Layer("Convolution", "c", ["x"], ["y"], {0: 8, 1: 3, 3: 2, 4: 1}))
    assert (g.kh, g.kw, g.dh, g.dw, g.sh, g.sw) == (3, 3, 1, 1, 2, 2)
    assert g.pads(10, 10) == (1, 1, 1, 1) and g.extent == (3, 3)
    g = ConvGeometry.of(Layer("Convolution", "c", ["x"], ["y"], {1: 3, 11: 5, 2: 2, 14: 2, 16: 0}))
    assert (g.kh, g.kw, g.dh, g.dw) == (5, 3, 2, 2) and g.extent == (9, 5)
    assert g.pads(7, 7) == (2, 0, 0, 0)


@pytest.mark.parametrize("mode", [-233, -234])
def test_same_padding_gives_ceil_of_input_over_stride(mode):
    """SAME: output = ceil(size / stride), the extra pad on the bottom/right (-233) or top/left (-234)."""
    for k in (1, 2, 3, 5):
        for s in (1, 2, 3):
            for d in (1, 2):
                g = ConvGeometry(k, k, d, d, s, s, mode, mode, mode, mode)
                for size in range(1, 20):
                    top, bottom, left, right = g.pads(size, size + 1)
                    assert g.out_size(size + top + bottom, size + 1 + left + right) == (
                        math.ceil(size / s), math.ceil((size + 1) / s))
                    assert bottom - top in ((0, 1) if mode == -233 else (0, -1))


def test_windows_are_the_strided_dilated_taps():
    x = np.arange(2 * 7 * 9, dtype=np.float32).reshape(2, 7, 9)
    g = ConvGeometry(3, 2, 2, 1, 2, 3, 0, 0, 0, 0)
    win = g.windows(x)
    oh, ow = g.out_size(7, 9)
    assert win.shape == (2, oh, ow, 3, 2)
    for i in range(oh):
        for j in range(ow):
            for a in range(3):
                for b in range(2):
                    assert win[1, i, j, a, b] == x[1, i * 2 + a * 2, j * 3 + b]


def test_float_codes_equal_int8_codes():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=50_000) * 40).astype(np.float32)
    x[:6] = [0.5, -0.5, 1.5, -2.5, 126.5, 1000.0]
    for scale in (np.float32(1.0), np.float32(0.37), np.float32(3.1)):
        np.testing.assert_array_equal(quantize_f32(x, scale), quantize_to_int8(x, scale).astype(np.float32))


def test_activation_types_and_params():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(activation(x, 1, []), [0, 0, 0, 0.5, 3])
    np.testing.assert_allclose(activation(x, 2, [0.1]), [-0.3, -0.05, 0, 0.5, 3], rtol=1e-6)
    np.testing.assert_array_equal(activation(x, 3, [0.0, 1.0]), [0, 0, 0, 0.5, 1])
    np.testing.assert_allclose(activation(x, 6, [1 / 6, 0.5]), x * np.clip(x + 3, 0, 6) / 6, rtol=1e-6)
    assert layer_activation(Layer("Convolution", "c", [], [], {9: 3, 10: [0.0, 6.0]})) == (3, [0.0, 6.0])
    with pytest.raises(DeployerError, match="activation_type 9 is not supported"):
        activation(x, 9, [])


def test_eq_is_a_method_class_like_the_others():
    assert isinstance(get_method("eq"), EQMethod) and isinstance(get_method("eq"), KLMethod)
    assert set(METHODS) == {"kl", "aciq", "eq", "maxabs", "percentile", "mse", "seq"}
    start = [LayerScales("c", np.ones(2, np.float32), 1.0, 2.0, 3.0)]
    for name in ("kl", "aciq", "maxabs", "percentile", "mse"):
        assert get_method(name).refine(None, None, start) is start     # statistics-only: done
