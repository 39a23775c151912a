"""A conv's fused activation as bounds, and the activation shift read back from two .param files.

ncnn fuses an activation into Convolution / ConvolutionDepthWise (id 9: 1 ReLU, 3 Clip with id 10 =
[min, max]). deployer.quant.zeroshift rewrites ReLU / Clip(0, hi) into Clip(-c, hi - c) in the int8
model; comparing the two graphs tells by how much each such layer's output is shifted, which is all
`deployer check` needs to compare that output with fp32 (no side file to lose).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FLT32_MAX = float(np.finfo(np.float32).max)     # Clip's "no upper bound", for a plain ReLU


def relu_bounds(layer: Any) -> tuple[float, float] | None:
    """(0, upper) when the layer's fused activation is ReLU or Clip(0, upper), else None."""
    act = int(layer.get(9, 0))
    if act == 1:
        return 0.0, FLT32_MAX
    if act == 3:
        lo, hi = (float(v) for v in layer.get(10, [0.0, 0.0]))
        return (lo, hi) if lo == 0.0 and hi > 0.0 else None
    return None


def shift_offsets(fp32_graph: Any, int8_graph: Any) -> dict[str, float]:
    """{layer: c} for every layer whose output the int8 model carries shifted by -c: ReLU or
    Clip(0, hi) in fp32, Clip(-c, hi - c) in the int8 model."""
    names = {lay.name for lay in fp32_graph.layers}
    found = {}
    for layer in int8_graph.layers:
        if int(layer.get(9, 0)) != 3 or layer.name not in names:
            continue
        original = relu_bounds(fp32_graph.layer(layer.name))
        lo, hi = (float(v) for v in layer.get(10, [0.0, 0.0]))
        if original is None or lo >= 0.0:
            continue
        c = -lo
        expected = original[1] - c if original[1] < FLT32_MAX else FLT32_MAX
        if math.isclose(hi, expected, rel_tol=1e-6, abs_tol=1e-6):
            found[layer.name] = c
    return found
