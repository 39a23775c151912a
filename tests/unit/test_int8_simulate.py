"""The numpy int8 simulation on hand-sized cases whose answers follow from ncnn's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.errors import DeployerError
from deployer.ncnn.model import NcnnModel
from deployer.ncnn.modelbin import Weight
from deployer.ncnn.param import parse_param
from deployer.quant.simulate import simulate


def model_of(text: str, weights: dict[str, list[tuple[str, list, str, bool]]]) -> NcnnModel:
    graph = parse_param("7767517\n" + text)
    return NcnnModel(graph=graph, weights={
        name: [Weight(n, np.asarray(d, dtype=np.int8 if s == "int8" else np.float32), s, t) for n, d, s, t in ws]
        for name, ws in weights.items()})


def test_int8_conv_dequantizes_acc_over_both_scales_plus_bias() -> None:
    # 1x1 conv, 1 in / 1 out channel: q_in = round(x*s_in); y = acc / (s_in*s_w) + bias, then ReLU
    m = model_of("2 2\nInput in 0 1 x 0=3 1=1 2=1\nConvolution c 1 1 x y 0=1 1=1 5=1 6=1 8=2 9=1\n", {
        "c": [("weight", [50], "int8", True), ("bias", [0.25], "raw", False),
              ("weight_scales", [100.0], "raw", False), ("bottom_scales", [10.0], "raw", False)]})
    x = np.array([[[0.25, -0.04, 0.35]]], np.float32)        # codes 3 (2.5 rounds away), -0, 4 (3.5 -> 4)
    y = simulate(m, {"x": x})["y"]
    expect = np.maximum(np.array([3, 0, 4]) * 50 / 1000.0 + 0.25, 0)
    assert np.allclose(y.reshape(-1), expect, rtol=1e-6)


def test_requantized_output_is_int8_codes_with_the_top_scale() -> None:
    m = model_of("3 3\nInput in 0 1 x 0=2 1=1 2=1\n"
                 "Convolution c 1 1 x y 0=1 1=1 5=0 6=1 8=102\n"
                 "Convolution d 1 1 y z 0=1 1=1 5=0 6=1 8=2\n", {
                     "c": [("weight", [127], "int8", True), ("weight_scales", [127.0], "raw", False),
                           ("bottom_scales", [100.0], "raw", False), ("top_scales", [20.0], "raw", False)],
                     "d": [("weight", [1], "int8", True), ("weight_scales", [1.0], "raw", False),
                           ("bottom_scales", [20.0], "raw", False)]})
    res = simulate(m, {"x": np.array([[[1.0, -9.0]]], np.float32)})
    # c: 1.0 -> code 100, acc 100*127 -> 1.0 -> *20 = 20; -9.0 -> code clamps to -127,
    # acc -127*127 -> -1.27 -> *20 = -25.4 -> -25
    assert res.int8["y"].codes.reshape(-1).tolist() == [20, -25]
    # d takes the codes as they are (no second quantize): acc / (20 * 1)
    assert res["z"].reshape(-1).tolist() == [1.0, -1.25]


def test_ceil_mode_pooling_permute_and_softmax() -> None:
    m = model_of("4 4\nInput in 0 1 x 0=4 1=3 2=2\nPooling p 1 1 x a 0=0 1=3 2=2 5=0\n"
                 "Permute t 1 1 a b 0=5\nSoftmax s 1 1 b c 0=0 1=1\n", {})
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    res = simulate(m, {"x": x})
    # pad_mode 0 ("full"): (4-3)%2=1 -> one tail column, so 2 outputs wide, 1 high
    assert res["a"].shape == (2, 1, 2)
    assert res["a"][0].tolist() == [[10.0, 11.0]]
    assert res["b"].shape == (2, 1, 2) and res["b"][:, 0, 0].tolist() == [10.0, 11.0]
    assert np.allclose(res["c"].sum(axis=0), 1.0)


def test_unknown_layer_type_is_a_clear_error() -> None:
    m = model_of("2 2\nInput in 0 1 x 0=2\nLRN l 1 1 x y\n", {})
    with pytest.raises(DeployerError, match="LRN, which the numpy simulation does not implement"):
        simulate(m, {"x": np.zeros(2, np.float32)})
