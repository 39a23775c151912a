"""deployer.ncnn.exactness: which layers may compute other bits on ARM than on x86 (the rules; the
measurement behind them runs on an emulated Pi in tests/integration/test_fleet_sim.py)."""

from __future__ import annotations

from deployer.ncnn.exactness import arch_exact
from deployer.ncnn.param import parse_param


def _graph(*layers: str):
    body = "\n".join(layers)
    return parse_param(f"7767517\n{len(layers) + 1} {len(layers) + 1}\nInput in0 0 1 in0 0=8 1=8 2=3\n{body}\n")


def test_int8_convolutions_and_exact_activations_keep_bit_identity():
    ok, why = arch_exact(_graph("Convolution c 1 1 in0 a 0=4 1=3 6=108 8=2 9=1",
                                "ConvolutionDepthWise d 1 1 a b 0=4 1=3 6=36 7=4 8=2 9=3 -23310=2,0.000000e+00,6.000000e+00",
                                "Pooling p 1 1 b c 0=0 4=1", "InnerProduct f 1 1 c out 0=10 2=40 8=2"))
    assert ok and why == []


def test_float_maths_that_differs_between_neon_and_sse_is_named_once_each():
    ok, why = arch_exact(_graph("Convolution c 1 1 in0 a 0=4 1=3 6=108", "Swish s 1 1 a b", "Swish t 1 1 b c",
                                "Pooling p 1 1 c d 0=1 4=1", "BinaryOp q 1 1 d e 0=3 1=1 2=2.0",
                                "Convolution k 1 1 e out 0=4 1=1 6=16 8=2 9=4"))
    assert not ok
    assert why == ["Convolution (fp32: float accumulation order differs)", "Swish", "Pooling (global average)",
                   "BinaryOp (op 3)", "Convolution (fused sigmoid)"]


def test_an_unknown_layer_type_is_not_assumed_exact():
    assert arch_exact(_graph("SomethingNew x 1 1 in0 out")) == (False, ["SomethingNew"])
