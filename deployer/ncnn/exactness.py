"""Which ncnn models can give bit-identical outputs on an ARM board and on the x86 host.

Why it matters: the fleet's health check demands bit-identity where the board runs the same ncnn
version as the host (a corrupted copy or a miscompiled runtime then cannot hide behind a tolerance).
That is only sound when every layer of the model does the same arithmetic on both: integer maths
(ncnn's int8 convolutions and inner products accumulate in int32) and float steps that are a single
IEEE operation per value. Layers that evaluate exp/tanh or sum in SIMD order do not: ncnn's NEON and
SSE/AVX kernels use different polynomial approximations and summation orders, so the last bit of
Swish, Sigmoid, Softmax, TanH, Mish, bilinear Interp or a global average differs - and after the
next int8 requantization a 1-ulp difference can flip a rounding and grow (YOLOv8n's raw box outputs
differ by up to 24 on an emulated Pi 4 while MobileNetV2's ReLU6 path stays bit-identical).

Measured with ncnn 1.0.20261020 on an emulated Cortex-A72 (aarch64 wheel) against the x86_64 host
(tests/integration/test_fleet_sim.py::test_layers_called_exact_are_bit_identical_on_the_emulated_pi
re-measures it on every CI run): identical for ReLU,
Clip, HardSwish, HardSigmoid, ELU, max and 2x2 average pooling; not identical for Swish, Sigmoid,
Softmax, TanH, Mish, global average pooling and bilinear Interp. Anything not known to be exact is
treated as inexact: the health check then uses its cosine gate for that model.
"""

from __future__ import annotations

from deployer.ncnn.param import Graph, Layer

# layers that only move, select or clamp values, or do one IEEE operation per value
EXACT_TYPES = frozenset({
    "Input", "MemoryData", "Split", "Concat", "Slice", "Flatten", "Reshape", "Permute", "Crop", "Padding",
    "Dropout", "Noop", "ReLU", "Clip", "PReLU", "HardSwish", "HardSigmoid", "ELU", "Quantize", "Dequantize",
    "Requantize", "ShuffleChannel", "PixelShuffle",
})
INT8_WHEN_SCALED = frozenset({"Convolution", "ConvolutionDepthWise", "InnerProduct"})  # param 8= int8 scales
EXACT_BINARY_OPS = frozenset({0, 1, 2, 4, 5})          # add, sub, mul, max, min (not div, pow, atan2...)


def inexact_layer(layer: Layer) -> str | None:
    """Why `layer` may round differently on ARM and x86 (its type, qualified), or None if it cannot."""
    t = layer.type
    if t in EXACT_TYPES:
        return None
    if t in INT8_WHEN_SCALED:
        if int(layer.get(9, 0)) in (4, 5):            # fused sigmoid / mish activation
            return f"{t} (fused {'sigmoid' if int(layer.get(9, 0)) == 4 else 'mish'})"
        return None if int(layer.get(8, 0)) else f"{t} (fp32: float accumulation order differs)"
    if t == "Pooling":
        avg = int(layer.get(0, 0)) == 1
        whole = int(layer.get(4, 0)) == 1 or int(layer.get(7, 0)) == 1   # global or adaptive
        return f"{t} (global average)" if avg and whole else None
    if t == "BinaryOp":
        return None if int(layer.get(0, 0)) in EXACT_BINARY_OPS else f"{t} (op {layer.get(0, 0)})"
    return t


def arch_exact(graph: Graph) -> tuple[bool, list[str]]:
    """(True, []) when the model's output can be bit-identical across ARM and x86 builds of the same
    ncnn, else (False, the distinct reasons in layer order)."""
    why: list[str] = []
    for layer in graph.layers:
        reason = inexact_layer(layer)
        if reason and reason not in why:
            why.append(reason)
    return not why, why
